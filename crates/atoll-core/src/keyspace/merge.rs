//! Merges: a remote delta or state is validated and joined, and what was new
//! in it is logged.

use super::*;

impl<B: Backend> Keyspace<B> {
    /// Joins a delta (or whole state) received from replica `origin` into the
    /// variable `name` of `kind`, creating it if needed. The bytes are untrusted:
    /// they are size-checked, decoded and validated before anything changes, and
    /// last-writer-wins timestamps too far ahead of `now_ms` are refused.
    ///
    /// Returns the change, or `None` if the delta held nothing new (then
    /// nothing is written).
    pub fn merge(
        &mut self,
        origin: ReplicaId,
        name: &str,
        kind: Kind,
        delta: &[u8],
        now_ms: u64,
    ) -> Result<Option<Applied>> {
        validate_name(name)?;
        let state = codec::decode(delta, self.config.max_delta_len);
        self.merge_decoded(origin, name, kind, state, delta.into(), now_ms)
    }

    /// [`Keyspace::merge`] for a delta decoded (and validated) ahead, as
    /// [`crate::protocol::Decoder`] does: `decoded` is what decoding
    /// `encoded` gave. Given owned, the encoding is logged without a copy.
    pub(crate) fn merge_decoded(
        &mut self,
        origin: ReplicaId,
        name: &str,
        kind: Kind,
        decoded: std::result::Result<State, codec::DecodeError>,
        encoded: std::borrow::Cow<'_, [u8]>,
        now_ms: u64,
    ) -> Result<Option<Applied>> {
        validate_name(name)?;
        let state = decoded.map_err(|source| Error::BadDelta {
            name: name.to_string(),
            source,
        })?;
        self.merge_state(origin, name, kind, state, Some(encoded), now_ms)
    }

    /// [`Keyspace::merge`] for a delta already decoded and validated (and
    /// its name checked). `encoded`, if given, is the delta's encoding as it
    /// came: a delta nothing of which was seen here is logged in it as is
    /// (without a copy, if owned).
    pub fn merge_state(
        &mut self,
        origin: ReplicaId,
        name: &str,
        kind: Kind,
        delta: State,
        encoded: Option<std::borrow::Cow<'_, [u8]>>,
        now_ms: u64,
    ) -> Result<Option<Applied>> {
        if delta.kind() != kind {
            return Err(Error::TypeMismatch {
                name: name.to_string(),
                expected: kind,
                found: delta.kind(),
            });
        }
        fixed_kind(name, kind)?;
        self.check_writable()?;
        self.evict_over_budget();
        if let Some(ts) = delta.max_timestamp() {
            self.clock
                .check(ts, now_ms)
                .map_err(|source| Error::ClockSkew {
                    name: name.to_string(),
                    source,
                })?;
        }
        let created = self.load(name)?.is_none();
        match self.vars.get(name) {
            Some(var) if var.meta.kind != kind => {
                let held = var.meta.kind;
                return self.merge_conflict(origin, name, held, delta, encoded, now_ms);
            }
            _ => {}
        }
        let var = super::touch(&mut self.vars, &mut self.versions, name, kind);
        // Redundancy removal: log (and so forward) only what is new here. By
        // the strip law (state ⊔ strip(δ) = state ⊔ δ, a property test), an
        // empty remainder means the delta changes nothing. Both steps cost
        // O(delta), not O(state). A delta none of which was seen here is all
        // new (also a property test): it is logged in the encoding it came in.
        let (delta, as_received) = match encoded {
            Some(bytes) if var.state.has_seen_none_of(&delta) => (delta, Some(bytes)),
            _ => (var.state.strip(delta), None),
        };
        if delta.is_bottom() {
            if created {
                self.forget(name);
            }
            return Ok(None);
        }
        // Encoded before it is joined, so that the join can take it whole.
        let logged = match as_received {
            Some(bytes) => bytes.into_owned(),
            None => codec::encode(&delta),
        };
        if let Some(ts) = delta.max_timestamp() {
            self.clock.witness(ts);
        }
        var.state.join(delta).expect("kinds checked above");
        let seq = self.persist(name, created, logged, origin)?;
        Ok(Some(Applied {
            name: name.to_string(),
            kind,
            seq,
            origin,
        }))
    }
}
