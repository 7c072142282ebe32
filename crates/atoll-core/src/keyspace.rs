//! The keyspace: every variable of one replica, persisted through a [`Backend`].
//!
//! Local operations mutate a variable's state and yield its delta; remote
//! deltas are validated and joined. Each change is appended to the delta log
//! (a write-ahead log), and states are checkpointed atomically every so often;
//! opening replays the log after the last checkpoint. Time comes in as an
//! argument: the keyspace reads no clock.
//!
//! Over 1 000 lines: names, recovery, local updates, merges, checkpoints
//! with the joining of runs, and the openings' history. Type conflicts
//! already live in `keyspace/conflict.rs`; the rest is due to be split by
//! concern the same way.

use crate::op::{Op, Outcome};
use crate::{Error, Result};
use atoll_crdt::codec;
use atoll_crdt::variable::{Kind, State};
use atoll_crdt::{HybridClock, ReplicaId, Timestamp};
use atoll_store::{Backend, LogEntry, NodeMeta, Opening, Storage, VarMeta};
use std::collections::{BTreeMap, BTreeSet};

mod conflict;
use conflict::copy_kind;
pub use conflict::{
    conflict_name, conflict_of, is_reserved, Conflict, ConflictEvent, CONFLICT_PREFIX,
    SYSTEM_PREFIX,
};

/// The longest variable name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a variable name: 1 to 255 bytes of ASCII letters, digits and `_ - . : / @`,
/// starting with a letter, digit or `_`. A conflict copy's name
/// (`_atoll.conflict/{kind}/{name}`) may be longer: its `name` is checked,
/// and must not itself be a system name.
pub fn validate_name(name: &str) -> Result<()> {
    if name.starts_with(CONFLICT_PREFIX) {
        return match conflict_of(name) {
            Some((of, _)) if !is_reserved(of) => validate_name(of),
            _ => Err(Error::InvalidName {
                name: name.chars().take(80).collect(),
                reason: "a conflict copy is named _atoll.conflict/{type}/{name}, of a name outside _atoll.",
            }),
        };
    }
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("a name must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("a name must be at most 255 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.:/@".contains(&b))
    {
        return bad("use only ASCII letters, digits and _ - . : / @");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() && name.as_bytes()[0] != b'_' {
        return bad("a name must start with a letter, a digit or _");
    }
    Ok(())
}

struct Var {
    meta: VarMeta,
    state: State,
    /// Changes whenever the state may have (see [`Keyspace::version`]).
    version: u64,
}

/// Every variable of one replica, persisted through a [`Backend`].
pub struct Keyspace<B> {
    storage: Storage<B>,
    /// The node's stable identity: origin of its log entries, owner of its bag elements.
    replica: ReplicaId,
    /// This opening's own id, drawn fresh every time the keyspace is opened:
    /// every dot (and counter total, and register tie-break) is issued under it,
    /// so a restored or copied data directory can never reissue a dot.
    incarnation: ReplicaId,
    config: KeyspaceConfig,
    /// Every variable loaded so far (variables are never evicted).
    vars: BTreeMap<String, Var>,
    /// Variables changed since the last checkpoint.
    dirty: BTreeSet<String>,
    /// Log entries appended since the last checkpoint.
    since_checkpoint: u64,
    /// The last version given to a variable's state.
    versions: u64,
    clock: HybridClock,
    failed: Option<String>,
    /// The log sequence every known peer has acknowledged, if there are peers.
    acked_floor: Option<u64>,
    /// The log sequence the last flush covered: only entries through it may
    /// leave this replica, so that a crash can never lose an entry (and then
    /// reissue its dots) that a peer already has.
    flushed_through: u64,
    /// Log entries through this were considered for joining (see
    /// [`KeyspaceConfig::coalesce_bytes`]).
    coalesced_through: u64,
    /// See [`Keyspace::set_coalesce_floor`].
    coalesce_floor: Option<u64>,
    /// Type conflicts met since [`Keyspace::take_conflicts`] was last called.
    conflicts: Vec<ConflictEvent>,
    /// The openings of this store, oldest first: each one's incarnation,
    /// first log sequence number, and where the log was settled.
    history: Vec<Opening>,
}

/// The most incarnations remembered: a peer that last heard from an older
/// one is sent everything again.
const MAX_INCARNATIONS: usize = 64;

/// How a [`Keyspace`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceConfig {
    /// Flush after every write before acknowledging it (durable), or leave
    /// flushing to the backend's background flusher and explicit flushes.
    pub flush_each_write: bool,
    /// Remote last-writer-wins timestamps further ahead are refused (ms).
    pub max_clock_skew_ms: u64,
    /// The largest remote delta [`Keyspace::merge`] accepts, in bytes.
    pub max_delta_len: usize,
    /// Log entries between checkpoints.
    pub checkpoint_every: u64,
    /// The most log entries kept.
    pub log_retain: u64,
    /// At each checkpoint, runs of log entries of one variable from one
    /// origin written since the last checkpoint are joined into entries of up
    /// to this many bytes, so that a peer catching up is sent a few large
    /// deltas rather than one per operation (0: never).
    pub coalesce_bytes: usize,
}

impl Default for KeyspaceConfig {
    fn default() -> Self {
        KeyspaceConfig {
            flush_each_write: true,
            max_clock_skew_ms: 300_000,
            max_delta_len: 16 << 20,
            checkpoint_every: 4096,
            log_retain: 100_000,
            coalesce_bytes: 64 << 10,
        }
    }
}

/// What a local operation needs besides the state.
pub struct OpCtx {
    /// The id its dots, counter totals and register tie-breaks are issued
    /// under: this opening's incarnation.
    pub replica: ReplicaId,
    /// The node's stable id: the owner of bag elements it inserts or takes.
    pub node: ReplicaId,
    /// A fresh hybrid-clock timestamp for this operation.
    pub ts: Timestamp,
}

/// One change made to the keyspace: a local write or a merged delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The variable.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The change's delta-log sequence number.
    pub seq: u64,
    /// The incarnation the delta came from (this keyspace's own, for local writes).
    pub origin: ReplicaId,
}

