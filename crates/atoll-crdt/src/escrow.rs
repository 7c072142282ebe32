//! Escrow of a bounded counter's decrement rights: who may take how much
//! off the counter without asking its owner.
//!
//! An owned counter with a floor has `value - floor` to give away in
//! decrements. With escrow, its owner grants parts of that to other nodes
//! ahead of need, so that each decrements locally, through a split too, up
//! to what it holds; what the owner has not granted (the *pool*) it spends
//! itself, on the decrements that reach it. A node's *balance* is what it
//! was granted, less what it spent and what it gave back.
//!
//! What a node spent is not in this record: it is the counter's own
//! decrements under the node's *escrow actor* ([`escrow_actor`]), so that a
//! spend and its decrement are one delta, never seen apart. Every total
//! here has one writer, so that joins (maxima) never lose a write: the
//! grants of each (granter, grantee) pair are written by the granter; what
//! a node gave back, by that node. The owner's *targets* (how much each
//! node should hold, by recent use) are a last-writer-wins entry ordered by
//! the owner's epoch and a round count.
//!
//! The crate only keeps the record; who writes what, and the arithmetic
//! that keeps the counter above its floor on every replica, are the
//! replica's (`atoll-core`, docs/ownership.md).

use crate::{GCounter, Lattice, PNCounter, ReplicaId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The escrow record of one counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    /// The least value the counter may reach, set when escrow is enabled
    /// (`None`: not enabled). Two floors (set by two owners, across an
    /// override) join to the higher: the safer.
    pub floor: Option<i64>,
    /// Rights granted, by grantee: each granter's total.
    granted: BTreeMap<ReplicaId, GCounter>,
    /// Rights given back to the pool, by node.
    returned: GCounter,
    /// The shares the owner wants each node to hold.
    targets: Option<Targets>,
}

/// The shares an owner wants each node to hold, by recent use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    /// The ownership epoch it was written in.
    pub epoch: u64,
    /// Counts the owner's writes within the epoch.
    pub round: u64,
    /// The owner that wrote it.
    pub by: ReplicaId,
    /// Each node's target balance.
    pub shares: BTreeMap<ReplicaId, u64>,
}

impl Targets {
    fn key(&self) -> (u64, u64, ReplicaId) {
        (self.epoch, self.round, self.by)
    }
}

/// The id under which `node` makes the decrements it spends its rights
/// on, in the counter: one per node (not per opening), so that what it
/// spent survives its restarts. Drawn from the node id by a fixed mix, it
/// meets no random incarnation id but by a 2^-64 chance.
pub fn escrow_actor(node: ReplicaId) -> ReplicaId {
    let mut x = node.0 ^ 0xe5c0_0e5c_0e5c_0e5c;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ReplicaId(x ^ (x >> 31))
}

/// What `node` spent of its rights, as `counter` holds it.
pub fn spent_by(counter: &PNCounter, node: ReplicaId) -> u64 {
    counter.decrements_by(escrow_actor(node))
}

impl Escrow {
    /// The record of a counter whose escrow is enabled with `floor`.
    pub fn enabled(floor: i64) -> Escrow {
        Escrow {
            floor: Some(floor),
            ..Escrow::default()
        }
    }

    /// What `node` holds: granted to it, less what it spent (its
    /// decrements in `counter`) and gave back. The spent and given back
    /// are the node's own writes (so the node itself sees them all), and a
    /// grant seen late only makes it lower.
    pub fn balance(&self, node: ReplicaId, counter: &PNCounter) -> i128 {
        let granted = self.granted.get(&node).map_or(0, |g| g.value() as i128);
        granted - i128::from(spent_by(counter, node)) - i128::from(self.returned.total_of(node))
    }

