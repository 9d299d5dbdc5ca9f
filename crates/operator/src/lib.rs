//! The FoodLab operator: reconciles `FoodLab` resources on Kubernetes.
//!
//! - `controller`: the reconcile loop (finalizer, faults, chaos, workload Job, status)
//! - `chaos_plan`: what chaos should look like now, a pure function of spec, status and clock
//! - `platform`: the Kubernetes `Platform` (Deployment scale subresource, Service DNS)
//! - `job`: the workload Job and the report it hands back
//! - `lab_report`: the full report kept in the run ConfigMap (`foodlab report NAME`)
//! - `rbac`: every API verb the operator uses (the chart grants exactly these)

pub mod admin_tokens;
pub mod chaos_plan;
pub mod claim;
pub mod controller;
pub mod job;
pub mod lab_job;
pub mod lab_report;
pub mod metrics;
pub mod platform;
pub mod rbac;
pub mod run_channel;
