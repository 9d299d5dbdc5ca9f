//! The `FoodLab` resource: one lab run, declared as data.
//!
//! The same YAML runs on the local platform (`foodlab run FILE`) and on
//! Kubernetes, where the operator reconciles it as a custom resource.

use std::fmt;
use std::time::Duration;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::kinds::{Broker, ChaosAction, ChaosTarget, Service, Target, Transport};
use crate::results::{ChaosRecord, LabResults, ReplicasRecord};

#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "foodlab.dev",
    version = "v1alpha1",
    kind = "FoodLab",
    plural = "foodlabs",
    shortname = "fl",
    namespaced,
    status = "FoodLabStatus",
    printcolumn = r#"{"name":"Transport","type":"string","jsonPath":".spec.transport"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Verdict","type":"string","jsonPath":".status.verdict"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct FoodLabSpec {
    /// Which part of the lab runs the workflow.
    pub transport: Transport,
    /// Faults each service injects for the whole run.
    #[serde(default)]
    pub faults: ServiceFaults,
    /// The orders the lab places.
    pub workload: Workload,
    /// Messages published straight to the broker during the run, bypassing
    /// the order API (async-rabbitmq).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject: Option<Inject>,
    /// Disruptions during the run, each undone when its duration is over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chaos: Vec<ChaosStep>,
    /// What must hold for the verdict to be Pass.
    #[serde(default)]
    pub expect: Expectations,
    /// Service settings the lab starts the part with.
    #[serde(default)]
    pub settings: Settings,
    /// After the run, rewind analytics to the earliest offsets and read the
    /// log again (streaming-kafka); see `expect.replayIdentical`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// Replicas of each service for the run (e.g. `inventory: 3`); more
    /// than one needs the part's state in PostgreSQL (`--database-url`).
    #[serde(default, skip_serializing_if = "Replicas::is_empty")]
    pub replicas: Replicas,
    /// The shape of the part's broker the lab runs on (async-rabbitmq,
    /// streaming-kafka). Locally the lab starts that broker; on a cluster
    /// the part must have been installed with it (`kafka.nodes`,
    /// `rabbitmq.nodes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerShape>,
}

/// How many nodes the part's broker runs: 1 (the default), or 3 (Kafka
/// topics replicated three times with `min.insync.replicas=2`; RabbitMQ
/// quorum queues).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerShape {
    #[schemars(range(min = 1, max = 3))]
    pub nodes: u32,
}

impl BrokerShape {
    /// The node counts the project's brokers come in.
    pub const NODES: [u32; 2] = [1, 3];
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceFaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<FaultSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<FaultSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<FaultSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics: Option<FaultSpec>,
}

impl ServiceFaults {
    pub fn get(&self, service: Service) -> Option<&FaultSpec> {
        match service {
            Service::Order => self.order.as_ref(),
            Service::Inventory => self.inventory.as_ref(),
            Service::Notification => self.notification.as_ref(),
            Service::Analytics => self.analytics.as_ref(),
        }
    }

    /// The services with a declared fault, in a stable order.
    pub fn declared(&self) -> impl Iterator<Item = (Service, &FaultSpec)> {
        Service::ALL
            .into_iter()
            .filter_map(|service| self.get(service).map(|spec| (service, spec)))
    }
}

/// How many replicas (pods; processes locally) of each service the part
/// runs; a service not named keeps its own count (1 locally).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replicas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub order: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub inventory: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub notification: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub analytics: Option<u32>,
}

impl Replicas {
    /// The most replicas of one service a lab or `foodlab up` may ask for.
    pub const MAX: u32 = 16;

    pub fn get(&self, service: Service) -> Option<u32> {
        match service {
            Service::Order => self.order,
            Service::Inventory => self.inventory,
            Service::Notification => self.notification,
            Service::Analytics => self.analytics,
        }
    }

    fn slot(&mut self, service: Service) -> &mut Option<u32> {
        match service {
            Service::Order => &mut self.order,
            Service::Inventory => &mut self.inventory,
            Service::Notification => &mut self.notification,
            Service::Analytics => &mut self.analytics,
        }
    }

