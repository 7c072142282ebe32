//! The keyspace: every variable of one replica, persisted through a [`Backend`].
//!
//! Local operations mutate a variable's state and yield its delta; remote
//! deltas are validated and joined. Each change is appended to the delta log
//! (a write-ahead log), and states are checkpointed atomically every so often;
//! opening replays the log after the last checkpoint. Time comes in as an
//! argument: the keyspace reads no clock.
//!
//! By concern: this module holds the keyspace, opening, reads and local
//! writes ([`Keyspace::apply`]); `config` its settings; `names` what a name
//! may be; `recovery` loading and replay; `merge` remote deltas and states;
//! `checkpoint` checkpoints, coalescing, flushes and the index of changes;
//! `history` the openings and what peers hold; `conflict` type conflicts;
//! `digest` the digests of consistency checks.

use crate::op::{Op, Outcome};
use crate::{Error, Result};
use atoll_crdt::codec;
use atoll_crdt::variable::{Kind, State};
use atoll_crdt::{HybridClock, ReplicaId, Timestamp};
use atoll_store::{Backend, LogEntry, NodeMeta, Opening, Storage, VarMeta};
use std::collections::{BTreeMap, BTreeSet};

mod checkpoint;
mod config;
mod conflict;
mod digest;
pub use digest::{bucket_of, digest_of, DigestTree, DIGEST_BUCKETS};
mod history;
mod merge;
mod names;
mod recovery;
pub use config::KeyspaceConfig;

use conflict::fixed_kind;
pub use conflict::{
    conflict_name, conflict_of, is_reserved, Conflict, ConflictEvent, CONFLICT_PREFIX,
    SYSTEM_PREFIX,
};
use history::MAX_INCARNATIONS;
pub use names::{
    data_namespace, escrow_record, escrowed_by_record, namespace_of, namespaced, owned_by_record,
    owner_record, validate_name, validate_namespace, DEFAULT_NS, ESCROW_PREFIX, MAX_NAME_LEN,
    MAX_NS_LEN, MIRROR_VAR, NAMESPACES_VAR, NS_PREFIX, OWNER_PREFIX, PEERS_VAR, REMOVED_VAR,
};

