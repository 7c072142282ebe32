//! Checkpoints and the log's length: changed states are written with the
//! sequence they include in one atomic batch (with their entries in the
//! index of changes), and runs of the log every peer acknowledged are
//! joined (coalesced) or dropped. Flushes, shared ones (group commit)
//! too.

use super::*;

impl<B: Backend> Keyspace<B> {
    /// Writes the changed states and the checkpoint sequence in one batch, then
    /// drops the log entries every peer acknowledged (see
    /// `set_acked_floor`) or that the retention bound forces out.
    /// The checkpoint is flushed only before entries are dropped: until then,
    /// losing it in a crash just means replaying more of the log.
    pub fn checkpoint(&mut self) -> Result<()> {
        let last = self.storage.last_seq();
        if !(self.dirty.is_empty() && self.storage.checkpoint_seq() == last) {
            let mut states = Vec::with_capacity(self.dirty.len());
            let mut replaced: Vec<(u64, String)> = Vec::new();
            for (n, origin) in &self.dirty {
                if let Some(v) = self.vars.get(n) {
                    states.push((n.clone(), codec::encode(&v.state), *origin));
                    // Its entry of the same origin, if any, gives way.
                    if let Some((seq, _)) = v.indexed.iter().find(|(_, o)| o == origin) {
                        replaced.push((*seq, n.clone()));
                    }
                }
            }
            let sizes: Vec<usize> = states.iter().map(|(_, s, _)| s.len()).collect();
            self.storage.checkpoint(states, replaced, last)?;
            let mut sizes = sizes.into_iter();
            for (n, origin) in &self.dirty {
                if let Some(v) = self.vars.get_mut(n) {
                    v.indexed.retain(|(_, o)| o != origin);
                    v.indexed.push((last, *origin));
                    let bytes = sizes
                        .next()
                        .map_or(v.bytes, |b| super::recovery::resident_size(n, b));
                    self.resident_bytes = (self.resident_bytes + bytes).saturating_sub(v.bytes);
                    v.bytes = bytes;
                }
            }
            self.dirty.clear();
            self.since_checkpoint = 0;
        }
        // Only flushed entries: a run moved past the flush would be held back
        // from peers until the next one. And only what every connected peer
        // acknowledged (see `set_coalesce_floor`).
        let floor = self.coalesce_floor.unwrap_or(u64::MAX);
        self.coalesce(last.min(self.flushed_through).min(floor))?;
        let forced = last.saturating_sub(self.config.log_retain);
        let through = self.acked_floor.map_or(forced, |acked| acked.max(forced));
        if self
            .storage
            .first_seq()?
            .is_some_and(|first| first <= through)
        {
            // The checkpoint must be on disk before the entries it replaces go.
            self.storage.flush()?;
            self.flushed_through = last;
            self.storage.truncate_log(through)?;
        }
        let forget = last.saturating_sub(self.config.changes_retain);
        if forget > self.storage.changes_from() {
            self.storage.forget_changes_through(forget)?;
        }
        Ok(())
    }

    /// Joins runs of log entries written since the last call, through
    /// `through` (covered by a checkpoint, so never replayed): entries of one
    /// variable from one origin, up to [`KeyspaceConfig::coalesce_bytes`]
    /// and with no entry of the variable from another origin between them,
    /// become one entry at the sequence number of the run's last. Nothing moves to an
    /// earlier sequence number, so a peer that acknowledged a sequence still
    /// receives everything after it (and some of it again). One atomic batch.
    pub(super) fn coalesce(&mut self, through: u64) -> Result<()> {
        struct Run {
            delta: State,
            seqs: Vec<u64>,
            bytes: usize,
        }
        let cap = self.config.coalesce_bytes;
        let start = self.coalesced_through;
        if through <= start {
            return Ok(());
        }
        if cap == 0 || through == start + 1 {
            // Nothing to join: only recorded as settled.
            self.storage.rewrite_log(&[], &[], through)?;
            self.coalesced_through = through;
            return Ok(());
        }
        let limit = usize::try_from(through - start).unwrap_or(usize::MAX);
        let entries = self.storage.log_after(start, limit)?;
        let mut open: BTreeMap<(String, ReplicaId), Run> = BTreeMap::new();
        let mut done: Vec<((String, ReplicaId), Run)> = Vec::new();
        for (seq, entry) in entries {
            if seq > through {
                break;
            }
            if entry.delta.len() >= cap {
                continue;
            }
            let delta = entry.decode_delta(seq)?;
            // A run of the variable from another origin ends here: its
            // content must not move past this entry. (A peer merging the
            // log in order would otherwise hold this entry without the
            // earlier ones it may follow from: the owner's decrement of a
            // bounded counter without the increments that allowed it.)
            let others: Vec<(String, ReplicaId)> = open
                .range(
                    (entry.name.clone(), ReplicaId(0))..=(entry.name.clone(), ReplicaId(u64::MAX)),
                )
                .map(|(k, _)| k.clone())
                .filter(|(_, origin)| *origin != entry.origin)
                .collect();
            for key in others {
                if let Some(run) = open.remove(&key) {
                    done.push((key, run));
                }
            }
            let key = (entry.name, entry.origin);
            if let Some(run) = open.get_mut(&key) {
                if run.bytes + entry.delta.len() <= cap && run.delta.kind() == delta.kind() {
                    run.delta.join(delta).expect("same kind, checked");
                    run.seqs.push(seq);
                    run.bytes += entry.delta.len();
                    continue;
                }
                let full = open.remove(&key).expect("just found");
                done.push((key.clone(), full));
            }
            open.insert(
                key,
                Run {
                    delta,
                    seqs: vec![seq],
                    bytes: entry.delta.len(),
                },
            );
        }
        done.extend(open);
        let mut remove = Vec::new();
        let mut put = Vec::new();
        for ((name, origin), run) in done {
            let Some(&last) = run.seqs.last() else {
                continue;
            };
            if run.seqs.len() < 2 {
                continue;
            }
            remove.extend_from_slice(&run.seqs[..run.seqs.len() - 1]);
            put.push((
                last,
                LogEntry {
                    name,
                    kind: run.delta.kind(),
                    origin,
                    delta: codec::encode(&run.delta),
                },
            ));
        }
        // Recorded even when nothing was joined: the next opening joins
        // from there, and records it as where peers' claims on this one are
        // cut (see `resume_point`).
        self.storage.rewrite_log(&remove, &put, through)?;
        self.coalesced_through = through;
        Ok(())
    }

