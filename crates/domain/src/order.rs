//! Orders and their life cycle.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalogue::ItemName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub Uuid);

impl OrderId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// The order id another producer sent: a UUID is taken as it is; any
    /// other non-empty id (`ORD-IDEM-1771363267`) maps to the same UUID every
    /// time, so its duplicates are recognised, also across restarts.
    pub fn from_wire(id: &str) -> Option<Self> {
        let id = id.trim();
        if id.is_empty() {
            return None;
        }
        Some(Self(Uuid::parse_str(id).unwrap_or_else(|_| {
            Uuid::new_v5(
                &Uuid::NAMESPACE_URL,
                format!("urn:foodlab:order:{id}").as_bytes(),
            )
        })))
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for OrderId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// One line of an order: so many of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub item: ItemName,
    pub quantity: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Accepted, stock not yet reserved.
    Placed,
    /// Stock reserved for every line.
    Reserved,
    /// Nothing reserved: out of stock, unknown item, or a dependency failed.
    Failed,
    /// Reserved and the customer was notified.
    Notified,
    /// A dependency did not answer in time; the outcome is unknown to the order service.
    Timeout,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        Self::Placed,
        Self::Reserved,
        Self::Failed,
        Self::Notified,
        Self::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Reserved => "reserved",
            Self::Failed => "failed",
            Self::Notified => "notified",
            Self::Timeout => "timeout",
        }
    }

    /// Whether stock is held for the order.
    pub fn is_reserved(self) -> bool {
        matches!(self, Self::Reserved | Self::Notified)
    }

    /// Whether the order has reached an end state (no further transition expected).
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Placed)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown order status `{0}`")]
pub struct UnknownStatus(pub String);

impl FromStr for OrderStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// An order as the order service keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: OrderId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    pub items: Vec<OrderLine>,
    pub status: OrderStatus,
    /// Why the order failed or timed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Order {
    /// A new order for a validated request, `placed` at `now_ms`.
    pub fn placed(request: &crate::OrderRequest, now_ms: i64) -> Self {
        Self {
            order_id: OrderId::new(),
            customer_id: request.customer_id.clone(),
            items: request.lines.clone(),
            status: OrderStatus::Placed,
            reason: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
        }
        assert!("cooking".parse::<OrderStatus>().is_err());
    }

    #[test]
    fn foreign_order_ids_map_to_one_uuid_each() {
        let id = OrderId::new();
        assert_eq!(OrderId::from_wire(&id.to_string()), Some(id));
        let seed = OrderId::from_wire("ORD-IDEM-1771363267").unwrap();
        assert_eq!(OrderId::from_wire(" ORD-IDEM-1771363267 "), Some(seed));
        assert_ne!(OrderId::from_wire("ORD-IDEM-1771363268"), Some(seed));
        assert_eq!(OrderId::from_wire("  "), None);
    }

    #[test]
    fn only_placed_is_not_terminal() {
        let open: Vec<_> = OrderStatus::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
        assert_eq!(open, vec![OrderStatus::Placed]);
    }
}
