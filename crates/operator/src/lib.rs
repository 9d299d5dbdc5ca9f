//! The FoodLab operator: reconciles `FoodLab` resources on Kubernetes.
//!
//! - `controller`: the reconcile loop (finalizer, faults, chaos, workload Job, status)
//! - `chaos_plan`: what chaos should look like now, a pure function of spec, status and clock
//! - `platform`: the Kubernetes `Platform` (Deployment scale subresource, Service DNS)
//! - `job`: the workload Job and its identity (ServiceAccount, Role, binding)
//! - `lab_job`: the workload itself, what the Job runs
//! - `claim`: one lab at a time per namespace (the Lease)
//! - `admin_tokens`: each namespace's admin token
//! - `rbac`: every API verb the operator uses (the chart grants exactly these)
//!
//! The run ConfigMap the Job and the operator talk through, and the report
//! kept in it, are `foodlab-run-channel`'s (the CLI reads them too).

pub mod admin_tokens;
pub mod chaos_plan;
pub mod claim;
pub mod controller;
pub mod job;
pub mod lab_job;
pub mod metrics;
pub mod platform;
pub mod rbac;
