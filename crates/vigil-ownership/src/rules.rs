//! The state machine's rules, apart from where the map is kept: what one
//! operation does to the owner of its client id.

use crate::types::{Epoch, Op, OpOutcome, Owner};

/// The result of applying one operation to the current owner of its id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Applied {
    /// What the caller is told.
    pub(crate) outcome: OpOutcome,
    /// The new owner, when the operation changed it (`Some(None)`: removed).
    pub(crate) write: Option<Option<Owner>>,
}

/// Applies `op` at `epoch` (its place in the log) to `current`.
///
/// A claim always wins and takes `epoch`, which is larger than any epoch
/// committed before it. A release only removes the entry when it names the
/// current owner exactly: an older epoch, or another node, is refused, so a
/// node that lost the id can never remove the new owner's claim.
pub(crate) fn apply(op: &Op, epoch: Epoch, current: Option<Owner>) -> Applied {
    match op {
        Op::Claim { node, .. } => Applied {
            outcome: OpOutcome::Claimed {
                epoch,
                previous: current,
            },
            write: Some(Some(Owner { node: *node, epoch })),
        },
        Op::Release { owner, .. } => {
            if current == Some(*owner) {
                Applied {
                    outcome: OpOutcome::Released,
                    write: Some(None),
                }
            } else {
                Applied {
                    outcome: OpOutcome::Stale { current },
                    write: None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(node: u64) -> Op {
        Op::Claim {
            client_id: "c".into(),
            node,
        }
    }

    fn release(node: u64, epoch: u64) -> Op {
        Op::Release {
            client_id: "c".into(),
            owner: Owner {
                node,
                epoch: Epoch(epoch),
            },
        }
    }

    #[test]
    fn a_claim_takes_the_new_epoch_and_reports_the_previous_owner() {
        let first = apply(&claim(1), Epoch(10), None);
        assert_eq!(
            first.outcome,
            OpOutcome::Claimed {
                epoch: Epoch(10),
                previous: None
            }
        );
        let owner = Owner {
            node: 1,
            epoch: Epoch(10),
        };
        assert_eq!(first.write, Some(Some(owner)));

        let second = apply(&claim(2), Epoch(11), Some(owner));
        assert_eq!(
            second.outcome,
            OpOutcome::Claimed {
                epoch: Epoch(11),
                previous: Some(owner)
            }
        );
        assert_eq!(
            second.write,
            Some(Some(Owner {
                node: 2,
                epoch: Epoch(11)
            }))
        );
    }

    #[test]
    fn a_release_of_the_current_owner_removes_it() {
        let owner = Owner {
            node: 1,
            epoch: Epoch(10),
        };
        let applied = apply(&release(1, 10), Epoch(12), Some(owner));
        assert_eq!(applied.outcome, OpOutcome::Released);
        assert_eq!(applied.write, Some(None));
    }

    #[test]
    fn a_stale_release_changes_nothing() {
        let owner = Owner {
            node: 2,
            epoch: Epoch(11),
        };
        for op in [release(1, 10), release(2, 10), release(1, 11)] {
            let applied = apply(&op, Epoch(12), Some(owner));
            assert_eq!(
                applied.outcome,
                OpOutcome::Stale {
                    current: Some(owner)
                },
                "{op:?}"
            );
            assert_eq!(applied.write, None);
        }
        let gone = apply(&release(2, 11), Epoch(13), None);
        assert_eq!(gone.outcome, OpOutcome::Stale { current: None });
        assert_eq!(gone.write, None);
    }
}
