//! What the chaos of a lab should look like now: a pure function of the
//! spec, the records in status and the clock. Every reconcile recomputes it,
//! so an operator that restarted mid-chaos picks up where it was, and a
//! restore is never forgotten.

use std::time::Duration;

use foodlab_lab::results::ChaosRecord;
use foodlab_lab::validated::Disruption;
use jiff::{SignedDuration, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChaosMove {
    /// Disrupt step `step` now.
    Start { step: usize },
    /// Undo step `step` now.
    Restore { step: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosPlan {
    pub moves: Vec<ChaosMove>,
    /// The next time something is due, if anything is.
    pub next_due: Option<Timestamp>,
    /// Every step has run and been undone.
    pub finished: bool,
}

pub fn record_of(records: &[ChaosRecord], step: usize) -> Option<&ChaosRecord> {
    records.iter().find(|r| r.step as usize == step)
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// The moves due at `now` for a run that began at `origin`.
pub fn plan(
    steps: &[Disruption],
    records: &[ChaosRecord],
    origin: Timestamp,
    now: Timestamp,
) -> ChaosPlan {
    let mut moves = Vec::new();
    let mut next_due: Option<Timestamp> = None;
    let mut due_later = |at: Timestamp| {
        next_due = Some(next_due.map_or(at, |n| n.min(at)));
    };
    let mut finished = true;
    for (i, step) in steps.iter().enumerate() {
        match record_of(records, i) {
            None => {
                finished = false;
                let start_at = plus(origin, step.after);
                if now >= start_at {
                    moves.push(ChaosMove::Start { step: i });
                } else {
                    due_later(start_at);
                }
            }
            Some(record) if record.restored_at.is_none() => {
                finished = false;
                let at = record.restore_at.unwrap_or(record.started_at);
                if now >= at {
                    moves.push(ChaosMove::Restore { step: i });
                } else {
                    if !record.disrupted {
                        // Recorded, but the disruption itself failed: try it again.
                        moves.push(ChaosMove::Start { step: i });
                    }
                    due_later(at);
                }
            }
            Some(_) => {}
        }
    }
    // Records of steps no longer in the spec (it was edited mid-run) are
    // undone all the same.
    for record in records {
        if record.step as usize >= steps.len() && record.restored_at.is_none() {
            finished = false;
            moves.push(ChaosMove::Restore {
                step: record.step as usize,
            });
        }
    }
    ChaosPlan {
        moves,
        next_due,
        finished,
    }
}

/// Everything to undo when a lab is deleted: every started, unrestored step.
pub fn restore_all(records: &[ChaosRecord]) -> Vec<ChaosMove> {
    records
        .iter()
        .filter(|r| r.restored_at.is_none())
        .map(|r| ChaosMove::Restore {
            step: r.step as usize,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use foodlab_lab::spec::{ChaosAction, Service};
    use foodlab_lab::validated::DisruptionKind;

    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn scale_to_zero(after: u64, duration: u64) -> Disruption {
        Disruption {
            target: Service::Inventory.into(),
            after: Duration::from_secs(after),
            kind: DisruptionKind::ScaleToZero {
                duration: Duration::from_secs(duration),
            },
        }
    }

    fn record(step: u32, started: i64, restore: i64, restored: Option<i64>) -> ChaosRecord {
        ChaosRecord {
            step,
            action: ChaosAction::ScaleToZero,
            target: Service::Inventory.into(),
            disrupted: true,
            original_replicas: Some(2),
            pods: Vec::new(),
            started_at: t(started),
            restore_at: Some(t(restore)),
            restored_at: restored.map(t),
            error: None,
        }
    }

    #[test]
    fn plan_table() {
        let steps = [scale_to_zero(5, 60)];
        let cases: Vec<(&str, Vec<ChaosRecord>, i64, ChaosPlan)> = vec![
            (
                "before `after`: wait for the start",
                vec![],
                3,
                ChaosPlan {
                    moves: vec![],
                    next_due: Some(t(5)),
                    finished: false,
                },
            ),
            (
                "at `after`: start",
                vec![],
                5,
                ChaosPlan {
                    moves: vec![ChaosMove::Start { step: 0 }],
                    next_due: None,
                    finished: false,
                },
            ),
            (
                "started, before restoreAt: nothing changes",
                vec![record(0, 5, 65, None)],
                30,
                ChaosPlan {
                    moves: vec![],
                    next_due: Some(t(65)),
                    finished: false,
                },
            ),
            (
                "at restoreAt: restore",
                vec![record(0, 5, 65, None)],
                65,
                ChaosPlan {
                    moves: vec![ChaosMove::Restore { step: 0 }],
                    next_due: None,
                    finished: false,
                },
            ),
            (
                "long after restoreAt (operator was down): restore",
                vec![record(0, 5, 65, None)],
                4000,
                ChaosPlan {
                    moves: vec![ChaosMove::Restore { step: 0 }],
                    next_due: None,
                    finished: false,
                },
            ),
            (
                "restored: finished",
                vec![record(0, 5, 65, Some(66))],
                70,
                ChaosPlan {
                    moves: vec![],
                    next_due: None,
                    finished: true,
                },
            ),
        ];
        for (name, records, now, expected) in cases {
            assert_eq!(plan(&steps, &records, t(0), t(now)), expected, "{name}");
        }
    }

    #[test]
    fn steps_are_planned_independently_and_the_earliest_due_time_wins() {
        let steps = [scale_to_zero(0, 100), scale_to_zero(20, 10)];
        let records = vec![record(0, 0, 100, None)];
        let p = plan(&steps, &records, t(0), t(10));
        assert_eq!(p.moves, vec![]);
        assert_eq!(p.next_due, Some(t(20)));
        let p = plan(&steps, &records, t(0), t(25));
        assert_eq!(p.moves, vec![ChaosMove::Start { step: 1 }]);
        assert_eq!(p.next_due, Some(t(100)));
    }

    #[test]
    fn a_recorded_step_whose_disruption_failed_is_started_again_until_its_restore_time() {
        let steps = [scale_to_zero(5, 60)];
        let mut half = record(0, 5, 65, None);
        half.disrupted = false;
        let p = plan(&steps, std::slice::from_ref(&half), t(0), t(20));
        assert_eq!(p.moves, vec![ChaosMove::Start { step: 0 }]);
        assert_eq!(p.next_due, Some(t(65)));
        let p = plan(&steps, &[half], t(0), t(65));
        assert_eq!(p.moves, vec![ChaosMove::Restore { step: 0 }]);
    }

    #[test]
    fn a_record_whose_step_left_the_spec_is_still_restored() {
        let p = plan(&[], &[record(3, 0, 100, None)], t(0), t(10));
        assert_eq!(p.moves, vec![ChaosMove::Restore { step: 3 }]);
        assert!(!p.finished);
    }

    #[test]
    fn a_pod_kill_is_restored_at_once() {
        let step = Disruption {
            kind: DisruptionKind::PodKill {
                selection: foodlab_lab::spec::PodSelection::One,
                grace_period: Duration::ZERO,
            },
            ..scale_to_zero(0, 0)
        };
        assert_eq!(step.restore_at(t(7)), t(7));
        assert_eq!(scale_to_zero(0, 60).restore_at(t(7)), t(67));
    }

    #[test]
    fn deletion_restores_every_unrestored_step() {
        let records = vec![
            record(0, 0, 10, Some(10)),
            record(1, 0, 10, None),
            record(2, 5, 9, None),
        ];
        assert_eq!(
            restore_all(&records),
            vec![
                ChaosMove::Restore { step: 1 },
                ChaosMove::Restore { step: 2 }
            ]
        );
    }
}
