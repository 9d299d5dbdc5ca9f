//! The FoodLab scenario engine.
//!
//! A lab (`spec::FoodLab`) declares a transport, faults, a workload, chaos
//! steps and expectations. `engine::run_lab` runs it against any `Platform`:
//! `local::LocalPlatform` (child processes on 127.0.0.1) here, the Kubernetes
//! platform in the operator.

pub mod broker_script;
pub mod chaos;
pub mod claim;
pub mod engine;
pub mod faults;
pub mod inject;
pub mod kafka;
pub mod local;
pub mod measure;
pub mod observe;
pub mod platform;
pub mod rabbitmq;
pub mod series;
pub mod strategy;
pub mod validated;
pub mod verdict;
pub mod workload;

pub use foodlab_resource::{results, spec};

pub use engine::{LabError, LabReport, Observer, Quiet, run_lab, run_lab_with};
pub use local::{LocalOptions, LocalPlatform, Logs, Ports};
pub use platform::{Platform, PlatformError};
pub use spec::{FoodLab, FoodLabSpec, Service, Transport, Verdict};
