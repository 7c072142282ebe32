//! Dot stores and causal CRDTs (Almeida et al. 2018, section 6).
//!
//! A dot store holds dots (and values tagged by them) but no context of its own;
//! [`Causal`] pairs a store with the context of what it has seen. Joining two
//! causal states keeps a dot when both sides have it, or when one side has it and
//! the other has not seen it: a dot the other side saw and dropped was removed.
//! Removal therefore needs no tombstone, only a context.
//!
//! The causal map, with its dot index, lives in `causal_map`.

use crate::{CausalContext, Dot, InvalidState, Lattice};
use serde::{Deserialize, Serialize};
use smallvec::{smallvec, SmallVec};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt::Debug;

mod causal_map;
pub use causal_map::CausalMap;

/// A store of dots whose join is driven by the causal contexts beside it.
pub trait DotStore: Clone + Default + PartialEq + Debug {
    /// Whether the store holds no dot (the bottom element).
    fn is_bottom(&self) -> bool;

    /// Calls `f` with every dot held in the store.
    fn for_each_dot(&self, f: &mut dyn FnMut(Dot));

    /// Keeps only the dots (and what they tag) for which `keep` holds; nested
    /// stores left bottom are dropped.
    fn retain_dots(&mut self, keep: &mut dyn FnMut(&Dot) -> bool);

    /// Joins `other` (with context `other_ctx`) into `self` (with context `ctx`).
    /// The caller joins the contexts afterwards.
    fn join_store(&mut self, ctx: &CausalContext, other: Self, other_ctx: &CausalContext);

    /// Checks that every dot is in `ctx` (and, for maps, that no nested store
    /// is bottom).
    fn validate_in(&self, ctx: &CausalContext) -> Result<(), InvalidState> {
        let mut outside = false;
        self.for_each_dot(&mut |d| outside |= !ctx.contains(&d));
        if outside {
            Err(InvalidState(
                "a dot in the store is missing from its context",
            ))
        } else {
            Ok(())
        }
    }

    /// Whether a lookup of one dot ([`DotStore::holds_dot`]) is cheap: true
    /// for the leaf stores, false for nested maps (it walks them).
    const FLAT: bool = false;

    /// Whether the store holds `dot`.
    fn holds_dot(&self, dot: &Dot) -> bool {
        let mut held = false;
        self.for_each_dot(&mut |d| held |= d == *dot);
        held
    }

    /// How many dots the store holds.
    fn dot_count(&self) -> u64 {
        let mut n = 0u64;
        self.for_each_dot(&mut |_| n += 1);
        n
    }

    /// The dots held in the store, as a context.
    fn dots(&self) -> CausalContext {
        let mut c = CausalContext::new();
        self.for_each_dot(&mut |d| c.insert(d));
        c
    }
}

/// A set of dots: the presence of something, witnessed by the updates that added
/// it. Kept sorted, inline for up to two dots (an element usually has one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DotSet(SmallVec<[Dot; 2]>);

impl DotSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of one dot.
    pub fn one(dot: Dot) -> Self {
        DotSet(smallvec![dot])
    }

    /// Whether `dot` is in the set.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.0.binary_search(dot).is_ok()
    }

    /// Adds `dot`.
    pub fn insert(&mut self, dot: Dot) {
        if let Err(i) = self.0.binary_search(&dot) {
            self.0.insert(i, dot);
        }
    }

    /// The dots, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Dot> {
        self.0.iter()
    }

    /// How many dots.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for DotSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_slice().serialize(s)
    }
}

/// Decodes straight into the inline vector (no heap allocation for the usual
/// one or two dots), refusing dots out of order.
impl<'de> Deserialize<'de> for DotSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Dots;
        impl<'de> serde::de::Visitor<'de> for Dots {
            type Value = DotSet;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sorted sequence of dots")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<DotSet, A::Error> {
                let mut dots: SmallVec<[Dot; 2]> = SmallVec::new();
                while let Some(d) = seq.next_element::<Dot>()? {
                    if dots.last().is_some_and(|last| *last >= d) {
                        return Err(serde::de::Error::custom("dot set is not sorted"));
                    }
                    dots.push(d);
                }
                Ok(DotSet(dots))
            }
        }
        d.deserialize_seq(Dots)
    }
}