    /// The services with a declared count, in a stable order.
    pub fn declared(&self) -> impl Iterator<Item = (Service, u32)> + '_ {
        Service::ALL
            .into_iter()
            .filter_map(|service| self.get(service).map(|n| (service, n)))
    }

    pub fn is_empty(&self) -> bool {
        self.declared().next().is_none()
    }

    /// Whether any service runs more than one replica.
    pub fn scaled_out(&self) -> bool {
        self.declared().any(|(_, n)| n > 1)
    }

    /// What a part cannot run at this shape: a service it does not have, or
    /// a count out of range. Where the state is kept is the platform's to
    /// check.
    pub fn problems(&self, transport: Transport) -> Vec<String> {
        let mut problems = Vec::new();
        for (service, n) in self.declared() {
            if !transport.services().contains(&service) {
                problems.push(format!(
                    "replicas.{service}: the {} part has no {service} service",
                    transport.part()
                ));
            } else if !(1..=Self::MAX).contains(&n) {
                problems.push(format!("replicas.{service} must be 1 to {}", Self::MAX));
            }
        }
        problems
    }

    /// `inventory=3,order=2`, as `foodlab up --replicas` takes it.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut replicas = Self::default();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, count) = entry
                .split_once('=')
                .ok_or_else(|| format!("`{entry}`: expected service=count, e.g. inventory=3"))?;
            let service = Service::of_name(name.trim()).ok_or_else(|| {
                format!("`{name}`: no such service (order, inventory, notification, analytics)")
            })?;
            let count: u32 = count
                .trim()
                .parse()
                .map_err(|_| format!("`{entry}`: the count must be a whole number"))?;
            if !(1..=Self::MAX).contains(&count) {
                return Err(format!("`{entry}`: the count must be 1 to {}", Self::MAX));
            }
            *replicas.slot(service) = Some(count);
        }
        Ok(replicas)
    }
}

impl fmt::Display for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self
            .declared()
            .map(|(service, n)| format!("{service}={n}"))
            .collect();
        f.write_str(&shown.join(","))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultSpec {
    /// Seconds added to each business request.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 3600.0))]
    pub delay_seconds: f64,
    /// Fraction of business requests that fail.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub fail_rate: f64,
    /// Status code of the injected failures (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 400, max = 599))]
    pub fail_status: Option<u16>,
}

impl FaultSpec {
    pub fn to_faults(&self) -> Result<foodlab_domain::Faults, foodlab_domain::FaultError> {
        let faults = foodlab_domain::Faults {
            delay_ms: foodlab_domain::Faults::delay_ms_from_seconds(self.delay_seconds)?,
            fail_rate: self.fail_rate,
            fail_status: self
                .fail_status
                .unwrap_or(foodlab_domain::fault::DEFAULT_FAIL_STATUS),
        };
        faults.validate()?;
        Ok(faults)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// How many orders to place.
    #[schemars(range(min = 1, max = 1000000))]
    pub orders: u32,
    /// Place orders at this steady rate (open loop). Without it, orders go
    /// out as fast as `concurrency` allows (closed loop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001))]
    pub rate_per_second: Option<f64>,
    /// Orders in flight at once (closed loop); default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub concurrency: Option<u32>,
    /// Items ordered, in turn; default burger.
    #[serde(default = "default_items")]
    #[schemars(length(min = 1))]
    pub items: Vec<String>,
    /// Quantity per order; default 1.
    #[serde(default = "default_quantity")]
    #[schemars(range(min = 1, max = 10000))]
    pub quantity: u32,
}

fn default_items() -> Vec<String> {
    vec!["burger".to_owned()]
}

fn default_quantity() -> u32 {
    1
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Inject {
    /// OrderPlaced events for new orders, each published `copies` times with
    /// the same order_id and message_id (a producer that retried).
    #[serde(default)]
    pub duplicate_orders: u32,
    /// How many times each duplicated order is published (default 3).
    #[serde(default = "default_copies")]
    #[schemars(range(min = 1, max = 100))]
    pub copies: u32,
    /// Malformed messages on the OrderPlaced routing key: not JSON, missing
    /// fields, invalid quantities, unknown event types.
    #[serde(default)]
    pub poison_messages: u32,
}

fn default_copies() -> u32 {
    3
}

/// One disruption: what, to which service, when, and for how long.
// Admission checks (CEL) that every disruption but a pod kill lasts a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new(
    "self.action == 'PodKill' || (has(self.duration) && duration(self.duration) > duration('0s'))"
).message("ScaleToZero, Delay and Fail need a duration greater than zero, such as 60s"))]
#[serde(rename_all = "camelCase")]
pub struct ChaosStep {
    pub action: ChaosAction,
    /// A service of the part, or its broker (`kafka`, `rabbitmq`: PodKill only).
    pub target: ChaosTarget,
    /// When to start, counted from the start of the workload (e.g. `5s`).
    #[serde(with = "humantime_serde", default)]
    #[schemars(with = "String")]
    pub after: Duration,
    /// How long the disruption lasts (e.g. `60s`); not used by PodKill.
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub duration: Option<Duration>,
    /// Delay during a Delay window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 3600.0))]
    pub delay_seconds: Option<f64>,
    /// Failure rate during a Fail window (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub fail_rate: Option<f64>,
    /// Which of the target's pods a PodKill kills (default `all`), as Chaos
    /// Mesh selects them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PodMode>,
    /// The number (`fixed`) or percentage (`fixed-percent`,
    /// `random-max-percent`) that `mode` takes, e.g. `"2"` or `"50"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Seconds a killed pod is given to stop (default 0: SIGKILL at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub grace_period: Option<u64>,
}

