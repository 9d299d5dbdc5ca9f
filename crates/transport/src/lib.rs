//! How FoodLab services talk to each other.
//!
//! `http`: the pooled client of the synchronous part, with a timeout per call
//! and failures sorted into the classes callers map to 502/503/504.

pub mod http;

pub use http::{CallError, HttpClient};
