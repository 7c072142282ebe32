//! Who owns a variable: a record that only moves forward, by epoch.
//!
//! An owned variable's strong operations run at one node, its owner. The
//! record of who that is replicates like any variable, and joins so that
//! every replica agrees once it has seen the same records: the record of the
//! higher epoch wins. Within one epoch the node that decides about the
//! variable (its owner, or while it is free, its custodian) only adds a
//! handoff (the node it offered the variable to), which the next epoch's
//! record completes.
//! Two records of one epoch with different owners are a conflict (an
//! operator's override met the record it overrode, or a split brain): every
//! replica resolves it the same way, a forced record over an ordinary one,
//! then the greater owner id, and [`Ownership::conflicts_with`] tells it.
//!
//! The crate only keeps the records; who may write which one, and when, is
//! the replica's protocol (`atoll-core`).

use crate::ReplicaId;
use serde::{Deserialize, Serialize};

/// An ownership record: the epoch, and who owns the variable in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    /// Counts every change of owner (a grant, a handoff, a release, an
    /// override): 0 for a variable that was never owned.
    pub epoch: u64,
    /// Who owns it in this epoch.
    pub stage: Stage,
}

/// Who owns a variable in one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Nobody: the variable is ownerless (never owned, or released).
    Free {
        /// The node that released it, which holds the state its owners
        /// left and grants the next ownership (`None`: it was never owned;
        /// the replica's protocol names a node then).
        custodian: Option<ReplicaId>,
        /// The custodian offered the variable to a node, not accepted yet.
        handoff: Option<Handoff>,
    },
    /// One node owns it.
    Owned {
        /// The owner.
        owner: ReplicaId,
        /// Set by an operator's override, which breaks exclusivity if the
        /// node it replaces is alive: wins over an ordinary record of the
        /// same epoch.
        forced: bool,
        /// The owner offered the variable to another node and stopped
        /// accepting strong operations; the next epoch's record, written
        /// by that node when it accepts, completes the move.
        handoff: Option<Handoff>,
    },
}

impl Default for Stage {
    fn default() -> Stage {
        Stage::Free {
            custodian: None,
            handoff: None,
        }
    }
}

/// An offer of ownership, not yet accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Handoff {
    /// The node offered the variable.
    pub to: ReplicaId,
    /// When the offer was made (wall milliseconds at the owner).
    pub since_ms: u64,
}

impl Ownership {
    /// The record of a variable owned by `owner` in `epoch`.
    pub fn owned(epoch: u64, owner: ReplicaId) -> Ownership {
        Ownership {
            epoch,
            stage: Stage::Owned {
                owner,
                forced: false,
                handoff: None,
            },
        }
    }

    /// The record of a variable released by `custodian` in `epoch`.
    pub fn released(epoch: u64, custodian: ReplicaId) -> Ownership {
        Ownership {
            epoch,
            stage: Stage::Free {
                custodian: Some(custodian),
                handoff: None,
            },
        }
    }

    /// The owner, if any.
    pub fn owner(&self) -> Option<ReplicaId> {
        match self.stage {
            Stage::Owned { owner, .. } => Some(owner),
            Stage::Free { .. } => None,
        }
    }

    /// The node that released the variable, while it is free.
    pub fn custodian(&self) -> Option<ReplicaId> {
        match self.stage {
            Stage::Free { custodian, .. } => custodian,
            Stage::Owned { .. } => None,
        }
    }

    /// The offer made of the variable in this epoch, if any.
    pub fn handoff(&self) -> Option<Handoff> {
        match self.stage {
            Stage::Owned { handoff, .. } | Stage::Free { handoff, .. } => handoff,
        }
    }

    /// Adds the offer of the variable to `to`, made at `since_ms`.
    pub fn offer(&mut self, to: ReplicaId, since_ms: u64) {
        let h = Some(Handoff { to, since_ms });
        match &mut self.stage {
            Stage::Owned { handoff, .. } | Stage::Free { handoff, .. } => *handoff = h,
        }
    }

    /// Whether the record was set by an operator's override.
    pub fn forced(&self) -> bool {
        matches!(self.stage, Stage::Owned { forced: true, .. })
    }

    /// Whether `other` is a record of the same epoch that names another
    /// owner: a conflict, which the join resolves (see the module's doc).
    pub fn conflicts_with(&self, other: &Ownership) -> bool {
        self.epoch == other.epoch
            && matches!(
                (&self.stage, &other.stage),
                (Stage::Owned { owner: a, forced: fa, .. }, Stage::Owned { owner: b, forced: fb, .. })
                    if (a, fa) != (b, fb)
            )
    }

