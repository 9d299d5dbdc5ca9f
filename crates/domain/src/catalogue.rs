//! Item names and the initial stock of the canteen.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A menu item, compared case-insensitively (stored lower-case, trimmed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ItemName(String);

impl ItemName {
    /// Normalises a raw name; `None` when nothing is left after trimming.
    pub fn parse(raw: &str) -> Option<Self> {
        let name = raw.trim().to_lowercase();
        (!name.is_empty()).then_some(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ItemName {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw).ok_or_else(|| "item name must not be empty".to_owned())
    }
}

impl From<ItemName> for String {
    fn from(name: ItemName) -> Self {
        name.0
    }
}

impl fmt::Display for ItemName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The items on sale and how many of each the kitchen starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    initial_stock: BTreeMap<ItemName, u64>,
}

/// Stock a fresh inventory starts with when nothing else is configured.
pub const DEFAULT_STOCK: [(&str, u64); 3] = [("burger", 100), ("pizza", 100), ("salad", 100)];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockSpecError {
    #[error("stock entry `{0}` is not of the form item=count")]
    NotAPair(String),
    #[error("stock entry `{0}` has an empty item name")]
    EmptyName(String),
    #[error("stock entry `{entry}` has a count that is not a whole number ≥ 0")]
    BadCount { entry: String },
}

impl Default for Catalogue {
    fn default() -> Self {
        let initial_stock = DEFAULT_STOCK
            .iter()
            .filter_map(|(name, count)| Some((ItemName::parse(name)?, *count)))
            .collect();
        Self { initial_stock }
    }
}

impl Catalogue {
    /// The default catalogue with the entries of a spec such as
    /// `burger=1000000,pizza=5` applied on top (new names add items).
    pub fn with_overrides(spec: &str) -> Result<Self, StockSpecError> {
        let mut catalogue = Self::default();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, count) = entry
                .split_once('=')
                .ok_or_else(|| StockSpecError::NotAPair(entry.to_owned()))?;
            let name =
                ItemName::parse(name).ok_or_else(|| StockSpecError::EmptyName(entry.to_owned()))?;
            let count = count
                .trim()
                .parse::<u64>()
                .map_err(|_| StockSpecError::BadCount {
                    entry: entry.to_owned(),
                })?;
            catalogue.initial_stock.insert(name, count);
        }
        Ok(catalogue)
    }

    pub fn initial_stock(&self) -> &BTreeMap<ItemName, u64> {
        &self.initial_stock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(c: &Catalogue, item: &str) -> Option<u64> {
        c.initial_stock()
            .get(&ItemName::parse(item).unwrap())
            .copied()
    }

    #[test]
    fn default_catalogue_has_a_hundred_of_each() {
        let c = Catalogue::default();
        assert_eq!(c.initial_stock().len(), 3);
        for item in ["burger", "pizza", "salad"] {
            assert_eq!(stock(&c, item), Some(100));
        }
    }

    #[test]
    fn overrides_replace_counts_and_add_items() {
        let c = Catalogue::with_overrides("Burger=1000000, pizza=5,taco=7").unwrap();
        assert_eq!(stock(&c, "burger"), Some(1_000_000));
        assert_eq!(stock(&c, "pizza"), Some(5));
        assert_eq!(stock(&c, "salad"), Some(100));
        assert_eq!(stock(&c, "taco"), Some(7));
    }

    #[test]
    fn malformed_overrides_are_rejected_with_the_entry() {
        assert_eq!(
            Catalogue::with_overrides("burger"),
            Err(StockSpecError::NotAPair("burger".into()))
        );
        assert_eq!(
            Catalogue::with_overrides("=3"),
            Err(StockSpecError::EmptyName("=3".into()))
        );
        assert_eq!(
            Catalogue::with_overrides("pizza=-1"),
            Err(StockSpecError::BadCount {
                entry: "pizza=-1".into()
            })
        );
    }

    #[test]
    fn item_names_are_case_insensitive() {
        assert_eq!(ItemName::parse(" BuRgEr "), ItemName::parse("burger"));
        assert_eq!(ItemName::parse("  "), None);
    }
}
