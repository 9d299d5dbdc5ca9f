//! The reservation rule: all lines or nothing, never below zero.

use std::collections::BTreeMap;

use crate::catalogue::ItemName;
use crate::order::OrderLine;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservationError {
    #[error("unknown item `{0}`")]
    UnknownItem(ItemName),
    #[error("out of stock: {item} (requested {requested}, available {available})")]
    OutOfStock {
        item: ItemName,
        requested: u64,
        available: u64,
    },
}

/// Given the current stock of the items an order names, the new stock level of
/// each of those items if the whole order can be reserved.
///
/// Lines naming the same item are added up first, so an order of two lines of
/// 3 burgers needs 6 burgers.
pub fn plan_reservation(
    stock: &BTreeMap<ItemName, u64>,
    lines: &[OrderLine],
) -> Result<BTreeMap<ItemName, u64>, ReservationError> {
    let mut requested: BTreeMap<&ItemName, u64> = BTreeMap::new();
    for line in lines {
        *requested.entry(&line.item).or_default() += u64::from(line.quantity);
    }
    requested
        .into_iter()
        .map(|(item, requested)| {
            let available = *stock
                .get(item)
                .ok_or_else(|| ReservationError::UnknownItem(item.clone()))?;
            let left =
                available
                    .checked_sub(requested)
                    .ok_or_else(|| ReservationError::OutOfStock {
                        item: item.clone(),
                        requested,
                        available,
                    })?;
            Ok((item.clone(), left))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ItemName {
        ItemName::parse(s).unwrap()
    }

    fn line(item: &str, quantity: u32) -> OrderLine {
        OrderLine {
            item: name(item),
            quantity,
        }
    }

    fn stock(entries: &[(&str, u64)]) -> BTreeMap<ItemName, u64> {
        entries.iter().map(|(n, c)| (name(n), *c)).collect()
    }

    #[test]
    fn reservation_table() {
        let s = stock(&[("burger", 5), ("pizza", 1)]);
        type Case = (
            Vec<OrderLine>,
            Result<BTreeMap<ItemName, u64>, ReservationError>,
        );
        let cases: Vec<Case> = vec![
            (vec![line("burger", 2)], Ok(stock(&[("burger", 3)]))),
            (vec![line("burger", 5)], Ok(stock(&[("burger", 0)]))),
            (
                vec![line("burger", 2), line("pizza", 1)],
                Ok(stock(&[("burger", 3), ("pizza", 0)])),
            ),
            (
                vec![line("burger", 3), line("burger", 3)],
                Err(ReservationError::OutOfStock {
                    item: name("burger"),
                    requested: 6,
                    available: 5,
                }),
            ),
            (
                vec![line("burger", 1), line("pizza", 2)],
                Err(ReservationError::OutOfStock {
                    item: name("pizza"),
                    requested: 2,
                    available: 1,
                }),
            ),
            (
                vec![line("burger", 1), line("sushi", 1)],
                Err(ReservationError::UnknownItem(name("sushi"))),
            ),
        ];
        for (lines, expected) in cases {
            assert_eq!(plan_reservation(&s, &lines), expected, "{lines:?}");
        }
    }
}