    /// What of `delta` this record lacks: `delta` itself if joining it
    /// changes this record, else the bottom record.
    pub fn strip(&self, delta: Ownership) -> Ownership {
        let mut joined = self.clone();
        crate::Lattice::join(&mut joined, delta.clone());
        if joined == *self {
            Ownership::default()
        } else {
            delta
        }
    }
}

/// The order of one epoch's records: free (by custodian), then owned by
/// the lesser (forced, owner), then the greater.
fn rank(stage: &Stage) -> (bool, Option<(bool, ReplicaId)>) {
    match stage {
        Stage::Free { custodian, .. } => (false, custodian.map(|c| (false, c))),
        Stage::Owned { owner, forced, .. } => (true, Some((*forced, *owner))),
    }
}

impl crate::Lattice for Ownership {
    /// The record of the higher epoch; within one, the higher rank (see
    /// [`rank`]); within one owner, the later of the handoffs (an offer is
    /// only ever added).
    fn join(&mut self, other: Self) {
        use std::cmp::Ordering::*;
        let order = self
            .epoch
            .cmp(&other.epoch)
            .then_with(|| rank(&self.stage).cmp(&rank(&other.stage)));
        match order {
            Less => *self = other,
            Greater => {}
            Equal => {
                let theirs = other.handoff();
                let (Stage::Owned { handoff: mine, .. } | Stage::Free { handoff: mine, .. }) =
                    &mut self.stage;
                *mine = (*mine).max(theirs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Lattice;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = Ownership> {
        let handoff = proptest::option::of((0u64..3, 0u64..3).prop_map(|(to, since_ms)| Handoff {
            to: ReplicaId(to),
            since_ms,
        }));
        let stage = prop_oneof![
            (proptest::option::of(0u64..3), handoff.clone()).prop_map(|(c, handoff)| Stage::Free {
                custodian: c.map(ReplicaId),
                handoff
            }),
            (0u64..3, any::<bool>(), handoff).prop_map(|(o, forced, handoff)| Stage::Owned {
                owner: ReplicaId(o),
                forced,
                handoff
            }),
        ];
        (0u64..3, stage).prop_map(|(epoch, stage)| Ownership { epoch, stage })
    }

    fn join(mut a: Ownership, b: Ownership) -> Ownership {
        a.join(b);
        a
    }

    proptest! {
        #[test]
        fn the_join_is_a_semilattice(a in record(), b in record(), c in record()) {
            prop_assert_eq!(join(a.clone(), b.clone()), join(b.clone(), a.clone()));
            prop_assert_eq!(
                join(join(a.clone(), b.clone()), c.clone()),
                join(a.clone(), join(b.clone(), c.clone()))
            );
            prop_assert_eq!(join(a.clone(), a.clone()), a.clone());
            // The bottom changes nothing, and a stripped delta joins to the same.
            prop_assert_eq!(join(a.clone(), Ownership::default()), a.clone());
            prop_assert_eq!(join(a.clone(), a.strip(b.clone())), join(a, b));
        }
    }

    #[test]
    fn a_later_epoch_wins_and_an_override_wins_its_epoch() {
        let a = Ownership::owned(3, ReplicaId(1));
        let b = Ownership::owned(4, ReplicaId(0));
        assert_eq!(join(a.clone(), b.clone()), b);
        assert_eq!(join(b.clone(), a.clone()), b);
        // Released in a later epoch: free wins over the owner before.
        let free = Ownership::released(5, ReplicaId(0));
        assert_eq!(join(b.clone(), free.clone()).owner(), None);
        // Same epoch, another owner: a conflict; forced wins over greater.
        let forced = Ownership {
            epoch: 4,
            stage: Stage::Owned {
                owner: ReplicaId(0),
                forced: true,
                handoff: None,
            },
        };
        let other = Ownership::owned(4, ReplicaId(9));
        assert!(forced.conflicts_with(&other));
        assert!(!b.conflicts_with(&b));
        assert_eq!(join(other.clone(), forced.clone()), forced);
        assert_eq!(join(forced.clone(), other), forced);
    }

    #[test]
    fn a_handoff_is_added_and_kept() {
        let mut a = Ownership::owned(2, ReplicaId(1));
        let mut offered = a.clone();
        offered.offer(ReplicaId(2), 7);
        a.join(offered.clone());
        assert_eq!(a.handoff().map(|h| h.to), Some(ReplicaId(2)));
        a.join(Ownership::owned(2, ReplicaId(1)));
        assert_eq!(
            a, offered,
            "an older copy of the record takes no offer back"
        );
        assert_eq!(
            offered.strip(Ownership::owned(2, ReplicaId(1))),
            Ownership::default()
        );
    }
}