    /// The variables changed after log sequence `after`, but for changes
    /// that all came from incarnation `not_from` (the peer they are for
    /// holds those): those the index of changes names (written at
    /// checkpoints) and those changed since the last checkpoint. A peer
    /// holding our log through `after` lacks nothing of any other variable.
    /// `None` if the index does not reach back to `after`
    /// ([`KeyspaceConfig::changes_retain`]) or names more than `limit`
    /// variables.
    pub fn changed_after(
        &self,
        after: u64,
        limit: usize,
        not_from: Option<ReplicaId>,
    ) -> Result<Option<BTreeSet<String>>> {
        let Some(indexed) = self.storage.changed_after(after, limit)? else {
            return Ok(None);
        };
        let wanted = |origin: Option<ReplicaId>| origin.is_none() || origin != not_from;
        let mut names: BTreeSet<String> = indexed
            .into_iter()
            .filter(|(_, origin)| wanted(*origin))
            .map(|(name, _)| name)
            .collect();
        for (name, origin) in &self.dirty {
            if wanted(*origin) {
                names.insert(name.clone());
            }
        }
        Ok((names.len() <= limit).then_some(names))
    }

    /// Notes that `name` changed since the last checkpoint, by a delta from
    /// incarnation `origin`.
    pub(super) fn note_dirty(&mut self, name: &str, origin: ReplicaId) {
        match self.dirty.get_mut(name) {
            Some(o) if *o != Some(origin) => *o = None,
            Some(_) => {}
            None => {
                self.dirty.insert(name.to_string(), Some(origin));
            }
        }
    }

    /// Sets the log sequence that every known peer has acknowledged (`None`
    /// when there are no peers); checkpoints drop the log up to it.
    pub(crate) fn set_acked_floor(&mut self, floor: Option<u64>) {
        self.acked_floor = floor;
    }

    /// Sets the log sequence that every connected peer has acknowledged
    /// (`None`: no peer connected); checkpoints join runs of entries only up
    /// to it. Joining moves a run's content into its last entry: a peer that
    /// received that entry but not an earlier one of the run (lost, to be
    /// sent again) would never get the earlier one's content, and its
    /// acknowledgement of the run's end would count for all. A peer not
    /// connected resumes from what it holds in turn, so it gets the entry
    /// that holds the moved content.
    pub(crate) fn set_coalesce_floor(&mut self, floor: Option<u64>) {
        self.coalesce_floor = floor;
    }

    /// Writes a checkpoint and flushes everything written so far.
    pub fn flush(&mut self) -> Result<()> {
        self.check_writable()?;
        let last = self.storage.last_seq();
        let done = self.checkpoint().and_then(|()| Ok(self.storage.flush()?));
        match &done {
            Ok(()) => self.flushed_through = last,
            Err(e) => self.failed = Some(e.to_string()),
        }
        done
    }

    /// Flushes the log (no checkpoint): everything written so far becomes
    /// durable and may be shipped. For periodic flushing under buffered durability.
    pub fn sync(&mut self) -> Result<()> {
        self.check_writable()?;
        let last = self.storage.last_seq();
        match self.storage.flush() {
            Ok(()) => {
                self.flushed_through = last;
                Ok(())
            }
            Err(e) => {
                self.failed = Some(e.to_string());
                Err(e.into())
            }
        }
    }

    /// While `on`, local writes are appended without the flush that
    /// `flush_each_write` makes after each: the caller makes them durable
    /// with a shared flush (group commit: [`Keyspace::flusher`], then
    /// [`Keyspace::note_flushed`]) before it acknowledges them. Merges are
    /// not made under it. The caller sets it around its own writes only.
    pub fn defer_flushes(&mut self, on: bool) {
        self.deferring = on;
    }

    /// A handle that flushes the backend from any thread, without this
    /// keyspace (see `atoll_store::Backend::flusher`); `None` if the
    /// backend has none. A flush through it covers every entry appended
    /// before it began: the caller reads [`Keyspace::last_seq`] first, and
    /// reports it with [`Keyspace::note_flushed`] once the flush succeeded.
    pub fn flusher(&self) -> Option<atoll_store::Flusher> {
        self.storage.backend().flusher()
    }

    /// A flush made through [`Keyspace::flusher`] covered the log through
    /// `through`: those entries are durable, and may be shipped.
    pub fn note_flushed(&mut self, through: u64) {
        self.flushed_through = self
            .flushed_through
            .max(through.min(self.storage.last_seq()));
    }

    /// A flush made through [`Keyspace::flusher`] failed: what the disk
    /// holds is unknown, and the keyspace refuses writes until reopened.
    pub fn note_flush_failed(&mut self, why: String) {
        self.failed = Some(why);
    }

    /// Why the keyspace refuses writes, if it does (a failed flush or
    /// reload; reopen it).
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Checkpoints and flushes unless an earlier failure makes that unsafe; for closing.
    pub fn close(&mut self) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        self.flush()
    }
}
