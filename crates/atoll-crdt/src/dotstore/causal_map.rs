//! The causal map: a `Causal<DotMap<K, S>>` with a dot index, so that a
//! join touches only the keys a delta names; its bulk assembly from parts,
//! join, strip and codec.

use super::*;

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
