//! The bodies of the services' read endpoints, one type each: the handlers
//! answer with them and the lab (and the bench) read them, so the two sides
//! cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::order::{Order, OrderStatus};

/// Order's `GET /orders/cursor`: orders placed or changed later are after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub cursor: i64,
}

/// Order's `GET /orders?limit=&after=|changed_since=`: one page of orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPage {
    pub orders: Vec<Order>,
    /// Where the next page starts: `None` when a page by placement reached
    /// the last order; always given for changes (more may come).
    pub next: Option<i64>,
}

/// Order's `GET /orders/counts?since=`: the orders placed after the cursor,
/// by status (every status, 0 included), and the cursor now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCounts {
    #[serde(flatten)]
    pub by_status: BTreeMap<OrderStatus, u64>,
    pub cursor: i64,
}

/// Inventory's decisions, durable (they survive a restart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decisions {
    pub reserved_orders: u64,
    pub out_of_stock_orders: u64,
    pub unknown_item_orders: u64,
    #[serde(default)]
    pub rejected_orders: u64,
    #[serde(default)]
    pub units_reserved: u64,
}

impl Decisions {
    /// Orders decided either way.
    pub fn total(&self) -> u64 {
        self.reserved_orders
            + self.out_of_stock_orders
            + self.unknown_item_orders
            + self.rejected_orders
    }
}

/// Inventory's `GET /stats`: the decisions, and what its consumer did with
/// messages since it started; each count also under the seed labs' name.
/// A count left out reads as 0 (the decisions are what a lab needs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InventoryStats {
    #[serde(flatten)]
    pub decisions: Decisions,
    /// Orders decided, reserved or not (`processed_count`).
    pub processed: u64,
    /// Orders with their stock reserved (`reserved_count`).
    pub reserved: u64,
    /// Orders refused: out of stock, unknown item, injected failure (`failed_count`).
    pub failed: u64,
    /// Duplicate messages recognised and not reserved again, since start (`duplicate_count`).
    pub duplicates: u64,
    /// Poison and given-up messages sent to the dead-letter queue, since start (`dead_lettered_count`).
    pub dead_lettered: u64,
    /// Malformed order events skipped on Kafka, since start (`skipped_count`).
    pub skipped: u64,
    pub processed_count: u64,
    pub reserved_count: u64,
    pub failed_count: u64,
    pub duplicate_count: u64,
    pub dead_lettered_count: u64,
    pub skipped_count: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn counts_are_a_flat_object_of_every_status_and_the_cursor() {
        let counts = OrderCounts {
            by_status: OrderStatus::ALL.iter().map(|s| (*s, 1)).collect(),
            cursor: 9,
        };
        let value = serde_json::to_value(&counts).unwrap();
        assert_eq!(
            value,
            json!({"placed": 1, "reserved": 1, "failed": 1, "notified": 1, "timeout": 1, "cursor": 9})
        );
        assert_eq!(
            serde_json::from_value::<OrderCounts>(value).unwrap(),
            counts
        );
    }
}