impl<B: Backend> Keyspace<B> {
    /// Loads a variable into the cache; `None` if it does not exist.
    fn load(&mut self, name: &str) -> Result<Option<&mut Var>> {
        if !self.vars.contains_key(name) {
            let Some(meta) = self.storage.meta(name)? else {
                return Ok(None);
            };
            // A variable created since the last checkpoint has no stored state
            // yet: it starts at bottom, and recovery replays its logged deltas.
            let state: State = match self.storage.state(name)? {
                Some(bytes) => {
                    codec::decode(&bytes, atoll_store::MAX_RECORD_LEN).map_err(|source| {
                        atoll_store::StoreError::Corrupt {
                            key: format!("state of {name}"),
                            source,
                        }
                    })?
                }
                None => State::new(meta.kind),
            };
            if state.kind() != meta.kind {
                return Err(atoll_store::StoreError::Corrupt {
                    key: format!("state of {name}"),
                    source: codec::DecodeError::Invalid(atoll_crdt::InvalidState(
                        "state kind differs from the variable's metadata",
                    )),
                }
                .into());
            }
            // Writes after a restart must order after the writes they replace,
            // even if the wall clock has not moved past them.
            if let Some(ts) = state.max_timestamp() {
                self.clock.witness(ts);
            }
            self.versions = self.versions.wrapping_add(1);
            let version = self.versions;
            self.vars.insert(
                name.to_string(),
                Var {
                    meta,
                    state,
                    version,
                },
            );
        }
        Ok(self.vars.get_mut(name))
    }

    /// Joins a logged delta into its variable during recovery.
    fn replay(&mut self, seq: u64, entry: &LogEntry) -> Result<()> {
        let corrupt = |source| atoll_store::StoreError::Corrupt {
            key: format!("log entry {seq}"),
            source,
        };
        let delta = entry.decode_delta(seq)?;
        let no_meta = || {
            corrupt(codec::DecodeError::Invalid(atoll_crdt::InvalidState(
                "log entry for a variable with no metadata",
            )))
        };
        let held = self.load(&entry.name)?.ok_or_else(no_meta)?.meta.kind;
        // An entry written before its name went to another kind in a type
        // conflict belongs to the conflict copy (see `merge_state`).
        let name = if held == entry.kind {
            entry.name.clone()
        } else {
            let copy = conflict_name(&entry.name, entry.kind);
            self.load(&copy)?.ok_or_else(no_meta)?;
            copy
        };
        self.versions = self.versions.wrapping_add(1);
        let version = self.versions;
        let Some(var) = self.vars.get_mut(&name) else {
            return Err(no_meta().into());
        };
        var.version = version;
        var.state.join(delta).map_err(|_| {
            corrupt(codec::DecodeError::Invalid(atoll_crdt::InvalidState(
                "log entry kind differs from its variable",
            )))
        })?;
        if let Some(ts) = var.state.max_timestamp() {
            self.clock.witness(ts);
        }
        self.dirty.insert(name);
        Ok(())
    }

