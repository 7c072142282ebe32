//! Dot stores and causal CRDTs (Almeida et al. 2018, section 6).
//!
//! A dot store holds dots (and values tagged by them) but no context of its own;
//! [`Causal`] pairs a store with the context of what it has seen. Joining two
//! causal states keeps a dot when both sides have it, or when one side has it and
//! the other has not seen it: a dot the other side saw and dropped was removed.
//! Removal therefore needs no tombstone, only a context.
//!
//! About 750 lines: the three dot stores and the causal map, whose join,
//! strip and validation lean on each other's internals. `CausalMap` (its
//! dot index, bulk assembly from parts, join and codec) is half of it, and
//! is the next to move to a file of its own.

use crate::{CausalContext, Dot, InvalidState, Lattice};
use serde::{Deserialize, Serialize};
use smallvec::{smallvec, SmallVec};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt::Debug;

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

/// A causal map state, `Causal<DotMap<K, S>>`, with an index from each live dot
/// to the key holding it, so that joining a delta touches only the keys the
/// delta's store or context names, not every key of the state.
///
/// The index is derived: it is not encoded, and is rebuilt on decode. The
/// encoding is exactly that of `Causal<DotMap<K, S>>`.
#[derive(Clone, Debug)]
pub struct CausalMap<K: Ord, S> {
    store: DotMap<K, S>,
    ctx: CausalContext,
    /// Built on the first join into this state, so deltas never pay for one.
    index: Option<BTreeMap<Dot, K>>,
}

impl<K: Ord, S> Default for CausalMap<K, S> {
    fn default() -> Self {
        CausalMap {
            store: DotMap::default(),
            ctx: CausalContext::new(),
            index: None,
        }
    }
}

impl<K: Ord + Clone + Debug, S: DotStore> CausalMap<K, S> {
    /// A state (or delta) from its store and context.
    pub fn from_parts(store: DotMap<K, S>, ctx: CausalContext) -> Self {
        CausalMap {
            store,
            ctx,
            index: None,
        }
    }

    fn build_index(store: &DotMap<K, S>) -> BTreeMap<Dot, K> {
        let mut index = BTreeMap::new();
        for (k, s) in &store.0 {
            s.for_each_dot(&mut |d| {
                index.insert(d, k.clone());
            });
        }
        index
    }

    /// Whether a delta with this store and context removes nothing: its
    /// context holds no dot but those of its store (it only adds). Its join
    /// then touches only the keys it holds, and needs no index to find others.
    /// Relies on the store's dots being in the context (checked on decode).
    fn adds_only(store: &DotMap<K, S>, ctx: &CausalContext) -> bool {
        u128::from(store.dot_count()) == ctx.dot_count()
    }

    /// Builds the dot index now (`true`), or drops it (`false`) until a join
    /// needs one. Tests compare the paths with and without it.
    #[doc(hidden)]
    pub fn set_index(&mut self, on: bool) {
        self.index = on.then(|| Self::build_index(&self.store));
    }

    /// Encodes the entries after `after`, in key order, as postcard encodes
    /// a map (their count, then each key and store), adding entries until
    /// the encoding reaches `max_bytes` (it holds at least one entry, if any
    /// is left). Returns the encoding, the last key in it, and whether no
    /// entry is left after it. See [`crate::variable::State::encode_part`].
    pub(crate) fn encode_entries(
        &self,
        after: Option<&K>,
        max_bytes: usize,
    ) -> (Vec<u8>, Option<&K>, bool)
    where
        K: crate::wire::Wire,
        S: crate::wire::Wire,
    {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut entries = self.store.0.range((lower, Bound::Unbounded)).peekable();
        let mut body = Vec::with_capacity(max_bytes.min(1 << 20) + 256);
        let (mut count, mut last) = (0usize, None);
        while count == 0 || body.len() < max_bytes {
            let Some((k, s)) = entries.next() else { break };
            crate::wire::put_entry(k, s, &mut body);
            count += 1;
            last = Some(k);
        }
        let end = entries.peek().is_none();
        let mut out = Vec::with_capacity(body.len() + 10);
        crate::wire::put_varint(count as u64, &mut out);
        out.extend_from_slice(&body);
        (out, last, end)
    }

