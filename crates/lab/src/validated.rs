//! A lab's spec parsed once into the values every step uses: faults as the
//! services take them, the settings with their defaults filled in, the
//! deadlines. Nothing downstream reads an `Option` of the spec for a default.

use std::collections::BTreeMap;
use std::time::Duration;

use foodlab_domain::{Catalogue, FaultError, Faults};

use crate::spec::{
    ChaosAction, ChaosStep, ChaosTarget, Expectations, FoodLabSpec, Inject, PodSelection, Replicas,
    Service, Transport, Workload,
};

/// How long order waits for its dependencies when a lab does not say (the services' default).
pub const DEFAULT_DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a lab without `expect.within` waits for its orders to settle.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(120);

/// How long a lab may take beyond `within` before it is stopped: starting up,
/// waiting for analytics to catch up, measuring, a replay.
pub const SLACK: Duration = Duration::from_secs(180);

/// The settings a lab's part runs with, every one of them set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSettings {
    /// Stock levels of every item the lab's catalogue names (the default
    /// 100 each of burger, pizza, salad, with `settings.stock` on top).
    pub stock: BTreeMap<String, u64>,
    pub dependency_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedLab {
    pub transport: Transport,
    /// The faults of every service of the part: the declared ones, none for the rest.
    pub faults: BTreeMap<Service, Faults>,
    pub workload: Workload,
    /// `spec.chaos`, in order: step `i` here is `chaos[i]` there.
    pub chaos: Vec<Disruption>,
    pub inject: Option<Inject>,
    pub expect: Expectations,
    pub settings: LabSettings,
    pub replay: bool,
    /// `spec.replicas`: the part's shape for the run.
    pub replicas: Replicas,
    /// `spec.broker.nodes`: the nodes of the part's broker for the run.
    pub broker_nodes: u32,
    /// How long the lab's orders may take to settle (`expect.within`).
    pub within: Duration,
}

impl ValidatedLab {
    pub fn new(spec: &FoodLabSpec) -> Result<Self, Vec<String>> {
        let mut problems = spec.validate().err().unwrap_or_default();
        if spec.inject.is_some() && spec.transport != Transport::Rabbitmq {
            // Malformed Kafka events are covered by the streaming part's tests.
            problems.push("inject needs the async-rabbitmq part (transport: rabbitmq)".into());
        }
        let catalogue = Catalogue::with_overrides(spec.settings.stock.as_deref().unwrap_or(""))
            .map_err(|e| format!("settings.stock: {e}"));
        let catalogue = match catalogue {
            Ok(catalogue) => Some(catalogue),
            Err(problem) => {
                problems.push(problem);
                None
            }
        };
        if let Some(timeout) = spec.settings.dependency_timeout
            && (timeout.is_zero() || timeout > Duration::from_secs(3600))
        {
            problems.push("settings.dependencyTimeout must be above 0 and at most 1h".into());
        }
        let mut faults = BTreeMap::new();
        for service in spec.transport.services() {
            let declared = spec.faults.get(*service).map(|f| f.to_faults());
            match declared {
                None => {
                    faults.insert(*service, Faults::default());
                }
                Some(Ok(f)) => {
                    faults.insert(*service, f);
                }
                // Already reported by `validate`.
                Some(Err(_)) => {}
            }
        }
        for (service, _) in spec.faults.declared() {
            if !spec.transport.services().contains(&service) {
                problems.push(format!(
                    "faults.{service}: {service} is not part of {}",
                    spec.transport.part()
                ));
            }
        }
        let mut chaos = Vec::new();
        for (i, step) in spec.chaos.iter().enumerate() {
            match Disruption::of(step) {
                Ok(disruption) => chaos.push(disruption),
                // A missing duration is already among `validate`'s problems.
                Err(problem)
                    if !problems
                        .iter()
                        .any(|p| p.starts_with(&format!("chaos[{i}]"))) =>
                {
                    problems.push(format!("chaos[{i}]: {problem}"));
                }
                Err(_) => {}
            }
            let on_the_part = match step.target.service() {
                Some(service) => spec.transport.services().contains(&service),
                // `validate` says which broker a part has.
                None => true,
            };
            if !on_the_part {
                problems.push(format!(
                    "chaos[{i}]: {} is not part of {}",
                    step.target,
                    spec.transport.part()
                ));
            }
        }
        let Some(catalogue) = catalogue.filter(|_| problems.is_empty()) else {
            return Err(problems);
        };
        Ok(Self {
            transport: spec.transport,
            faults,
            workload: spec.workload.clone(),
            chaos,
            inject: spec.inject.clone(),
            expect: spec.expect.clone(),
            settings: LabSettings {
                stock: catalogue
                    .initial_stock()
                    .iter()
                    .map(|(item, n)| (item.to_string(), *n))
                    .collect(),
                dependency_timeout: spec
                    .settings
                    .dependency_timeout
                    .unwrap_or(DEFAULT_DEPENDENCY_TIMEOUT),
            },
            replay: spec.replay,
            replicas: spec.replicas.clone(),
            broker_nodes: spec.broker_nodes(),
            within: spec.expect.within.unwrap_or(DEFAULT_WITHIN),
        })
    }