    /// Rebuilds the state of every variable from the checkpoint and the log after it.
    fn recover(&mut self) -> Result<usize> {
        let mut after = self.storage.checkpoint_seq();
        let mut replayed = 0;
        loop {
            let batch = self.storage.log_after(after, 1024)?;
            let Some(&(last, _)) = batch.last() else {
                return Ok(replayed);
            };
            for (seq, entry) in &batch {
                self.replay(*seq, entry)?;
            }
            replayed += batch.len();
            after = last;
        }
    }

    /// Drops the cached state of `name` and rebuilds it from storage: after a
    /// failed write, the cache must not keep what storage does not hold.
    fn reload(&mut self, name: &str) {
        self.vars.remove(name);
        let rebuilt = (|| -> Result<()> {
            let mut after = self.storage.checkpoint_seq();
            loop {
                let batch = self.storage.log_after(after, 1024)?;
                let Some(&(last, _)) = batch.last() else {
                    return Ok(());
                };
                // Its own entries, and for a conflict copy those of the name
                // it copies, of its kind.
                let copy_of = conflict_of(name);
                let mine =
                    |e: &LogEntry| e.name == name || copy_of == Some((e.name.as_str(), e.kind));
                for (seq, entry) in batch.iter().filter(|(_, e)| mine(e)) {
                    self.replay(*seq, entry)?;
                }
                after = last;
            }
        })();
        if let Err(e) = rebuilt {
            self.failed = Some(format!(
                "could not reload {name:?} after a failed write: {e}"
            ));
        }
    }

