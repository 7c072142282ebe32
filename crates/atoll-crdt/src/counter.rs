//! Grow-only and positive-negative counters.

use crate::{CrdtError, Lattice, ReplicaId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A grow-only counter: one monotone total per replica; the value is their sum.
///
/// A delta is a counter holding just the incrementing replica's new total.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GCounter {
    totals: BTreeMap<ReplicaId, u64>,
}

impl GCounter {
    /// A zero counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` on behalf of `replica` and returns the delta.
    ///
    /// Fails, changing nothing, if the replica's total would pass `u64::MAX`.
    pub fn incr(&mut self, replica: ReplicaId, n: u64) -> Result<GCounter, CrdtError> {
        let total = self.totals.get(&replica).copied().unwrap_or(0);
        let total = total.checked_add(n).ok_or(CrdtError::Overflow)?;
        self.totals.insert(replica, total);
        Ok(GCounter {
            totals: BTreeMap::from([(replica, total)]),
        })
    }

    /// The sum of all replicas' totals.
    pub fn value(&self) -> u128 {
        self.totals.values().map(|&v| u128::from(v)).sum()
    }

    /// One replica's total.
    pub fn total_of(&self, replica: ReplicaId) -> u64 {
        self.totals.get(&replica).copied().unwrap_or(0)
    }
}

impl Lattice for GCounter {
    fn join(&mut self, other: Self) {
        for (r, n) in other.totals {
            let e = self.totals.entry(r).or_insert(0);
            *e = (*e).max(n);
        }
    }
}

/// A counter that goes up and down: two grow-only counters, increments and decrements.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PNCounter {
    p: GCounter,
    n: GCounter,
}

impl PNCounter {
    /// A zero counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `by` (negative to decrement) on behalf of `replica`; returns the delta.
    pub fn add(&mut self, replica: ReplicaId, by: i64) -> Result<PNCounter, CrdtError> {
        let mut delta = PNCounter::new();
        if by >= 0 {
            delta.p = self.p.incr(replica, by.unsigned_abs())?;
        } else {
            delta.n = self.n.incr(replica, by.unsigned_abs())?;
        }
        Ok(delta)
    }

    /// The current value: all increments less all decrements.
    pub fn value(&self) -> i128 {
        // Each side is a sum of u64 totals over at most usize replicas: far inside i128.
        self.p.value() as i128 - self.n.value() as i128
    }
}

impl Lattice for PNCounter {
    fn join(&mut self, other: Self) {
        self.p.join(other.p);
        self.n.join(other.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_changes_nothing() {
        let r = ReplicaId(1);
        let mut c = GCounter::new();
        c.incr(r, u64::MAX - 1).unwrap();
        assert_eq!(c.incr(r, 2), Err(CrdtError::Overflow));
        assert_eq!(c.value(), u128::from(u64::MAX - 1));
    }

    #[test]
    fn pn_value_sums_replicas() {
        let mut a = PNCounter::new();
        let mut b = PNCounter::new();
        a.add(ReplicaId(1), 10).unwrap();
        b.add(ReplicaId(2), -3).unwrap();
        a.join(b);
        assert_eq!(a.value(), 7);
    }
}