    /// The faults a service carries outside its chaos windows (a broker: none).
    pub fn faults_of(&self, target: impl Into<ChaosTarget>) -> Faults {
        target
            .into()
            .service()
            .and_then(|service| self.faults.get(&service).cloned())
            .unwrap_or_default()
    }

    /// The latest a lab may end, counted from its start.
    pub fn deadline(&self) -> Duration {
        self.within + SLACK
    }
}

/// One chaos step with its defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Disruption {
    /// A service, or (a PodKill's only) the part's broker.
    pub target: ChaosTarget,
    /// When it starts, counted from the workload's first order.
    pub after: Duration,
    pub kind: DisruptionKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DisruptionKind {
    ScaleToZero {
        duration: Duration,
    },
    /// Kill the pods `selection` picks once, each given `grace_period`.
    PodKill {
        selection: PodSelection,
        grace_period: Duration,
    },
    Delay {
        duration: Duration,
        delay_ms: u64,
    },
    Fail {
        duration: Duration,
        fail_rate: f64,
    },
}

/// Why a chaos step cannot be run, as its problem in the lab's list.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepProblem {
    #[error("{0:?} needs a duration greater than zero")]
    NoDuration(ChaosAction),
    /// The spec's own check of `mode`, `value` and `gracePeriod`.
    #[error("{0}")]
    PodSelection(String),
    #[error("Delay needs delaySeconds")]
    NoDelay,
    #[error(transparent)]
    Delay(#[from] FaultError),
}

impl Disruption {
    fn of(step: &ChaosStep) -> Result<Self, StepProblem> {
        let duration = || {
            step.duration
                .filter(|d| !d.is_zero())
                .ok_or(StepProblem::NoDuration(step.action))
        };
        let kind = match step.action {
            ChaosAction::ScaleToZero => DisruptionKind::ScaleToZero {
                duration: duration()?,
            },
            ChaosAction::PodKill => DisruptionKind::PodKill {
                selection: step.pod_selection().map_err(StepProblem::PodSelection)?,
                grace_period: Duration::from_secs(step.grace_period.unwrap_or(0)),
            },
            ChaosAction::Delay => {
                let seconds = step.delay_seconds.ok_or(StepProblem::NoDelay)?;
                DisruptionKind::Delay {
                    duration: duration()?,
                    delay_ms: Faults::delay_ms_from_seconds(seconds)?,
                }
            }
            ChaosAction::Fail => DisruptionKind::Fail {
                duration: duration()?,
                fail_rate: step.fail_rate.unwrap_or(1.0),
            },
        };
        Ok(Self {
            target: step.target,
            after: step.after,
            kind,
        })
    }

    pub fn action(&self) -> ChaosAction {
        match self.kind {
            DisruptionKind::ScaleToZero { .. } => ChaosAction::ScaleToZero,
            DisruptionKind::PodKill { .. } => ChaosAction::PodKill,
            DisruptionKind::Delay { .. } => ChaosAction::Delay,
            DisruptionKind::Fail { .. } => ChaosAction::Fail,
        }
    }

