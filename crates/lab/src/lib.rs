//! The FoodLab scenario engine.
//!
//! A lab (`spec::FoodLab`) declares a transport, faults, a workload, chaos
//! steps and expectations. `engine::run_lab` runs it against any `Platform`:
//! `platform::local::LocalPlatform` (child processes on 127.0.0.1) here, the
//! Kubernetes platform in the operator.
//!
//! Modules import downward only: the resource types (`spec`, `results`,
//! `validated`) → `platform` (the trait, its local implementation, the
//! brokers) → `probe` (queues, lag, counters) → the steps (`observer`,
//! `claim`, `workload`, `disruption`, `chaos`, `faults`, `inject`, `measure`, `series`,
//! `verdict`) → `strategy` → `engine`.

pub mod chaos;
pub mod claim;
pub mod disruption;
pub mod engine;
pub mod faults;
pub mod inject;
pub mod measure;
pub mod observer;
pub mod platform;
pub mod probe;
pub mod series;
pub mod stats;
pub mod strategy;
pub mod validated;
pub mod verdict;
pub mod workload;

pub use foodlab_resource::{results, spec};

pub use engine::{LabError, LabReport, run_lab, run_lab_with};
pub use observer::{LabStep, Observer, Quiet};
pub use platform::local::{LocalOptions, LocalPlatform, Logs, Ports};
pub use platform::{Platform, PlatformError};
pub use spec::{FoodLab, FoodLabSpec, Service, Transport, Verdict};
