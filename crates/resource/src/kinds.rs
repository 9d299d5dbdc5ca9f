//! What a lab names: the transports (each a part) and the services of a
//! part, as the domain has them, and the chaos actions. The spec and the
//! results both speak of them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use foodlab_domain::part::{Service, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ChaosAction {
    /// Scale the target to zero replicas for `duration`, then back.
    ScaleToZero,
    /// Kill the target's pods once, those `mode` picks (local: its processes,
    /// which are started again as a Deployment replaces a pod).
    PodKill,
    /// Add `delaySeconds` to the target's requests for `duration`.
    Delay,
    /// Fail `failRate` of the target's requests for `duration`.
    Fail,
}
