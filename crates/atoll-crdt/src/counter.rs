//! Grow-only and positive-negative counters.

use crate::{CrdtError, Lattice, ReplicaId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::{smallvec, SmallVec};

/// A grow-only counter: one monotone total per replica; the value is their sum.
///
/// A delta is a counter holding just the incrementing replica's new total.
/// Totals are kept sorted by replica, inline for one replica (a delta).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GCounter {
    totals: SmallVec<[(ReplicaId, u64); 1]>,
}

impl Serialize for GCounter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.totals.as_slice().serialize(s)
    }
}

impl<'de> Deserialize<'de> for GCounter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let totals = Vec::<(ReplicaId, u64)>::deserialize(d)?;
        if totals.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(serde::de::Error::custom(
                "counter totals are not sorted by replica",
            ));
        }
        Ok(GCounter {
            totals: SmallVec::from_vec(totals),
        })
    }
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
        // Adding nothing changes nothing: no total of 0 is recorded, which a
        // peer (whose total for the replica is already 0) would never see.
        if n == 0 {
            return Ok(GCounter::new());
        }
        let total = match self.totals.binary_search_by_key(&replica, |e| e.0) {
            Ok(i) => {
                let t = self.totals[i].1.checked_add(n).ok_or(CrdtError::Overflow)?;
                self.totals[i].1 = t;
                t
            }
            Err(i) => {
                self.totals.insert(i, (replica, n));
                n
            }
        };
        Ok(GCounter {
            totals: smallvec![(replica, total)],
        })
    }

    /// The sum of all replicas' totals.
    pub fn value(&self) -> u128 {
        self.totals.iter().map(|&(_, v)| u128::from(v)).sum()
    }

    /// The totals of `delta` that are higher than here: what it adds.
    pub fn strip(&self, delta: GCounter) -> GCounter {
        GCounter {
            totals: delta
                .totals
                .into_iter()
                .filter(|&(r, n)| n > self.total_of(r))
                .collect(),
        }
    }

    /// Every replica's total, in replica order.
    pub fn totals(&self) -> impl Iterator<Item = (ReplicaId, u64)> + '_ {
        self.totals.iter().copied()
    }

    /// One replica's total.
    pub fn total_of(&self, replica: ReplicaId) -> u64 {
        self.totals
            .binary_search_by_key(&replica, |e| e.0)
            .map_or(0, |i| self.totals[i].1)
    }
}

impl Lattice for GCounter {
    fn join(&mut self, other: Self) {
        for &(r, n) in other.totals.iter() {
            match self.totals.binary_search_by_key(&r, |e| e.0) {
                Ok(i) => self.totals[i].1 = self.totals[i].1.max(n),
                Err(i) => self.totals.insert(i, (r, n)),
            }
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

    /// What `delta` adds to this counter.
    pub fn strip(&self, delta: PNCounter) -> PNCounter {
        PNCounter {
            p: self.p.strip(delta.p),
            n: self.n.strip(delta.n),
        }
    }

    /// The increments, by replica.
    pub fn increments(&self) -> &GCounter {
        &self.p
    }

    /// The decrements, by replica.
    pub fn decrements(&self) -> &GCounter {
        &self.n
    }

    /// The decrements made under `replica`, in all.
    pub fn decrements_by(&self, replica: ReplicaId) -> u64 {
        self.n.total_of(replica)
    }

    /// The current value: all increments less all decrements.
    pub fn value(&self) -> i128 {
        // Each side is a sum of u64 totals over at most usize replicas: far inside i128.
        self.p.value() as i128 - self.n.value() as i128
    }
}

impl Lattice for PNCounter {
    fn join(&mut self, other: Self) {
        if !other.p.totals.is_empty() {
            self.p.join(other.p);
        }
        if !other.n.totals.is_empty() {
            self.n.join(other.n);
        }
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