    /// Joins the parts of one state, in order, back into it: each part's
    /// entries come after the previous part's, and only the last carries the
    /// context. The result is for the caller to validate.
    pub(crate) fn assemble(
        parts: Vec<(SortedEntries<K, S>, CausalContext)>,
    ) -> Result<Self, InvalidState> {
        let n = parts.len();
        let mut entries: Vec<(K, S)> = Vec::with_capacity(parts.iter().map(|p| p.0 .0.len()).sum());
        let mut ctx = CausalContext::new();
        for (i, (part, part_ctx)) in parts.into_iter().enumerate() {
            if i + 1 < n && part_ctx != CausalContext::new() {
                return Err(InvalidState(
                    "a state part before the last carries a context",
                ));
            }
            if let (Some((last, _)), Some((first, _))) = (entries.last(), part.0.first()) {
                if first <= last {
                    return Err(InvalidState("state parts are out of key order"));
                }
            }
            entries.extend(part.0);
            if i + 1 == n {
                ctx = part_ctx;
            }
        }
        // In key order already: `collect` builds the tree in bulk.
        Ok(Self::from_parts(DotMap(entries.into_iter().collect()), ctx))
    }

    /// The live entries.
    pub fn store(&self) -> &DotMap<K, S> {
        &self.store
    }

    /// Every dot this state has seen.
    pub fn ctx(&self) -> &CausalContext {
        &self.ctx
    }

    /// Checks the invariants a decoded state must hold.
    pub fn validate(&self) -> Result<(), InvalidState> {
        self.ctx.validate()?;
        self.store.validate_in(&self.ctx)
    }
}