impl ChaosStep {
    /// The pods a PodKill picks, `mode` and `value` read together; what the
    /// other actions must not be given.
    pub fn pod_selection(&self) -> Result<PodSelection, String> {
        if self.action != ChaosAction::PodKill {
            let given = [
                ("mode", self.mode.is_some()),
                ("value", self.value.is_some()),
                ("gracePeriod", self.grace_period.is_some()),
            ];
            return match given.iter().find(|(_, set)| *set) {
                Some((field, _)) => Err(format!("{field} is for PodKill, not {:?}", self.action)),
                None => Ok(PodSelection::All),
            };
        }
        let mode = self.mode.unwrap_or(PodMode::All);
        let value = || -> Result<u32, String> {
            let value = self
                .value
                .as_deref()
                .ok_or_else(|| format!("mode {mode} needs a value"))?;
            value
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("value {value:?} of mode {mode} is not a whole number"))
        };
        let percent = || -> Result<u32, String> {
            let p = value()?;
            if (1..=100).contains(&p) {
                Ok(p)
            } else {
                Err(format!(
                    "value of mode {mode} is a percentage, 1 to 100, not {p}"
                ))
            }
        };
        let selection = match mode {
            PodMode::One => PodSelection::One,
            PodMode::All => PodSelection::All,
            PodMode::Fixed => match value()? {
                0 => return Err("mode fixed needs a value of at least 1".into()),
                n => PodSelection::Fixed(n),
            },
            PodMode::FixedPercent => PodSelection::FixedPercent(percent()?),
            PodMode::RandomMaxPercent => PodSelection::RandomMaxPercent(percent()?),
        };
        if self.value.is_some() && matches!(mode, PodMode::One | PodMode::All) {
            return Err(format!("mode {mode} takes no value"));
        }
        Ok(selection)
    }
}

impl fmt::Display for PodMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::One => "one",
            Self::All => "all",
            Self::Fixed => "fixed",
            Self::FixedPercent => "fixed-percent",
            Self::RandomMaxPercent => "random-max-percent",
        })
    }
}

/// A PodKill's `mode` with its `value`, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodSelection {
    One,
    All,
    Fixed(u32),
    FixedPercent(u32),
    RandomMaxPercent(u32),
}

impl PodSelection {
    /// How many of `pods` to kill; `up_to(max)` draws a number in `0..=max`
    /// (random-max-percent's draw).
    pub fn count(&self, pods: usize, up_to: impl FnOnce(usize) -> usize) -> usize {
        let share = |percent: u32| pods * percent as usize / 100;
        match *self {
            Self::One => pods.min(1),
            Self::All => pods,
            Self::Fixed(n) => pods.min(n as usize),
            Self::FixedPercent(p) => share(p).max(pods.min(1)),
            Self::RandomMaxPercent(p) => up_to(share(p)).min(share(p)),
        }
    }
}

