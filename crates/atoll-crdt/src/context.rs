//! The causal context: which dots a state has seen.

use crate::{Dot, InvalidState, ReplicaId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A set of dots, kept as a version vector (every dot `1..=n` of a replica) plus a
/// cloud of dots that are not yet contiguous with it.
///
/// The representation is canonical: after every operation the cloud holds no dot
/// that the vector covers or that could extend it, and the vector holds no zero
/// entry, so two contexts with the same dots are equal as values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CausalContext {
    vv: BTreeMap<ReplicaId, u64>,
    cloud: BTreeSet<Dot>,
}

impl CausalContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `dot` is in the context.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.vv.get(&dot.replica).is_some_and(|&n| dot.counter <= n) || self.cloud.contains(dot)
    }

    /// Whether the context holds no dot.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// Adds one dot.
    pub fn insert(&mut self, dot: Dot) {
        if self.contains(&dot) || dot.counter == 0 {
            return;
        }
        let seen = self.vv.get(&dot.replica).copied().unwrap_or(0);
        if dot.counter == seen + 1 {
            self.vv.insert(dot.replica, dot.counter);
            self.compact_replica(dot.replica);
        } else {
            self.cloud.insert(dot);
        }
    }

    /// The next dot `replica` should issue: one past every dot of it seen here.
    pub fn next_dot(&self, replica: ReplicaId) -> Dot {
        let vv = self.vv.get(&replica).copied().unwrap_or(0);
        let cloud = self
            .cloud
            .range(Dot::new(replica, 0)..=Dot::new(replica, u64::MAX))
            .next_back()
            .map_or(0, |d| d.counter);
        Dot::new(replica, vv.max(cloud) + 1)
    }

    /// The highest counter of `replica` that the vector covers contiguously.
    pub fn version_of(&self, replica: ReplicaId) -> u64 {
        self.vv.get(&replica).copied().unwrap_or(0)
    }

    /// Adds every dot of `other`.
    pub fn join(&mut self, other: &CausalContext) {
        for (&r, &n) in &other.vv {
            let e = self.vv.entry(r).or_insert(0);
            if n > *e {
                *e = n;
            }
        }
        self.cloud.extend(other.cloud.iter().copied());
        self.compact();
    }

    /// Number of dots held in the cloud (a measure of how fragmented it is).
    pub fn cloud_len(&self) -> usize {
        self.cloud.len()
    }

    /// The version vector: every dot `1..=n` of each replica.
    pub fn vector(&self) -> impl Iterator<Item = (ReplicaId, u64)> + '_ {
        self.vv.iter().map(|(r, n)| (*r, *n))
    }

    /// The dots outside the version vector.
    pub fn cloud(&self) -> impl Iterator<Item = &Dot> + '_ {
        self.cloud.iter()
    }

    /// Every dot in the context, in order. Use only on small contexts (deltas):
    /// a version vector entry `n` yields `n` dots.
    pub fn iter_dots(&self) -> impl Iterator<Item = Dot> + '_ {
        let ranges = self
            .vv
            .iter()
            .flat_map(|(&r, &n)| (1..=n).map(move |c| Dot::new(r, c)));
        ranges.chain(self.cloud.iter().copied())
    }

    fn compact_replica(&mut self, replica: ReplicaId) {
        let Some(mut n) = self.vv.get(&replica).copied() else {
            return;
        };
        let lo = Dot::new(replica, 0);
        let hi = Dot::new(replica, u64::MAX);
        let mut drop = Vec::new();
        for d in self.cloud.range(lo..=hi) {
            if d.counter <= n {
                drop.push(*d);
            } else if d.counter == n + 1 {
                n += 1;
                drop.push(*d);
            } else {
                break;
            }
        }
        for d in drop {
            self.cloud.remove(&d);
        }
        self.vv.insert(replica, n);
    }

    fn compact(&mut self) {
        let replicas: BTreeSet<ReplicaId> = self.cloud.iter().map(|d| d.replica).collect();
        for r in replicas {
            if !self.vv.contains_key(&r) {
                if !self.cloud.contains(&Dot::new(r, 1)) {
                    continue;
                }
                self.vv.insert(r, 0);
            }
            self.compact_replica(r);
        }
    }

    /// Checks the canonical form; decoded contexts must pass it.
    pub fn validate(&self) -> Result<(), InvalidState> {
        if self.vv.values().any(|&n| n == 0) {
            return Err(InvalidState("version vector holds a zero entry"));
        }
        for d in &self.cloud {
            let seen = self.version_of(d.replica);
            if d.counter == 0 {
                return Err(InvalidState("dot with counter 0"));
            }
            if d.counter <= seen + 1 {
                return Err(InvalidState("causal context is not compacted"));
            }
        }
        Ok(())
    }
}

impl FromIterator<Dot> for CausalContext {
    fn from_iter<I: IntoIterator<Item = Dot>>(iter: I) -> Self {
        let mut c = CausalContext::new();
        for d in iter {
            c.insert(d);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ReplicaId = ReplicaId(1);
    const B: ReplicaId = ReplicaId(2);

    #[test]
    fn cloud_compacts_into_vector() {
        let mut c = CausalContext::new();
        c.insert(Dot::new(A, 3));
        c.insert(Dot::new(A, 2));
        assert_eq!(c.cloud_len(), 2);
        assert!(!c.contains(&Dot::new(A, 1)));
        c.insert(Dot::new(A, 1));
        assert_eq!(c.cloud_len(), 0);
        assert_eq!(c.version_of(A), 3);
        assert_eq!(c.next_dot(A), Dot::new(A, 4));
        c.validate().unwrap();
    }

    #[test]
    fn join_is_canonical() {
        let x: CausalContext = [Dot::new(A, 1), Dot::new(B, 2)].into_iter().collect();
        let y: CausalContext = [Dot::new(A, 2), Dot::new(B, 1)].into_iter().collect();
        let mut xy = x.clone();
        xy.join(&y);
        let z: CausalContext = [
            Dot::new(A, 1),
            Dot::new(A, 2),
            Dot::new(B, 1),
            Dot::new(B, 2),
        ]
        .into_iter()
        .collect();
        assert_eq!(xy, z);
        assert_eq!(xy.cloud_len(), 0);
        xy.validate().unwrap();
    }

    #[test]
    fn next_dot_skips_cloud() {
        let c: CausalContext = [Dot::new(A, 5)].into_iter().collect();
        assert_eq!(c.next_dot(A), Dot::new(A, 6));
    }
}
