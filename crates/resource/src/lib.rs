//! The FoodLab resource (`spec::FoodLab`): what a lab declares (transport,
//! faults, workload, chaos, expectations, settings), its status, and the
//! results a run reports. Plain types only: the engine that runs a lab and
//! the platforms it runs on are in `foodlab-lab`, which re-exports these.

pub mod kinds;
pub mod results;
pub mod spec;

pub use spec::{FoodLab, FoodLabSpec, Service, Transport, Verdict};
