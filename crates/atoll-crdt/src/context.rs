//! The causal context: which dots a state has seen.

use crate::{Dot, InvalidState, ReplicaId};
use serde::{Deserialize, Deserializer, Serialize};
use smallvec::SmallVec;

/// A set of dots, kept as a version vector (every dot `1..=n` of a replica) plus a
/// cloud of dots that are not yet contiguous with it.
///
/// The representation is canonical: after every operation the cloud holds no dot
/// that the vector covers or that could extend it, and the vector holds no zero
/// entry, so two contexts with the same dots are equal as values.
///
/// Both parts are sorted vectors, inline while small, so that the context of a
/// delta (a dot or two) needs no allocation and lookups are binary searches.
/// Under causal delivery the cloud stays small; inserting into a cloud of `c`
/// dots costs O(c).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CausalContext {
    vv: SmallVec<[(ReplicaId, u64); 2]>,
    cloud: SmallVec<[Dot; 2]>,
}

impl<'de> Deserialize<'de> for CausalContext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            vv: Vec<(ReplicaId, u64)>,
            cloud: Vec<Dot>,
        }
        let raw = Raw::deserialize(d)?;
        if raw.vv.windows(2).any(|w| w[0].0 >= w[1].0) || raw.cloud.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(serde::de::Error::custom("causal context is not sorted"));
        }
        Ok(CausalContext {
            vv: SmallVec::from_vec(raw.vv),
            cloud: SmallVec::from_vec(raw.cloud),
        })
    }
}