impl DotStore for DotSet {
    fn is_bottom(&self) -> bool {
        self.0.is_empty()
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(Dot)) {
        for d in &self.0 {
            f(*d);
        }
    }

    const FLAT: bool = true;

    fn holds_dot(&self, dot: &Dot) -> bool {
        self.0.contains(dot)
    }

    fn retain_dots(&mut self, keep: &mut dyn FnMut(&Dot) -> bool) {
        self.0.retain(|d| keep(d));
    }

    fn join_store(&mut self, ctx: &CausalContext, other: Self, other_ctx: &CausalContext) {
        self.0
            .retain(|d| other.contains(d) || !other_ctx.contains(d));
        for d in other.0 {
            if !ctx.contains(&d) {
                self.insert(d);
            }
        }
    }
}

/// A map from dots to immutable values: each update writes one value under its own dot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DotFun<V>(pub BTreeMap<Dot, V>);

impl<V> Default for DotFun<V> {
    fn default() -> Self {
        DotFun(BTreeMap::new())
    }
}

impl<V: Clone + PartialEq + Debug> DotStore for DotFun<V> {
    fn is_bottom(&self) -> bool {
        self.0.is_empty()
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(Dot)) {
        for d in self.0.keys() {
            f(*d);
        }
    }

    const FLAT: bool = true;

    fn holds_dot(&self, dot: &Dot) -> bool {
        self.0.contains_key(dot)
    }

    fn retain_dots(&mut self, keep: &mut dyn FnMut(&Dot) -> bool) {
        self.0.retain(|d, _| keep(d));
    }

    fn join_store(&mut self, ctx: &CausalContext, other: Self, other_ctx: &CausalContext) {
        self.0
            .retain(|d, _| other.0.contains_key(d) || !other_ctx.contains(d));
        for (d, v) in other.0 {
            if !ctx.contains(&d) {
                self.0.insert(d, v);
            }
        }
    }
}

/// A map from keys to nested dot stores; a key is present while its store is not bottom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DotMap<K: Ord, S>(pub BTreeMap<K, S>);

/// A map's entries as decoded, in the order they are encoded in: keys
/// strictly increasing (anything else is refused). A [`DotMap`] decodes
/// through it and builds its tree in one pass rather than by one insertion
/// per key; the parts of a state are decoded into it and joined first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortedEntries<K, S>(pub Vec<(K, S)>);

impl<'de, K: Ord + Deserialize<'de>, S: Deserialize<'de>> Deserialize<'de> for SortedEntries<K, S> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct InOrder<K, S>(std::marker::PhantomData<(K, S)>);
        impl<'de, K: Ord + Deserialize<'de>, S: Deserialize<'de>> serde::de::Visitor<'de>
            for InOrder<K, S>
        {
            type Value = SortedEntries<K, S>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map with its keys in increasing order")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                // The length is untrusted: preallocate only a little.
                let mut entries: Vec<(K, S)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
                while let Some((k, v)) = map.next_entry::<K, S>()? {
                    if entries.last().is_some_and(|(last, _)| *last >= k) {
                        return Err(serde::de::Error::custom(
                            "map keys are not in increasing order",
                        ));
                    }
                    entries.push((k, v));
                }
                Ok(SortedEntries(entries))
            }
        }
        d.deserialize_map(InOrder(std::marker::PhantomData))
    }
}

impl<'de, K: Ord + Deserialize<'de>, S: Deserialize<'de>> Deserialize<'de> for DotMap<K, S> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Sorted already: `collect` builds the tree in bulk.
        Ok(DotMap(
            SortedEntries::deserialize(d)?.0.into_iter().collect(),
        ))
    }
}