struct Var {
    meta: VarMeta,
    state: State,
    /// Changes whenever the state may have (see [`Keyspace::version`]).
    version: u64,
    /// Its entries in the index of changes that this opening wrote (see
    /// [`Keyspace::changed_after`]): the checkpoint of each, and the one
    /// incarnation its changes came from, if one. The next entry of the
    /// same origin replaces the earlier one. (An entry an earlier opening
    /// wrote stays, until the index forgets it.)
    indexed: Vec<(u64, Option<ReplicaId>)>,
    /// What it counts against [`KeyspaceConfig::cache_bytes`]: its
    /// `recovery::resident_size`, as last read or checkpointed.
    bytes: usize,
    /// Used since the cache's last sweep passed it (a second chance).
    used: bool,
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
    /// The variables in memory: those used lately, within
    /// [`KeyspaceConfig::cache_bytes`], and every one changed since the
    /// last checkpoint.
    vars: BTreeMap<String, Var>,
    /// Their `bytes`, summed.
    resident_bytes: usize,
    /// Where the cache's sweep stopped (a variable's name).
    hand: String,
    /// Variables changed since the last checkpoint, each with the one
    /// incarnation those changes came from, if one.
    dirty: BTreeMap<String, Option<ReplicaId>>,
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
    /// Local writes are not flushed one by one: the caller makes them
    /// durable with a shared flush (see [`Keyspace::defer_flushes`]).
    deferring: bool,
    /// Type conflicts met since [`Keyspace::take_conflicts`] was last called.
    conflicts: Vec<ConflictEvent>,
    /// The openings of this store, oldest first: each one's incarnation,
    /// first log sequence number, and where the log was settled.
    history: Vec<Opening>,
    /// Digests of the variables, for consistency checks.
    digests: digest::DigestIndex,
    /// Changes to the mirroring ([`MIRROR_VAR`]) written or merged since
    /// opening, so that the replica reads it again only when it changed.
    mirror_changes: u64,
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
            resident_bytes: 0,
            hand: String::new(),
            dirty: BTreeMap::new(),
            since_checkpoint: 0,
            // From this opening's random id: versions differ from those an
            // earlier opening gave, whatever a peer still has of them.
            versions: incarnation.0,
            failed: None,
            acked_floor: None,
            flushed_through: 0,
            coalesced_through: 0,
            coalesce_floor: None,
            deferring: false,
            conflicts: Vec::new(),
            history: Vec::new(),
            digests: Default::default(),
            mirror_changes: 0,
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
    /// `f`'s error may be a caller's own, into which this one converts.
    pub fn read<R, E: From<Error>>(
        &mut self,
        name: &str,
        kind: Kind,
        f: impl FnOnce(Option<&State>) -> Result<R, E>,
    ) -> Result<R, E> {
        self.evict_over_budget();
        match self.load(name)? {
            Some(var) if var.meta.kind != kind => Err(Error::TypeMismatch {
                name: name.to_string(),
                expected: kind,
                found: var.meta.kind,
            }
            .into()),
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
        let replica = self.incarnation;
        self.apply_as(name, op, now_ms, replica)
    }

    /// [`Keyspace::apply`], its counter totals, dots and tie-breaks issued
    /// under `replica`: a decrement spending escrowed rights is made under
    /// the node's escrow actor (`atoll_crdt::escrow_actor`).
    pub(crate) fn apply_as(
        &mut self,
        name: &str,
        op: Op,
        now_ms: u64,
        replica: ReplicaId,
    ) -> Result<Outcome> {
        self.check_writable()?;
        validate_name(name)?;
        self.evict_over_budget();
        let kind = op.kind();
        fixed_kind(name, kind)?;
        let created = self.load(name)?.is_none();
        let ctx = OpCtx {
            replica,
            node: self.replica,
            ts: self.clock.tick(now_ms),
        };
        let var = touch(&mut self.vars, &mut self.versions, name, kind);
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
                    self.forget(name);
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
                    self.forget(name);
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
        self.after_append(name, seq, origin)?;
        Ok(seq)
    }

    /// After an entry of `name` was appended as `seq`: flushes if
    /// configured, and checkpoints when due.
    fn after_append(&mut self, name: &str, seq: u64, origin: ReplicaId) -> Result<()> {
        self.note_dirty(name, origin);
        self.digests.note_changed(name);
        if name == MIRROR_VAR {
            self.mirror_changes += 1;
        }
        self.since_checkpoint += 1;
        if self.config.flush_each_write && !self.deferring {
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
    pub(crate) fn variables_after(&self, after: &str, limit: usize) -> Result<Vec<(String, Kind)>> {
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
        self.evict_over_budget();
        Ok(self.load(name)?.map(|v| v.meta.kind))
    }

    /// The whole state of `name`, if it exists.
    pub fn state(&mut self, name: &str) -> Result<Option<&State>> {
        validate_name(name)?;
        self.evict_over_budget();
        Ok(self.load(name)?.map(|v| &v.state))
    }

    /// How many variables are held in memory (see
    /// [`KeyspaceConfig::cache_bytes`]).
    pub fn loaded(&self) -> usize {
        self.vars.len()
    }

    /// The encoded size of the variables held in memory, as last read or
    /// checkpointed.
    pub fn resident_bytes(&self) -> usize {
        self.resident_bytes
    }

    /// The stored encoding of `name`'s state, if it holds all of the state:
    /// the variable was not changed since the last checkpoint (or was never
    /// loaded since the keyspace was opened, which replays every change after
    /// the checkpoint). With a version as [`Keyspace::version`] gives, without
    /// loading the variable: a state transfer sends such a state as it is
    /// stored, neither walking its tree nor loading a cold variable into the
    /// cache (which keeps every variable loaded). `None` otherwise.
    pub(crate) fn stored_state(&mut self, name: &str) -> Result<Option<(Vec<u8>, u64)>> {
        validate_name(name)?;
        if self.dirty.contains_key(name) {
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
    pub(crate) fn version(&mut self, name: &str) -> Result<Option<u64>> {
        validate_name(name)?;
        Ok(self.load(name)?.map(|v| v.version))
    }

    /// Up to `limit` delta-log entries after sequence number `after`, oldest first.
    pub fn deltas_since(&self, after: u64, limit: usize) -> Result<Vec<(u64, LogEntry)>> {
        Ok(self.storage.log_after(after, limit)?)
    }

    /// Like [`Keyspace::deltas_since`], ending with the entry that brings
    /// their stored size to `max_bytes` or more.
    pub(crate) fn deltas_within(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, LogEntry)>> {
        Ok(self.storage.log_within(after, limit, max_bytes)?)
    }

    /// How many times the mirroring ([`MIRROR_VAR`]) was written or merged
    /// since opening: it changed if this did.
    pub fn mirror_changes(&self) -> u64 {
        self.mirror_changes
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
}

/// The cached variable `name`, about to change: created empty as a `kind`
/// if it is not cached (the caller loaded it first, so it is new), and given
/// a new version. Over the two fields, so that the clock stays free to
/// borrow alongside.
fn touch<'a>(
    vars: &'a mut BTreeMap<String, Var>,
    versions: &mut u64,
    name: &str,
    kind: Kind,
) -> &'a mut Var {
    *versions = versions.wrapping_add(1);
    let var = vars.entry(name.to_string()).or_insert_with(|| Var {
        meta: VarMeta::new(kind),
        state: State::new(kind),
        version: 0,
        indexed: Vec::new(),
        bytes: 0,
        used: true,
    });
    var.version = *versions;
    var.used = true;
    var
}