impl CausalContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    fn vv_pos(&self, replica: ReplicaId) -> Result<usize, usize> {
        self.vv.binary_search_by_key(&replica, |e| e.0)
    }

    /// Whether `dot` is in the context.
    pub fn contains(&self, dot: &Dot) -> bool {
        match self.vv_pos(dot.replica) {
            Ok(i) if dot.counter <= self.vv[i].1 => true,
            _ => !self.cloud.is_empty() && self.cloud.binary_search(dot).is_ok(),
        }
    }

    /// Whether the context holds no dot.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// Adds one dot.
    pub fn insert(&mut self, dot: Dot) {
        if dot.counter == 0 || self.contains(&dot) {
            return;
        }
        match self.vv_pos(dot.replica) {
            Ok(i) if dot.counter == self.vv[i].1 + 1 => {
                self.vv[i].1 = dot.counter;
                self.compact_replica(i);
            }
            Err(i) if dot.counter == 1 => {
                self.vv.insert(i, (dot.replica, 1));
                self.compact_replica(i);
            }
            _ => {
                if let Err(at) = self.cloud.binary_search(&dot) {
                    self.cloud.insert(at, dot);
                }
            }
        }
    }

    /// The next dot `replica` should issue: one past every dot of it seen here.
    pub fn next_dot(&self, replica: ReplicaId) -> Dot {
        let vv = self.version_of(replica);
        let end = self.cloud.partition_point(|d| d.replica <= replica);
        let cloud = match end.checked_sub(1).map(|i| self.cloud[i]) {
            Some(d) if d.replica == replica => d.counter,
            _ => 0,
        };
        Dot::new(replica, vv.max(cloud) + 1)
    }

    /// The highest counter of `replica` that the vector covers contiguously.
    pub fn version_of(&self, replica: ReplicaId) -> u64 {
        self.vv_pos(replica).map_or(0, |i| self.vv[i].1)
    }

    /// Adds every dot of `other`.
    pub fn join(&mut self, other: &CausalContext) {
        for &(r, n) in &other.vv {
            match self.vv_pos(r) {
                Ok(i) => {
                    if n > self.vv[i].1 {
                        self.vv[i].1 = n;
                        self.compact_replica(i);
                    }
                }
                Err(i) => {
                    self.vv.insert(i, (r, n));
                    self.compact_replica(i);
                }
            }
        }
        for d in &other.cloud {
            self.insert(*d);
        }
    }

    /// Adds every dot `1..=n` of `replica`.
    pub fn extend_vector(&mut self, replica: ReplicaId, n: u64) {
        if n == 0 {
            return;
        }
        match self.vv_pos(replica) {
            Ok(i) => {
                if n > self.vv[i].1 {
                    self.vv[i].1 = n;
                    self.compact_replica(i);
                }
            }
            Err(i) => {
                self.vv.insert(i, (replica, n));
                self.compact_replica(i);
            }
        }
    }

    /// The version vector: every dot `1..=n` of each replica.
    pub fn vector(&self) -> impl Iterator<Item = (ReplicaId, u64)> + '_ {
        self.vv.iter().copied()
    }

    /// Whether no dot is in both contexts.
    pub fn is_disjoint(&self, other: &CausalContext) -> bool {
        for &(r, n) in &other.vv {
            // `other` holds r's dots 1..=n: is any of them here?
            if self.version_of(r) > 0 {
                return false;
            }
            let i = self.cloud.partition_point(|d| d.replica < r);
            if self
                .cloud
                .get(i)
                .is_some_and(|d| d.replica == r && d.counter <= n)
            {
                return false;
            }
        }
        other.cloud.iter().all(|d| !self.contains(d))
    }

    /// How many dots the context holds.
    pub fn dot_count(&self) -> u128 {
        self.vv.iter().map(|&(_, n)| u128::from(n)).sum::<u128>() + self.cloud.len() as u128
    }

    /// The dots outside the version vector.
    pub fn cloud(&self) -> impl Iterator<Item = &Dot> + '_ {
        self.cloud.iter()
    }

    /// Number of dots held in the cloud (a measure of how fragmented it is).
    pub fn cloud_len(&self) -> usize {
        self.cloud.len()
    }

    /// Every dot in the context, in order. Use only on small contexts (deltas):
    /// a version vector entry `n` yields `n` dots.
    pub fn iter_dots(&self) -> impl Iterator<Item = Dot> + '_ {
        let ranges = self
            .vv
            .iter()
            .flat_map(|&(r, n)| (1..=n).map(move |c| Dot::new(r, c)));
        ranges.chain(self.cloud.iter().copied())
    }

    /// Moves the cloud dots of the replica at `vv[i]` that the vector covers or
    /// reaches into it.
    fn compact_replica(&mut self, i: usize) {
        let (replica, mut n) = self.vv[i];
        let start = self.cloud.partition_point(|d| d.replica < replica);
        let mut end = start;
        while end < self.cloud.len()
            && self.cloud[end].replica == replica
            && self.cloud[end].counter <= n + 1
        {
            n = n.max(self.cloud[end].counter);
            end += 1;
        }
        if end > start {
            self.cloud.drain(start..end);
        }
        self.vv[i].1 = n;
    }

    /// Checks the canonical form; decoded contexts must pass it.
    pub fn validate(&self) -> Result<(), InvalidState> {
        if self.vv.iter().any(|&(_, n)| n == 0) {
            return Err(InvalidState("version vector holds a zero entry"));
        }
        if self.vv.windows(2).any(|w| w[0].0 >= w[1].0)
            || self.cloud.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(InvalidState("causal context is not sorted"));
        }
        for d in &self.cloud {
            if d.counter == 0 {
                return Err(InvalidState("dot with counter 0"));
            }
            if d.counter <= self.version_of(d.replica) + 1 {
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
    fn disjointness_sees_ranges_and_clouds() {
        let ctx = |dots: &[(ReplicaId, u64)]| -> CausalContext {
            dots.iter().map(|&(r, c)| Dot::new(r, c)).collect()
        };
        let a13 = ctx(&[(A, 1), (A, 2), (A, 3)]);
        assert!(a13.is_disjoint(&ctx(&[(A, 5)])));
        assert!(!a13.is_disjoint(&ctx(&[(A, 2)])));
        assert!(a13.is_disjoint(&ctx(&[(B, 1), (B, 2)])));
        let a5 = ctx(&[(A, 5)]);
        assert!(a5.is_disjoint(&ctx(&[(A, 1), (A, 2), (A, 3), (A, 4)])));
        assert!(!a5.is_disjoint(&ctx(&[(A, 1), (A, 2), (A, 3), (A, 4), (A, 5)])));
        assert!(!ctx(&[(A, 1)]).is_disjoint(&ctx(&[(A, 1), (A, 2)])));
        assert!(CausalContext::new().is_disjoint(&a13));
        assert_eq!(a13.dot_count() + a5.dot_count(), 4);
    }

    #[test]
    fn next_dot_skips_cloud() {
        let c: CausalContext = [Dot::new(A, 5)].into_iter().collect();
        assert_eq!(c.next_dot(A), Dot::new(A, 6));
    }
}