impl<K: Ord, S> Default for DotMap<K, S> {
    fn default() -> Self {
        DotMap(BTreeMap::new())
    }
}

impl<K: Ord + Clone + Debug, S: DotStore> DotStore for DotMap<K, S> {
    fn is_bottom(&self) -> bool {
        self.0.is_empty()
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(Dot)) {
        for s in self.0.values() {
            s.for_each_dot(f);
        }
    }

    fn retain_dots(&mut self, keep: &mut dyn FnMut(&Dot) -> bool) {
        self.0.retain(|_, s| {
            s.retain_dots(keep);
            !s.is_bottom()
        });
    }

    fn join_store(&mut self, ctx: &CausalContext, mut other: Self, other_ctx: &CausalContext) {
        // Keys only here: the other side may have removed dots it saw.
        self.0.retain(|k, s| {
            let theirs = other.0.remove(k).unwrap_or_default();
            s.join_store(ctx, theirs, other_ctx);
            !s.is_bottom()
        });
        // Keys only there: keep what this side has not seen.
        for (k, theirs) in other.0 {
            let mut s = S::default();
            s.join_store(ctx, theirs, other_ctx);
            if !s.is_bottom() {
                self.0.insert(k, s);
            }
        }
    }

    fn validate_in(&self, ctx: &CausalContext) -> Result<(), InvalidState> {
        for s in self.0.values() {
            if s.is_bottom() {
                return Err(InvalidState("a map entry holds an empty store"));
            }
            s.validate_in(ctx)?;
        }
        Ok(())
    }
}

/// A dot store with the causal context of everything it has seen: a complete
/// causal CRDT state, or a delta of one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Causal<S> {
    /// The live dots and their values.
    pub store: S,
    /// Every dot this state has seen, live or removed.
    pub ctx: CausalContext,
}

impl<S: Default> Default for Causal<S> {
    fn default() -> Self {
        Causal {
            store: S::default(),
            ctx: CausalContext::new(),
        }
    }
}

impl<S: DotStore> Causal<S> {
    /// Checks the invariants a decoded state must hold.
    pub fn validate(&self) -> Result<(), InvalidState> {
        self.ctx.validate()?;
        self.store.validate_in(&self.ctx)
    }
}

impl<S: DotStore> Lattice for Causal<S> {
    fn join(&mut self, other: Self) {
        self.store.join_store(&self.ctx, other.store, &other.ctx);
        self.ctx.join(&other.ctx);
    }
}

/// The context of a stripped delta, for a state with context `ctx` whose live
/// dots `live_range(r, n)` lists (those of replica `r` up to `n`) and `is_live`
/// tests. It holds the delta's context dots that the state has not seen, and
/// those that remove a dot the state holds; never a dot the state holds that
/// the delta holds too, which would remove it. A whole version-vector range is
/// kept when that is safe; otherwise it is expanded dot by dot.
pub(crate) fn strip_context(
    ctx: &CausalContext,
    delta_ctx: &CausalContext,
    held_by_delta: &CausalContext,
    live_range: impl Fn(crate::ReplicaId, u64) -> Vec<Dot>,
    is_live: impl Fn(&Dot) -> bool,
) -> CausalContext {
    let mut out = CausalContext::new();
    for (r, n) in delta_ctx.vector() {
        let live = live_range(r, n);
        if live.iter().all(|d| !held_by_delta.contains(d)) {
            if n > ctx.version_of(r) || !live.is_empty() {
                out.extend_vector(r, n);
            }
        } else {
            for c in ctx.version_of(r) + 1..=n {
                let d = Dot::new(r, c);
                if !ctx.contains(&d) {
                    out.insert(d);
                }
            }
            for d in live {
                if !held_by_delta.contains(&d) {
                    out.insert(d);
                }
            }
        }
    }
    for d in delta_ctx.cloud() {
        if !ctx.contains(d) || (is_live(d) && !held_by_delta.contains(d)) {
            out.insert(*d);
        }
    }
    out
}