    /// How long the disruption lasts (none for a pod kill).
    pub fn duration(&self) -> Duration {
        match self.kind {
            DisruptionKind::ScaleToZero { duration }
            | DisruptionKind::Delay { duration, .. }
            | DisruptionKind::Fail { duration, .. } => duration,
            DisruptionKind::PodKill { .. } => Duration::ZERO,
        }
    }

    /// The faults the target carries during a Delay/Fail window: the lab's
    /// own (`base`) with the window's on top.
    pub fn window_faults(&self, base: &Faults) -> Faults {
        let mut faults = base.clone();
        match self.kind {
            DisruptionKind::Delay { delay_ms, .. } => faults.delay_ms = delay_ms,
            DisruptionKind::Fail { fail_rate, .. } => faults.fail_rate = fail_rate,
            DisruptionKind::ScaleToZero { .. } | DisruptionKind::PodKill { .. } => {}
        }
        faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> FoodLabSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_are_filled_in_once() {
        let lab = ValidatedLab::new(&spec(
            r#"{"transport": "rest", "workload": {"orders": 5},
                "settings": {"stock": "burger=1000,tofu=3"},
                "faults": {"inventory": {"delaySeconds": 2}}}"#,
        ))
        .unwrap();
        assert_eq!(
            lab.settings.stock,
            BTreeMap::from([
                ("burger".into(), 1000),
                ("pizza".into(), 100),
                ("salad".into(), 100),
                ("tofu".into(), 3)
            ])
        );
        assert_eq!(lab.settings.dependency_timeout, Duration::from_secs(5));
        assert_eq!(lab.within, DEFAULT_WITHIN);
        assert_eq!(lab.faults.len(), 3);
        assert_eq!(lab.faults_of(Service::Inventory).delay_ms, 2000);
        assert_eq!(lab.faults_of(Service::Order), Faults::default());
    }

    #[test]
    fn windows_add_to_the_labs_own_faults() {
        let lab = ValidatedLab::new(&spec(
            r#"{"transport": "rest", "workload": {"orders": 5}, "chaos": [
                {"action": "Delay", "target": "inventory", "duration": "1s", "delaySeconds": 2},
                {"action": "Fail", "target": "inventory", "after": "5s", "duration": "1s"},
                {"action": "PodKill", "target": "order", "after": "9s"}
            ]}"#,
        ))
        .unwrap();
        let base = Faults {
            delay_ms: 100,
            fail_rate: 0.1,
            fail_status: 503,
        };
        let delayed = lab.chaos[0].window_faults(&base);
        assert_eq!((delayed.delay_ms, delayed.fail_rate), (2000, 0.1));
        let failing = lab.chaos[1].window_faults(&base);
        assert_eq!(
            (failing.delay_ms, failing.fail_rate, failing.fail_status),
            (100, 1.0, 503)
        );
        assert_eq!(
            lab.chaos[2].kind,
            DisruptionKind::PodKill {
                selection: PodSelection::All,
                grace_period: Duration::ZERO
            }
        );
        assert_eq!(lab.chaos[2].duration(), Duration::ZERO);
        let problems = ValidatedLab::new(&spec(
            r#"{"transport": "rest", "workload": {"orders": 5}, "chaos": [
                {"action": "Delay", "target": "inventory", "duration": "1s"}
            ]}"#,
        ))
        .unwrap_err();
        assert_eq!(problems, ["chaos[0]: Delay needs delaySeconds"]);
    }

    #[test]
    fn problems_of_settings_and_targets_are_reported_together() {
        let problems = ValidatedLab::new(&spec(
            r#"{"transport": "rest", "workload": {"orders": 5},
                "settings": {"stock": "burger", "dependencyTimeout": "0s"},
                "inject": {"poisonMessages": 1},
                "chaos": [{"action": "PodKill", "target": "analytics"}]}"#,
        ))
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "inject needs the async-rabbitmq part (transport: rabbitmq)",
                "settings.stock: stock entry `burger` is not of the form item=count",
                "settings.dependencyTimeout must be above 0 and at most 1h",
                "chaos[0]: analytics is not part of sync-rest",
            ]
        );
    }
}
