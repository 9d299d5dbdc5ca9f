//! Turning a client's JSON into a valid order request.
//!
//! Clients send the shapes the seed labs used: `{"item":"burger","quantity":2}`,
//! with `qty` for `quantity`, `item_id`/`itemId`/`sku` for `item`, a list under
//! `items`, and `user_id`/`student_id`/`studentId`/`customer_id` for the customer.

use serde_json::{Map, Value};

use crate::catalogue::ItemName;
use crate::order::OrderLine;

const ITEM_KEYS: [&str; 4] = ["item", "item_id", "itemId", "sku"];
const QUANTITY_KEYS: [&str; 2] = ["quantity", "qty"];
const CUSTOMER_KEYS: [&str; 5] = [
    "customer_id",
    "user_id",
    "student_id",
    "studentId",
    "customerId",
];

/// The most of one item a single line may ask for.
pub const MAX_QUANTITY: u32 = 10_000;
/// The most lines a single order may have.
pub const MAX_LINES: usize = 100;

/// A validated order request: at least one line, every quantity positive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub customer_id: Option<String>,
    pub lines: Vec<OrderLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("the order must be a JSON object")]
    NotAnObject,
    #[error("{at}: `item` is missing (also accepted: item_id, itemId, sku)")]
    MissingItem { at: String },
    #[error("{at}: `item` must be a non-empty string")]
    InvalidItem { at: String },
    #[error("{at}: `quantity` must be a whole number")]
    QuantityNotAnInteger { at: String },
    #[error("{at}: `quantity` must be at least 1, got {got}")]
    QuantityNotPositive { at: String, got: i64 },
    #[error("{at}: `quantity` must be at most {MAX_QUANTITY}, got {got}")]
    QuantityTooLarge { at: String, got: i64 },
    #[error("`items` must be a list of {{item, quantity}} objects")]
    ItemsNotAList,
    #[error("`items` must not be empty")]
    NoItems,
    #[error("an order may have at most {MAX_LINES} lines, got {0}")]
    TooManyLines(usize),
    #[error("the customer id must be a string or a number")]
    InvalidCustomer,
}

impl OrderRequest {
    pub fn from_json(value: &Value) -> Result<Self, ValidationError> {
        let object = value.as_object().ok_or(ValidationError::NotAnObject)?;
        let customer_id = customer_id(object)?;
        let lines = match object.get("items") {
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    return Err(ValidationError::NoItems);
                }
                if items.len() > MAX_LINES {
                    return Err(ValidationError::TooManyLines(items.len()));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let at = format!("items[{i}]");
                        let line = item.as_object().ok_or(ValidationError::ItemsNotAList)?;
                        parse_line(line, at)
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            Some(_) => return Err(ValidationError::ItemsNotAList),
            None => vec![parse_line(object, "order".to_owned())?],
        };
        Ok(Self { customer_id, lines })
    }
}

fn first<'a>(object: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter()
        .find_map(|key| object.get(*key))
        .filter(|v| !v.is_null())
}

fn customer_id(object: &Map<String, Value>) -> Result<Option<String>, ValidationError> {
    match first(object, &CUSTOMER_KEYS) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ValidationError::InvalidCustomer),
    }
}

fn parse_line(object: &Map<String, Value>, at: String) -> Result<OrderLine, ValidationError> {
    let item = match first(object, &ITEM_KEYS) {
        None => return Err(ValidationError::MissingItem { at }),
        Some(Value::String(s)) => ItemName::parse(s),
        Some(_) => None,
    };
    let Some(item) = item else {
        return Err(ValidationError::InvalidItem { at });
    };
    let quantity = match first(object, &QUANTITY_KEYS) {
        // An order line without a quantity is for one item.
        None => 1,
        Some(value) => {
            let got = value
                .as_i64()
                .ok_or_else(|| ValidationError::QuantityNotAnInteger { at: at.clone() })?;
            if got < 1 {
                return Err(ValidationError::QuantityNotPositive { at, got });
            }
            u32::try_from(got)
                .ok()
                .filter(|q| *q <= MAX_QUANTITY)
                .ok_or(ValidationError::QuantityTooLarge { at, got })?
        }
    };
    Ok(OrderLine { item, quantity })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn line(item: &str, quantity: u32) -> OrderLine {
        OrderLine {
            item: ItemName::parse(item).unwrap(),
            quantity,
        }
    }

    #[test]
    fn accepts_every_field_variant_the_seeds_use() {
        let cases = [
            (
                json!({"item": "burger", "quantity": 2}),
                None,
                vec![line("burger", 2)],
            ),
            (
                json!({"item_id": "Pizza", "qty": 3}),
                None,
                vec![line("pizza", 3)],
            ),
            (
                json!({"itemId": "SALAD", "quantity": 1, "studentId": "s9"}),
                Some("s9"),
                vec![line("salad", 1)],
            ),
            (
                json!({"sku": "burger", "user_id": 42}),
                Some("42"),
                vec![line("burger", 1)],
            ),
            (
                json!({"student_id": "s1", "items": [{"sku": "burger", "qty": 1}, {"item": "pizza", "quantity": 2}]}),
                Some("s1"),
                vec![line("burger", 1), line("pizza", 2)],
            ),
        ];
        for (body, customer, lines) in cases {
            let request = OrderRequest::from_json(&body).unwrap();
            assert_eq!(request.customer_id.as_deref(), customer, "{body}");
            assert_eq!(request.lines, lines, "{body}");
        }
    }

    #[test]
    fn rejects_invalid_fields_with_a_reason() {
        let cases = [
            (json!([1, 2]), ValidationError::NotAnObject),
            (
                json!({"quantity": 2}),
                ValidationError::MissingItem { at: "order".into() },
            ),
            (
                json!({"item": "  "}),
                ValidationError::InvalidItem { at: "order".into() },
            ),
            (
                json!({"item": 7}),
                ValidationError::InvalidItem { at: "order".into() },
            ),
            (
                json!({"item": "burger", "quantity": 0}),
                ValidationError::QuantityNotPositive {
                    at: "order".into(),
                    got: 0,
                },
            ),
            (
                json!({"item": "burger", "qty": -4}),
                ValidationError::QuantityNotPositive {
                    at: "order".into(),
                    got: -4,
                },
            ),
            (
                json!({"item": "burger", "quantity": 1.5}),
                ValidationError::QuantityNotAnInteger { at: "order".into() },
            ),
            (
                json!({"item": "burger", "quantity": "2"}),
                ValidationError::QuantityNotAnInteger { at: "order".into() },
            ),
            (
                json!({"item": "burger", "quantity": 10_001}),
                ValidationError::QuantityTooLarge {
                    at: "order".into(),
                    got: 10_001,
                },
            ),
            (json!({"items": []}), ValidationError::NoItems),
            (
                json!({"items": {"item": "burger"}}),
                ValidationError::ItemsNotAList,
            ),
            (
                json!({"items": [{"item": "burger"}, {"qty": 1}]}),
                ValidationError::MissingItem {
                    at: "items[1]".into(),
                },
            ),
            (
                json!({"item": "burger", "user_id": ["x"]}),
                ValidationError::InvalidCustomer,
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(OrderRequest::from_json(&body), Err(expected), "{body}");
        }
    }

    #[test]
    fn too_many_lines_are_rejected() {
        let items: Vec<_> = (0..=MAX_LINES).map(|_| json!({"item": "burger"})).collect();
        assert_eq!(
            OrderRequest::from_json(&json!({ "items": items })),
            Err(ValidationError::TooManyLines(MAX_LINES + 1))
        );
    }
}