/// Which pods of a target a PodKill picks, Chaos Mesh's modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PodMode {
    /// One pod, chosen at random.
    One,
    /// Every pod.
    All,
    /// `value` pods, chosen at random (all if there are fewer).
    Fixed,
    /// `value` percent of the pods (rounded down, at least one), at random.
    FixedPercent,
    /// At random, up to `value` percent of the pods (possibly none).
    RandomMaxPercent,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Expectations {
    /// Every order reaches a final status (reserved, notified, failed, timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_orders_terminal: Option<bool>,
    /// How long the lab may take, workload and settling included (e.g. `180s`).
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub within: Option<Duration>,
    /// Every order accepted by the API ends reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_orders_reserved: Option<bool>,
    /// Inventory made exactly this many reservations during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<u64>,
    /// Exactly this many messages were dead-lettered during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered: Option<u64>,
    /// Every `POST /order` answers with this status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub response_status: Option<u16>,
    /// Bounds on the latency of `POST /order`, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<LatencyBounds>,
    /// Inventory decided, and analytics counted, every accepted order: one
    /// order event and one inventory result each (streaming-kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_event_counted: Option<bool>,
    /// Consumer lag reached at least this many messages during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_at_least: Option<u64>,
    /// Consumer lag was back to 0 at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_drained: Option<bool>,
    /// Analytics' totals after the replay equal those before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_identical: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyBounds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_at_least: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_at_most: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_at_most: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// How long order waits for inventory and notification (sync-rest; default 5s).
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub dependency_timeout: Option<Duration>,
    /// Initial stock overrides, e.g. `burger=1000000,pizza=5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    Pending,
    // Waiting for another lab on the same part (namespace) to end.
    Queued,
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Verdict {
    Pass,
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "Pass",
            Self::Fail => "Fail",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FoodLabStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the lab claimed its part and began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub started_at: Option<jiff::Timestamp>,
    /// When the workload placed its first order: chaos steps count their
    /// `after` from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub workload_started_at: Option<jiff::Timestamp>,
    /// The Job running the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_job: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chaos: Vec<ChaosRecord>,
    /// The services `spec.replicas` scaled for the lab, and what to put back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicasRecord>,
    /// On how many ready pods of each service the lab's faults (none, for a
    /// service it declares none for) were last put in place.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub faults_in_place: std::collections::BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<LabResults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

impl FoodLabStatus {
    /// Whether anything the lab changed on its part (a chaos step's
    /// disruption, a service's replicas) is still to be undone: while it is,
    /// the lab holds the part, whatever phase it has reached.
    pub fn in_place(&self) -> bool {
        self.chaos.iter().any(|r| r.restored_at.is_none())
            || self.replicas.iter().any(|r| r.restored_at.is_none())
    }
}

impl FoodLabSpec {
    /// How many nodes the part's broker runs for this lab (1 unless `broker` says).
    pub fn broker_nodes(&self) -> u32 {
        self.broker.map_or(1, |shape| shape.nodes)
    }

    /// Checks what the schema cannot express. Returns every problem found.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.workload.orders == 0 {
            problems.push("workload.orders must be at least 1".to_owned());
        }
        if let Some(rate) = self.workload.rate_per_second
            && !(rate.is_finite() && rate > 0.0)
        {
            problems.push(format!("workload.ratePerSecond must be > 0, got {rate}"));
        }
        if self.workload.concurrency == Some(0) {
            problems.push("workload.concurrency must be at least 1".to_owned());
        }
        if self.workload.items.is_empty() {
            problems.push("workload.items must name at least one item".to_owned());
        }
        for (service, fault) in self.faults.declared() {
            if let Err(e) = fault.to_faults() {
                problems.push(format!("faults.{service}: {e}"));
            }
        }
        for (i, step) in self.chaos.iter().enumerate() {
            let needs_duration = step.action != ChaosAction::PodKill;
            match step.duration {
                Some(d) if d.is_zero() => problems.push(format!("chaos[{i}].duration must be > 0")),
                None if needs_duration => {
                    problems.push(format!("chaos[{i}]: {:?} needs a duration", step.action))
                }
                _ => {}
            }
            if step.fail_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                problems.push(format!("chaos[{i}].failRate must be between 0 and 1"));
            }
            if let Err(problem) = step.pod_selection() {
                problems.push(format!("chaos[{i}]: {problem}"));
            }
            if let Some(broker) = step.target.broker() {
                if self.transport.broker() != Some(broker) {
                    problems.push(format!(
                        "chaos[{i}]: {broker} is not the broker of {}",
                        self.transport.part()
                    ));
                } else if step.action != ChaosAction::PodKill {
                    problems.push(format!(
                        "chaos[{i}]: a broker's nodes are killed (PodKill), not {:?}",
                        step.action
                    ));
                }
            }
        }
        if self.transport != Transport::Kafka {
            let streaming_only = [
                ("replay", self.replay),
                (
                    "expect.everyEventCounted",
                    self.expect.every_event_counted.is_some(),
                ),
                (
                    "expect.maxLagAtLeast",
                    self.expect.max_lag_at_least.is_some(),
                ),
                ("expect.lagDrained", self.expect.lag_drained.is_some()),
                (
                    "expect.replayIdentical",
                    self.expect.replay_identical.is_some(),
                ),
            ];
            for (field, set) in streaming_only {
                if set {
                    problems.push(format!(
                        "{field} is for the streaming-kafka part (transport: kafka)"
                    ));
                }
            }
        }
        problems.extend(self.replicas.problems(self.transport));
        if let Some(shape) = self.broker {
            if self.transport.broker().is_none() {
                problems.push(format!(
                    "broker: the {} part has no broker",
                    self.transport.part()
                ));
            } else if !BrokerShape::NODES.contains(&shape.nodes) {
                problems.push(format!("broker.nodes is 1 or 3, not {}", shape.nodes));
            }
        }
        if self.expect.replay_identical.is_some() && !self.replay {
            problems.push("expect.replayIdentical needs `replay: true`".to_owned());
        }
        // Two disruptions of one service at once would each remember the
        // other's state as the one to restore.
        let window =
            |step: &ChaosStep| (step.after, step.after + step.duration.unwrap_or_default());
        for (i, a) in self.chaos.iter().enumerate() {
            for (j, b) in self.chaos.iter().enumerate().skip(i + 1) {
                let ((a_start, a_end), (b_start, b_end)) = (window(a), window(b));
                if a.target == b.target && a_start <= b_end && b_start <= a_end {
                    problems.push(format!(
                        "chaos[{i}] and chaos[{j}] both disrupt {} at the same time",
                        a.target
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_parse_and_show_as_foodlab_up_takes_them() {
        let replicas = Replicas::parse(" inventory=3, order=2 ").unwrap();
        assert_eq!(replicas.get(Service::Inventory), Some(3));
        assert_eq!(replicas.get(Service::Order), Some(2));
        assert_eq!(replicas.get(Service::Notification), None);
        assert!(replicas.scaled_out());
        assert_eq!(replicas.to_string(), "order=2,inventory=3");
        assert_eq!(Replicas::parse("").unwrap(), Replicas::default());
        for bad in [
            "inventory",
            "kitchen=2",
            "inventory=0",
            "inventory=17",
            "order=two",
        ] {
            assert!(Replicas::parse(bad).is_err(), "{bad}");
        }
    }

    fn lab(chaos: &str) -> FoodLabSpec {
        serde_json::from_str(&format!(
            r#"{{"transport": "rabbitmq", "workload": {{"orders": 5}}, "chaos": {chaos}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn streaming_fields_need_the_streaming_part() {
        let spec = |transport: &str, rest: &str| -> FoodLabSpec {
            serde_json::from_str(&format!(
                r#"{{"transport": "{transport}", "workload": {{"orders": 5}}{rest}}}"#
            ))
            .unwrap()
        };
        let problems = spec(
            "rabbitmq",
            r#", "replay": true, "expect": {"lagDrained": true, "replayIdentical": true}"#,
        )
        .validate()
        .unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("replay is for the streaming-kafka part"));
        let no_replay = spec("kafka", r#", "expect": {"replayIdentical": true}"#)
            .validate()
            .unwrap_err();
        assert_eq!(no_replay, ["expect.replayIdentical needs `replay: true`"]);
        assert!(
            spec(
                "kafka",
                r#", "replay": true, "expect": {"replayIdentical": true}"#
            )
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn a_broker_is_a_pod_kill_target_of_its_own_part_only() {
        let ok = lab(r#"[{"action": "PodKill", "target": "rabbitmq", "mode": "one"}]"#);
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.chaos[0].target.broker(), Some(Broker::Rabbitmq));
        let problems = lab(r#"[
            {"action": "ScaleToZero", "target": "rabbitmq", "duration": "5s"},
            {"action": "PodKill", "target": "kafka", "after": "30s"}
        ]"#)
        .validate()
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "chaos[0]: a broker's nodes are killed (PodKill), not ScaleToZero",
                "chaos[1]: kafka is not the broker of async-rabbitmq",
            ]
        );
    }

    #[test]
    fn a_broker_shape_is_one_or_three_nodes_of_a_part_with_a_broker() {
        let shaped = |transport: &str, nodes: u32| -> FoodLabSpec {
            serde_json::from_str(&format!(
                r#"{{"transport": "{transport}", "workload": {{"orders": 5}}, "broker": {{"nodes": {nodes}}}}}"#
            ))
            .unwrap()
        };
        assert_eq!(shaped("kafka", 3).validate(), Ok(()));
        assert_eq!(shaped("kafka", 3).broker_nodes(), 3);
        assert_eq!(lab("[]").broker_nodes(), 1);
        assert_eq!(
            shaped("kafka", 2).validate().unwrap_err(),
            ["broker.nodes is 1 or 3, not 2"]
        );
        assert_eq!(
            shaped("rest", 3).validate().unwrap_err(),
            ["broker: the sync-rest part has no broker"]
        );
    }

    #[test]
    fn overlapping_disruptions_of_one_service_are_refused() {
        let overlapping = lab(r#"[
            {"action": "ScaleToZero", "target": "inventory", "after": "5s", "duration": "60s"},
            {"action": "PodKill", "target": "inventory", "after": "30s"}
        ]"#);
        assert_eq!(
            overlapping.validate(),
            Err(vec![
                "chaos[0] and chaos[1] both disrupt inventory at the same time".to_owned()
            ])
        );
        let apart = lab(r#"[
            {"action": "ScaleToZero", "target": "inventory", "after": "5s", "duration": "10s"},
            {"action": "Delay", "target": "inventory", "after": "20s", "duration": "10s", "delaySeconds": 1},
            {"action": "Fail", "target": "notification", "after": "5s", "duration": "60s"}
        ]"#);
        assert_eq!(apart.validate(), Ok(()));
    }

    #[test]
    fn a_pod_kill_s_mode_and_value_are_read_together() {
        let step = |extra: &str| -> ChaosStep {
            serde_json::from_str(&format!(
                r#"{{"action": "PodKill", "target": "inventory"{extra}}}"#
            ))
            .unwrap()
        };
        let cases = [
            ("", Ok(PodSelection::All)),
            (r#", "mode": "one""#, Ok(PodSelection::One)),
            (
                r#", "mode": "fixed", "value": "2""#,
                Ok(PodSelection::Fixed(2)),
            ),
            (
                r#", "mode": "fixed-percent", "value": "50""#,
                Ok(PodSelection::FixedPercent(50)),
            ),
            (
                r#", "mode": "random-max-percent", "value": "100""#,
                Ok(PodSelection::RandomMaxPercent(100)),
            ),
            (r#", "mode": "fixed""#, Err("mode fixed needs a value")),
            (
                r#", "mode": "fixed", "value": "0""#,
                Err("mode fixed needs a value of at least 1"),
            ),
            (
                r#", "mode": "fixed", "value": "two""#,
                Err(r#"value "two" of mode fixed is not a whole number"#),
            ),
            (
                r#", "mode": "fixed-percent", "value": "150""#,
                Err("value of mode fixed-percent is a percentage, 1 to 100, not 150"),
            ),
            (
                r#", "mode": "one", "value": "1""#,
                Err("mode one takes no value"),
            ),
        ];
        for (extra, want) in cases {
            assert_eq!(
                step(extra).pod_selection(),
                want.map_err(str::to_owned),
                "{extra}"
            );
        }
        let scale = lab(
            r#"[{"action": "ScaleToZero", "target": "inventory", "duration": "5s", "gracePeriod": 3}]"#,
        );
        assert_eq!(
            scale.validate(),
            Err(vec![
                "chaos[0]: gracePeriod is for PodKill, not ScaleToZero".to_owned()
            ])
        );
    }
}