    /// Every node that was ever granted anything, and its balance.
    pub fn balances<'a>(
        &'a self,
        counter: &'a PNCounter,
    ) -> impl Iterator<Item = (ReplicaId, i128)> + 'a {
        self.granted.keys().map(|&n| (n, self.balance(n, counter)))
    }

    /// The sum of every node's balance: what the pool does not hold.
    pub fn held(&self, counter: &PNCounter) -> i128 {
        self.balances(counter).map(|(_, b)| b.max(0)).sum()
    }

    /// The owner's targets, if it wrote any.
    pub fn targets(&self) -> Option<&Targets> {
        self.targets.as_ref()
    }

    /// The delta of `granter` granting `n` more to `to`. Fails, changing
    /// nothing, on overflow.
    pub fn grant(
        &mut self,
        granter: ReplicaId,
        to: ReplicaId,
        n: u64,
    ) -> Result<Escrow, crate::CrdtError> {
        let mut g = self.granted.get(&to).cloned().unwrap_or_default();
        let d = g.incr(granter, n)?;
        self.granted.insert(to, g);
        Ok(Escrow {
            granted: BTreeMap::from([(to, d)]),
            ..Escrow::default()
        })
    }

    /// The delta of `node` giving `n` of its balance back to the pool.
    pub fn give_back(&mut self, node: ReplicaId, n: u64) -> Result<Escrow, crate::CrdtError> {
        let d = self.returned.incr(node, n)?;
        Ok(Escrow {
            returned: d,
            ..Escrow::default()
        })
    }

    /// The delta of writing `targets` (which must order after the ones
    /// held to change anything).
    pub fn set_targets(&mut self, targets: Targets) -> Escrow {
        let d = Escrow {
            targets: Some(targets),
            ..Escrow::default()
        };
        self.join(d.clone());
        d
    }

    /// What of `delta` this record lacks: `delta` itself if joining it
    /// changes this record, else the bottom record.
    pub fn strip(&self, delta: Escrow) -> Escrow {
        let mut joined = self.clone();
        joined.join(delta.clone());
        if joined == *self {
            Escrow::default()
        } else {
            delta
        }
    }
}

impl Lattice for Escrow {
    fn join(&mut self, other: Self) {
        self.floor = match (self.floor, other.floor) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (to, g) in other.granted {
            self.granted.entry(to).or_default().join(g);
        }
        self.returned.join(other.returned);
        match (&self.targets, other.targets) {
            (Some(mine), Some(theirs)) if theirs.key() > mine.key() => {
                self.targets = Some(theirs);
            }
            (None, theirs) => self.targets = theirs,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ReplicaId = ReplicaId(1);
    const B: ReplicaId = ReplicaId(2);

    #[test]
    fn balances_count_grants_spends_and_returns() {
        let mut e = Escrow::enabled(0);
        let mut c = PNCounter::new();
        c.add(A, 10).unwrap();
        e.grant(A, B, 10).unwrap();
        c.add(escrow_actor(B), -3).unwrap();
        e.give_back(B, 2).unwrap();
        assert_eq!(e.balance(B, &c), 5);
        assert_eq!(e.held(&c), 5);
        assert_eq!(e.balance(A, &c), 0);
        assert_ne!(escrow_actor(B), B);
    }

    #[test]
    fn joins_are_order_free_and_keep_every_writer() {
        let mut owner = Escrow::enabled(0);
        let g1 = owner.grant(A, B, 4).unwrap();
        let g2 = owner.grant(A, B, 6).unwrap();
        let mut b = Escrow::default();
        let r = b.give_back(B, 1).unwrap();
        let mut x = Escrow::default();
        for d in [g2.clone(), r.clone(), g1.clone()] {
            x.join(d);
        }
        let mut y = Escrow::default();
        for d in [r, g1, g2] {
            y.join(d);
        }
        assert_eq!(x, y);
        assert_eq!(x.balance(B, &PNCounter::new()), 9);
    }

    #[test]
    fn the_higher_floor_and_the_later_targets_win() {
        let mut a = Escrow::enabled(0);
        a.join(Escrow::enabled(5));
        assert_eq!(a.floor, Some(5));
        let t = |round, n| Targets {
            epoch: 1,
            round,
            by: A,
            shares: BTreeMap::from([(B, n)]),
        };
        a.set_targets(t(2, 7));
        a.join(Escrow {
            targets: Some(t(1, 3)),
            ..Escrow::default()
        });
        assert_eq!(a.targets().map(|t| t.shares[&B]), Some(7));
        assert_eq!(a.strip(Escrow::enabled(1)), Escrow::default());
    }
}