    /// Writes the changed states and the checkpoint sequence in one batch, then
    /// drops the log entries every peer acknowledged (see
    /// [`Keyspace::set_acked_floor`]) or that the retention bound forces out.
    /// The checkpoint is flushed only before entries are dropped: until then,
    /// losing it in a crash just means replaying more of the log.
    pub fn checkpoint(&mut self) -> Result<()> {
        let last = self.storage.last_seq();
        if !(self.dirty.is_empty() && self.storage.checkpoint_seq() == last) {
            let states: Vec<(String, Vec<u8>)> = self
                .dirty
                .iter()
                .filter_map(|n| {
                    self.vars
                        .get(n)
                        .map(|v| (n.clone(), codec::encode(&v.state)))
                })
                .collect();
            self.storage.checkpoint(states, last)?;
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
        Ok(())
    }

    /// Joins runs of log entries written since the last call, through
    /// `through` (covered by a checkpoint, so never replayed): entries of one
    /// variable from one origin, up to [`KeyspaceConfig::coalesce_bytes`], become
    /// one entry at the sequence number of the run's last. Nothing moves to an
    /// earlier sequence number, so a peer that acknowledged a sequence still
    /// receives everything after it (and some of it again). One atomic batch.
    fn coalesce(&mut self, through: u64) -> Result<()> {
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

    fn check_writable(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(Error::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Opens the keyspace on `backend`, recovering it from the last checkpoint
    /// and the log. A new keyspace takes `fresh_replica` as its node id; every
    /// opening issues its updates under `incarnation`, which must never have
    /// been used before (the caller draws both at random: the keyspace has no
    /// randomness of its own).
    pub fn open(
        backend: B,
        config: KeyspaceConfig,
        fresh_replica: ReplicaId,
        incarnation: ReplicaId,
        now_ms: u64,
    ) -> Result<Self> {
        let mut storage = Storage::open(backend)?;
        let replica = match storage.node_meta()? {
            Some(meta) => meta.replica,
            None => {
                let meta = NodeMeta {
                    replica: fresh_replica,
                    created_ms: now_ms,
                };
                storage.put_node_meta(&meta)?;
                meta.replica
            }
        };
        let mut ks = Keyspace {
            storage,
            replica,
            incarnation,
            clock: HybridClock::new(config.max_clock_skew_ms),
            config,
            vars: BTreeMap::new(),
            dirty: BTreeSet::new(),
            since_checkpoint: 0,
            // From this opening's random id: versions differ from those an
            // earlier opening gave, whatever a peer still has of them.
            versions: incarnation.0,
            failed: None,
            acked_floor: None,
            flushed_through: 0,
            coalesced_through: 0,
            coalesce_floor: None,
            conflicts: Vec::new(),
            history: Vec::new(),
        };
        ks.flushed_through = ks.storage.last_seq();
        // Runs are joined from where the last join settled the log (recorded
        // with it, so a join lost in a crash is done again); a store written
        // before that was recorded, from a checkpoint's worth before the last
        // checkpoint. Entries through there are never rewritten again.
        ks.coalesced_through = match ks.storage.settled()? {
            Some(settled) => settled,
            None => ks
                .storage
                .checkpoint_seq()
                .saturating_sub(ks.config.checkpoint_every),
        };
        // This opening's entries start after the log's end: peers holding the
        // log as an earlier opening numbered it resume from there, or from
        // where it was settled (see `Keyspace::resume_point`). Durable before
        // anything is written.
        let mut history = ks.storage.incarnations()?;
        history.push(Opening {
            incarnation: ks.incarnation,
            first_seq: ks.storage.last_seq() + 1,
            settled: ks.coalesced_through,
        });
        let keep = history.len().saturating_sub(MAX_INCARNATIONS);
        history.drain(..keep);
        ks.storage.put_incarnations(&history)?;
        ks.history = history;
        ks.recover()?;
        // Also when nothing was replayed: a crash may have lost the truncation
        // that followed the last checkpoint, leaving the log over its bound.
        ks.checkpoint()?;
        Ok(ks)
    }

    /// Where to resume sending to a peer that holds this replica's log
    /// through `seq` as incarnation `incarnation` of it numbered it: `seq` if
    /// that is this opening; for an earlier opening, no later than where the
    /// log was settled when the next one opened (this store may be a copy
    /// taken before `seq`, or before a join that incarnation did); 0 if that
    /// incarnation is not in this store's history (a copy older than it, or
    /// forgotten).
    pub fn resume_point(&self, incarnation: ReplicaId, seq: u64) -> u64 {
        let Some(i) = self
            .history
            .iter()
            .position(|o| o.incarnation == incarnation)
        else {
            return 0;
        };
        let Some(next) = self.history.get(i + 1) else {
            // This opening's own numbering, as the peer saw it. Joining runs
            // moves content only to later entries, so what the peer lacks is
            // after `seq` here too.
            return seq.min(self.storage.last_seq());
        };
        // An earlier opening. Only through where the log was settled when
        // the next one opened is this copy numbered as the earlier opening
        // numbered it when the peer heard from it: after that, it may have
        // joined runs into later entries (a crash lost the join, or this
        // copy is a backup taken before it), so content the peer never got
        // may sit below `seq` here. (That point is before the next opening's
        // first entry, from which this store numbered entries after it.)
        debug_assert!(next.settled < next.first_seq);
        seq.min(next.settled).min(self.storage.last_seq())
    }

    /// What this store holds of peer `node`'s log: through a sequence number,
    /// as the named incarnation of the peer numbered it.
    pub fn peer_holds(&self, node: ReplicaId) -> Result<Option<(ReplicaId, u64)>> {
        Ok(self.storage.peer_holds(node)?)
    }

    /// Records what this store holds of peer `node`'s log (after the entries
    /// it covers were written). Flushed with them.
    pub fn set_peer_holds(&mut self, node: ReplicaId, holds: (ReplicaId, u64)) -> Result<()> {
        self.check_writable()?;
        Ok(self.storage.put_peer_holds(node, holds)?)
    }

    /// This keyspace's node id (stable across openings).
    pub fn replica_id(&self) -> ReplicaId {
        self.replica
    }

    /// The id this opening issues its updates under.
    pub fn incarnation(&self) -> ReplicaId {
        self.incarnation
    }

    /// Its configuration.
    pub fn config(&self) -> &KeyspaceConfig {
        &self.config
    }

    /// The storage it writes to.
    pub fn storage(&self) -> &Storage<B> {
        &self.storage
    }

    /// Sets the log sequence that every known peer has acknowledged (`None`
    /// when there are no peers); checkpoints drop the log up to it.
    pub fn set_acked_floor(&mut self, floor: Option<u64>) {
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
    pub fn set_coalesce_floor(&mut self, floor: Option<u64>) {
        self.coalesce_floor = floor;
    }

    /// Checks `name` and that, if the variable exists, it is a `kind`.
    pub fn check(&mut self, name: &str, kind: Kind) -> Result<()> {
        validate_name(name)?;
        if let Some(var) = self.load(name)? {
            if var.meta.kind != kind {
                return Err(Error::TypeMismatch {
                    name: name.to_string(),
                    expected: kind,
                    found: var.meta.kind,
                });
            }
        }
        Ok(())
    }

    /// Reads a variable: `f` sees its state, or `None` if it does not exist.
    pub fn read<R>(
        &mut self,
        name: &str,
        kind: Kind,
        f: impl FnOnce(Option<&State>) -> Result<R>,
    ) -> Result<R> {
        match self.load(name)? {
            Some(var) if var.meta.kind != kind => Err(Error::TypeMismatch {
                name: name.to_string(),
                expected: kind,
                found: var.meta.kind,
            }),
            Some(var) => f(Some(&var.state)),
            None => f(None),
        }
    }

    /// Applies a local operation to the variable `name` at wall time
    /// `now_ms` (creating it, if the operation changes anything). The delta
    /// is appended to the log, and flushed if `flush_each_write`, before
    /// this returns. An operation that fails, or changes nothing, writes
    /// nothing and leaves the state as it was.
    ///
    /// This is the keyspace half of a write; [`crate::Replica::write`] also
    /// queues the delta for the peers.
    pub fn apply(&mut self, name: &str, op: Op, now_ms: u64) -> Result<Outcome> {
        self.check_writable()?;
        validate_name(name)?;
        let kind = op.kind();
        copy_kind(name, kind)?;
        let created = self.load(name)?.is_none();
        let ctx = OpCtx {
            replica: self.incarnation,
            node: self.replica,
            ts: self.clock.tick(now_ms),
        };
        if created {
            let var = Var {
                meta: VarMeta::new(kind),
                state: State::new(kind),
                version: 0,
            };
            self.vars.insert(name.to_string(), var);
        }
        let var = self.vars.get_mut(name).expect("loaded or inserted above");
        self.versions = self.versions.wrapping_add(1);
        var.version = self.versions;
        if var.meta.kind != kind {
            return Err(Error::TypeMismatch {
                name: name.to_string(),
                expected: kind,
                found: var.meta.kind,
            });
        }
        // Operations refuse before they mutate, so a failed `op` leaves the state as it was.
        let (delta, answer) = match op.apply(name, &mut var.state, &ctx) {
            Ok((Some(delta), answer)) if !delta.is_bottom() => (delta, answer),
            // A bottom delta changes nothing: nothing is written, and the
            // variable is not created here alone.
            Ok((_, answer)) => {
                if created {
                    self.vars.remove(name);
                }
                return Ok(Outcome {
                    answer,
                    ts: ctx.ts,
                    delta: None,
                    applied: None,
                });
            }
            Err(e) => {
                if created {
                    self.vars.remove(name);
                }
                return Err(e);
            }
        };
        let seq = self.persist(name, created, codec::encode(&delta), self.incarnation)?;
        let applied = Applied {
            name: name.to_string(),
            kind,
            seq,
            origin: self.incarnation,
        };
        Ok(Outcome {
            answer,
            ts: ctx.ts,
            delta: Some(delta),
            applied: Some(applied),
        })
    }

    /// Appends `delta` (already joined into the cached state of `name`) to the
    /// log, flushes if configured, and checkpoints when due. On failure the
    /// cached state is rebuilt from what storage holds.
    fn persist(
        &mut self,
        name: &str,
        created: bool,
        delta: Vec<u8>,
        origin: ReplicaId,
    ) -> Result<u64> {
        let var = &self.vars[name];
        let entry = LogEntry {
            name: name.to_string(),
            kind: var.meta.kind,
            origin,
            delta,
        };
        let meta = created.then(|| var.meta.clone());
        let seq = match self.storage.append(meta.as_ref(), &entry) {
            Ok(seq) => seq,
            Err(e) => {
                self.reload(name);
                return Err(e.into());
            }
        };
        self.after_append(name, seq)?;
        Ok(seq)
    }

    /// After an entry of `name` was appended as `seq`: flushes if
    /// configured, and checkpoints when due.
    fn after_append(&mut self, name: &str, seq: u64) -> Result<()> {
        self.dirty.insert(name.to_string());
        self.since_checkpoint += 1;
        if self.config.flush_each_write {
            if let Err(e) = self.storage.flush() {
                self.failed = Some(e.to_string());
                return Err(e.into());
            }
            self.flushed_through = seq;
        }
        if self.since_checkpoint >= self.config.checkpoint_every.max(1) {
            if let Err(e) = self.checkpoint() {
                self.failed = Some(e.to_string());
                return Err(e);
            }
        }
        Ok(())
    }

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
    pub fn merge_decoded(
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
        copy_kind(name, kind)?;
        self.check_writable()?;
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
            Some(_) => {}
            None => {
                let var = Var {
                    meta: VarMeta::new(kind),
                    state: State::new(kind),
                    version: 0,
                };
                self.vars.insert(name.to_string(), var);
            }
        }
        let var = self.vars.get_mut(name).expect("loaded or inserted above");
        self.versions = self.versions.wrapping_add(1);
        var.version = self.versions;
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
                self.vars.remove(name);
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

    /// Every variable and its kind, in name order.
    pub fn variables(&self) -> Result<Vec<(String, Kind)>> {
        Ok(self
            .storage
            .variables()?
            .into_iter()
            .map(|(n, m)| (n, m.kind))
            .collect())
    }

    /// Up to `limit` variables named after `after`, and their kinds, in name
    /// order.
    pub fn variables_after(&self, after: &str, limit: usize) -> Result<Vec<(String, Kind)>> {
        Ok(self
            .storage
            .variables_after(after, limit)?
            .into_iter()
            .map(|(n, m)| (n, m.kind))
            .collect())
    }

    /// The kind of `name`, if it exists.
    pub fn kind_of(&mut self, name: &str) -> Result<Option<Kind>> {
        validate_name(name)?;
        Ok(self.load(name)?.map(|v| v.meta.kind))
    }

    /// The whole state of `name`, if it exists.
    pub fn state(&mut self, name: &str) -> Result<Option<&State>> {
        validate_name(name)?;
        Ok(self.load(name)?.map(|v| &v.state))
    }

    /// How many variables are held in memory (loaded since the keyspace was
    /// opened; variables are never evicted).
    pub fn loaded(&self) -> usize {
        self.vars.len()
    }

    /// The stored encoding of `name`'s state, if it holds all of the state:
    /// the variable was not changed since the last checkpoint (or was never
    /// loaded since the keyspace was opened, which replays every change after
    /// the checkpoint). With a version as [`Keyspace::version`] gives, without
    /// loading the variable: a state transfer sends such a state as it is
    /// stored, neither walking its tree nor loading a cold variable into the
    /// cache (which keeps every variable loaded). `None` otherwise.
    pub fn stored_state(&mut self, name: &str) -> Result<Option<(Vec<u8>, u64)>> {
        validate_name(name)?;
        if self.dirty.contains(name) {
            return Ok(None);
        }
        let Some(bytes) = self.storage.state(name)? else {
            return Ok(None);
        };
        let version = match self.vars.get(name) {
            Some(var) => var.version,
            None => {
                // Any later change loads the variable, which gives it a
                // version after this one.
                self.versions = self.versions.wrapping_add(1);
                self.versions
            }
        };
        Ok(Some((bytes, version)))
    }

    /// The version of a variable's state, which differs from every earlier
    /// one whenever the state may have changed in between (a write, a merge,
    /// a reload): a sender of a state in several parts starts over if it
    /// changed between them. `None` if the variable does not exist.
    pub fn version(&mut self, name: &str) -> Result<Option<u64>> {
        validate_name(name)?;
        Ok(self.load(name)?.map(|v| v.version))
    }

    /// Up to `limit` delta-log entries after sequence number `after`, oldest first.
    pub fn deltas_since(&self, after: u64, limit: usize) -> Result<Vec<(u64, LogEntry)>> {
        Ok(self.storage.log_after(after, limit)?)
    }

    /// Like [`Keyspace::deltas_since`], ending with the entry that brings
    /// their stored size to `max_bytes` or more.
    pub fn deltas_within(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, LogEntry)>> {
        Ok(self.storage.log_within(after, limit, max_bytes)?)
    }

    /// The newest delta-log sequence number.
    pub fn last_seq(&self) -> u64 {
        self.storage.last_seq()
    }

    /// The newest sequence number known to be on disk: replication ships the
    /// log only through here.
    pub fn flushed_seq(&self) -> u64 {
        self.flushed_through
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

    /// Checkpoints and flushes unless an earlier failure makes that unsafe; for closing.
    pub fn close(&mut self) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_with_a_reason() {
        for ok in ["hits", "a", "_x", "site1/cart:42", "u@host.example-1"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "-x", "/abs", "sp ace", "ünï", &"x".repeat(256)] {
            let e = validate_name(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidName { .. }), "{bad:?}");
        }
    }
}
