//! The contract between a FoodLab's workload Job, the operator and
//! `foodlab report`: the lab's run ConfigMap (`channel`: its name, keys and
//! what each side writes; the Job's `JobReport`) and the full report kept in
//! it (`full_report`: the gzip-compressed codec). The names of a lab's
//! objects (`names`) are shared by the ConfigMap and the Job.

pub mod channel;
pub mod full_report;
pub mod names;

pub use channel::JobReport;