impl<K: Ord + Clone + Debug, S: DotStore> CausalMap<K, S> {
    /// What of `delta` this state does not already have: the stored dots it has
    /// not seen, and the context dots it has not seen or that remove dots it
    /// still holds (redundancy removal, Enes et al. 2019). Joining the result
    /// gives the same state as joining `delta`.
    pub fn strip(&mut self, mut delta: Self) -> Self {
        if self.index.is_none() && S::FLAT && Self::adds_only(&delta.store, &delta.ctx) {
            if self.ctx.is_disjoint(&delta.ctx) {
                // Nothing of it was seen here: all of it is new.
                return delta;
            }
            let held_by_delta = delta.store.dots();
            // Without an index: the state's live dots in the delta's context
            // are all held by the delta (it removes nothing), at the same keys
            // (a dot tags one key), so looking up the delta's own keys finds them.
            let mut live = Vec::new();
            for (k, theirs) in &delta.store.0 {
                if let Some(mine) = self.store.0.get(k) {
                    theirs.for_each_dot(&mut |d| {
                        if mine.holds_dot(&d) {
                            live.push(d);
                        }
                    });
                }
            }
            live.sort_unstable();
            let ctx = strip_context(
                &self.ctx,
                &delta.ctx,
                &held_by_delta,
                |r, n| {
                    let from = live.partition_point(|d| *d < Dot::new(r, 1));
                    let to = live.partition_point(|d| *d <= Dot::new(r, n));
                    live[from..to].to_vec()
                },
                |d| live.binary_search(d).is_ok(),
            );
            let seen = &self.ctx;
            delta.store.retain_dots(&mut |d| !seen.contains(d));
            return CausalMap::from_parts(delta.store, ctx);
        }
        let held_by_delta = delta.store.dots();
        let index = self
            .index
            .get_or_insert_with(|| Self::build_index(&self.store));
        let ctx = strip_context(
            &self.ctx,
            &delta.ctx,
            &held_by_delta,
            |r, n| {
                index
                    .range(Dot::new(r, 1)..=Dot::new(r, n))
                    .map(|(d, _)| *d)
                    .collect()
            },
            |d| index.contains_key(d),
        );
        let seen = &self.ctx;
        delta.store.retain_dots(&mut |d| !seen.contains(d));
        CausalMap::from_parts(delta.store, ctx)
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

impl<K: Ord, S: PartialEq> PartialEq for CausalMap<K, S> {
    fn eq(&self, other: &Self) -> bool {
        // The index is a function of the store.
        self.store == other.store && self.ctx == other.ctx
    }
}

impl<K: Ord, S: Eq> Eq for CausalMap<K, S> {}

impl<K: Ord + Clone + Debug, S: DotStore> Lattice for CausalMap<K, S> {
    fn join(&mut self, other: Self) {
        let CausalMap {
            store: theirs,
            ctx: their_ctx,
            ..
        } = other;
        if self.index.is_none() && Self::adds_only(&theirs, &their_ctx) {
            // Only the keys the delta holds can change, and no index is kept up.
            if self.ctx.is_disjoint(&their_ctx) {
                // Nothing of it was seen here: every entry it holds is kept
                // whole, and only keys on both sides need a join.
                if self.store.0.is_empty() {
                    self.store = theirs;
                } else {
                    for (k, theirs_k) in theirs.0 {
                        match self.store.0.entry(k) {
                            Entry::Occupied(mut mine) => {
                                mine.get_mut().join_store(&self.ctx, theirs_k, &their_ctx)
                            }
                            Entry::Vacant(slot) => {
                                slot.insert(theirs_k);
                            }
                        }
                    }
                }
                self.ctx.join(&their_ctx);
                return;
            }
            for (k, theirs_k) in theirs.0 {
                match self.store.0.entry(k) {
                    Entry::Occupied(mut mine) => {
                        mine.get_mut().join_store(&self.ctx, theirs_k, &their_ctx);
                        if mine.get().is_bottom() {
                            mine.remove();
                        }
                    }
                    Entry::Vacant(slot) => {
                        let mut mine = S::default();
                        mine.join_store(&self.ctx, theirs_k, &their_ctx);
                        if !mine.is_bottom() {
                            slot.insert(mine);
                        }
                    }
                }
            }
            self.ctx.join(&their_ctx);
            return;
        }
        let index = self
            .index
            .get_or_insert_with(|| Self::build_index(&self.store));
        // The keys whose entries can change: those the other side holds, and
        // those holding a dot the other side has seen (it may have removed it).
        let mut seen_only: SmallVec<[K; 4]> = SmallVec::new();
        for (r, n) in their_ctx.vector() {
            for (_, k) in index.range(Dot::new(r, 1)..=Dot::new(r, n)) {
                if !theirs.0.contains_key(k) {
                    seen_only.push(k.clone());
                }
            }
        }
        for d in their_ctx.cloud() {
            if let Some(k) = index.get(d) {
                if !theirs.0.contains_key(k) {
                    seen_only.push(k.clone());
                }
            }
        }
        seen_only.sort_unstable();
        seen_only.dedup();
        let entries = theirs
            .0
            .into_iter()
            .chain(seen_only.into_iter().map(|k| (k, S::default())));
        for (k, theirs_k) in entries {
            match self.store.0.get_mut(&k) {
                Some(mine) => {
                    mine.for_each_dot(&mut |d| {
                        index.remove(&d);
                    });
                    mine.join_store(&self.ctx, theirs_k, &their_ctx);
                    if mine.is_bottom() {
                        self.store.0.remove(&k);
                    } else {
                        mine.for_each_dot(&mut |d| {
                            index.insert(d, k.clone());
                        });
                    }
                }
                None => {
                    let mut mine = S::default();
                    mine.join_store(&self.ctx, theirs_k, &their_ctx);
                    if !mine.is_bottom() {
                        mine.for_each_dot(&mut |d| {
                            index.insert(d, k.clone());
                        });
                        self.store.0.insert(k, mine);
                    }
                }
            }
        }
        self.ctx.join(&their_ctx);
    }
}

#[derive(Serialize)]
struct CausalMapRef<'a, K: Ord, S> {
    store: &'a DotMap<K, S>,
    ctx: &'a CausalContext,
}

impl<K: Ord + Serialize, S: Serialize> Serialize for CausalMap<K, S> {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        CausalMapRef {
            store: &self.store,
            ctx: &self.ctx,
        }
        .serialize(s)
    }
}

impl<'de, K, S> Deserialize<'de> for CausalMap<K, S>
where
    K: Ord + Clone + Debug + Deserialize<'de>,
    S: DotStore + Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let c = Causal::<DotMap<K, S>>::deserialize(d)?;
        Ok(CausalMap::from_parts(c.store, c.ctx))
    }
}
