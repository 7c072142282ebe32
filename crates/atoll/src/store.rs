//! The embedded store: variables by name, persisted, with a change feed.

use crate::feed::{Change, ChangeFeed};
use crate::{Config, Durability, Error, Result};
use atoll_crdt::codec;
use atoll_crdt::variable::{Kind, State};
use atoll_crdt::{HybridClock, ReplicaId, Timestamp};
use atoll_store::{Backend, LogEntry, MemoryBackend, NodeMeta, SledBackend, Storage, VarMeta};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// The longest variable name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a variable name: 1 to 255 bytes of ASCII letters, digits and `_ - . : / @`,
/// starting with a letter, digit or `_`.
pub fn validate_name(name: &str) -> Result<()> {
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

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Var {
    meta: VarMeta,
    state: State,
}

struct Core {
    storage: Storage<Box<dyn Backend>>,
    /// Every variable loaded so far (variables are never evicted).
    vars: BTreeMap<String, Var>,
    /// Variables changed since the last checkpoint.
    dirty: BTreeSet<String>,
    /// Log entries appended since the last checkpoint.
    since_checkpoint: u64,
    clock: HybridClock,
    failed: Option<String>,
}

impl Core {
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
            self.vars.insert(name.to_string(), Var { meta, state });
        }
        Ok(self.vars.get_mut(name))
    }

    /// Joins a logged delta into its variable during recovery.
    fn replay(&mut self, seq: u64, entry: &LogEntry) -> Result<()> {
        let corrupt = |source| atoll_store::StoreError::Corrupt {
            key: format!("log entry {seq}"),
            source,
        };
        let delta: State =
            codec::decode(&entry.delta, atoll_store::MAX_RECORD_LEN).map_err(corrupt)?;
        let var = self.load(&entry.name)?.ok_or_else(|| {
            corrupt(codec::DecodeError::Invalid(atoll_crdt::InvalidState(
                "log entry for a variable with no metadata",
            )))
        })?;
        var.state.join(delta).map_err(|_| {
            corrupt(codec::DecodeError::Invalid(atoll_crdt::InvalidState(
                "log entry kind differs from its variable",
            )))
        })?;
        if let Some(ts) = var.state.max_timestamp() {
            self.clock.witness(ts);
        }
        self.dirty.insert(entry.name.clone());
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
                for (seq, entry) in batch.iter().filter(|(_, e)| e.name == name) {
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
    /// drops log entries beyond the retention bound. The checkpoint is flushed
    /// only before entries are dropped: until then, losing it in a crash just
    /// means replaying more of the log.
    fn checkpoint(&mut self, log_retain: u64) -> Result<()> {
        let last = self.storage.last_seq();
        if self.dirty.is_empty() && self.storage.checkpoint_seq() == last {
            return Ok(());
        }
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
        if let Some(first) = self.storage.first_seq()? {
            if last - first + 1 > log_retain {
                // The checkpoint must be on disk before the entries it replaces go.
                self.storage.flush()?;
                self.storage.truncate_log(last - log_retain)?;
            }
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(Error::Failed(why.clone())),
            None => Ok(()),
        }
    }
}

struct Inner {
    core: Mutex<Core>,
    replica: ReplicaId,
    config: Config,
    feed: broadcast::Sender<Change>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let core = self.core.get_mut().unwrap_or_else(|e| e.into_inner());
        if core.failed.is_some() {
            return;
        }
        if let Err(e) = core
            .checkpoint(self.config.log_retain)
            .and_then(|()| Ok(core.storage.flush()?))
        {
            tracing::error!("checkpoint on close failed: {e}");
        }
    }
}

/// An embedded atoll store: named, typed, replicated variables in a local database.
///
/// Cheap to clone; clones share the store. Closing the last clone flushes.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// What a local operation needs besides the state.
pub(crate) struct OpCtx {
    /// This store's replica id.
    pub(crate) replica: ReplicaId,
    /// A fresh hybrid-clock timestamp for this operation.
    pub(crate) ts: Timestamp,
}

impl Store {
    /// Opens (creating if needed) a durable store in the directory `path`.
    pub fn open(path: impl Into<std::path::PathBuf>) -> Result<Store> {
        Store::open_with(Config::new(path))
    }

    /// Opens a store as `config` says.
    pub fn open_with(config: Config) -> Result<Store> {
        let backend: Box<dyn Backend> = match &config.path {
            Some(path) => {
                let every = match config.durability {
                    Durability::Durable => None,
                    Durability::Buffered { flush_every_ms } => Some(flush_every_ms.max(1)),
                };
                Box::new(SledBackend::open(path, every)?)
            }
            None => Box::new(MemoryBackend::new()),
        };
        Store::open_backend(backend, config)
    }

    /// Opens a store on any backend (a [`MemoryBackend`] a test can crash, say).
    pub fn open_backend(backend: Box<dyn Backend>, config: Config) -> Result<Store> {
        let mut storage = Storage::open(backend)?;
        let replica = match storage.node_meta()? {
            Some(meta) => meta.replica,
            None => {
                let meta = NodeMeta {
                    replica: ReplicaId(rand::random()),
                    created_ms: now_ms(),
                };
                storage.put_node_meta(&meta)?;
                meta.replica
            }
        };
        let max_skew = u64::try_from(config.max_clock_skew.as_millis()).unwrap_or(u64::MAX);
        let (feed, _) = broadcast::channel(config.change_feed_capacity.max(1));
        let mut core = Core {
            storage,
            vars: BTreeMap::new(),
            dirty: BTreeSet::new(),
            since_checkpoint: 0,
            clock: HybridClock::new(max_skew),
            failed: None,
        };
        if core.recover()? > 0 {
            core.checkpoint(config.log_retain)?;
        }
        Ok(Store {
            inner: Arc::new(Inner {
                core: Mutex::new(core),
                replica,
                config,
                feed,
            }),
        })
    }

    /// This store's replica id.
    pub fn replica_id(&self) -> ReplicaId {
        self.inner.replica
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        // Operations leave the core consistent at every await-free step; a panic
        // elsewhere while holding the lock does not invalidate it.
        self.inner.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks `name` and that, if the variable exists, it is a `kind`.
    pub(crate) fn check(&self, name: &str, kind: Kind) -> Result<()> {
        validate_name(name)?;
        let mut core = self.core();
        if let Some(var) = core.load(name)? {
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
    pub(crate) fn read<R>(
        &self,
        name: &str,
        kind: Kind,
        f: impl FnOnce(Option<&State>) -> Result<R>,
    ) -> Result<R> {
        let mut core = self.core();
        match core.load(name)? {
            Some(var) if var.meta.kind != kind => Err(Error::TypeMismatch {
                name: name.to_string(),
                expected: kind,
                found: var.meta.kind,
            }),
            Some(var) => f(Some(&var.state)),
            None => f(None),
        }
    }

    /// Applies a local operation: `op` mutates the state and returns the delta.
    /// The new state, the delta's log entry and (for a new variable) its metadata
    /// are committed atomically, and flushed under [`Durability::Durable`], before
    /// this returns. An operation that returns an empty delta writes nothing.
    pub(crate) fn update<R>(
        &self,
        name: &str,
        kind: Kind,
        op: impl FnOnce(&mut State, &OpCtx) -> Result<(Option<State>, R)>,
    ) -> Result<R> {
        let mut core = self.core();
        core.check_writable()?;
        let created = core.load(name)?.is_none();
        let ts = core.clock.tick(now_ms());
        let ctx = OpCtx {
            replica: self.inner.replica,
            ts,
        };
        if created {
            let var = Var {
                meta: VarMeta::new(kind),
                state: State::new(kind),
            };
            core.vars.insert(name.to_string(), var);
        }
        let var = core.vars.get_mut(name).expect("loaded or inserted above");
        if var.meta.kind != kind {
            return Err(Error::TypeMismatch {
                name: name.to_string(),
                expected: kind,
                found: var.meta.kind,
            });
        }
        // Operations refuse before they mutate, so a failed `op` leaves the state as it was.
        let (delta, out) = match op(&mut var.state, &ctx) {
            Ok(r) => r,
            Err(e) => {
                if created {
                    core.vars.remove(name);
                }
                return Err(e);
            }
        };
        let Some(delta) = delta else {
            if created {
                core.vars.remove(name);
            }
            return Ok(out);
        };
        let seq = self.persist(&mut core, name, created, &delta, self.inner.replica)?;
        self.publish(name, kind, seq, self.inner.replica);
        Ok(out)
    }

    /// Appends `delta` (already joined into the cached state of `name`) to the
    /// log, flushes if durable, and checkpoints when due. On failure the cached
    /// state is rebuilt from what storage holds.
    fn persist(
        &self,
        core: &mut Core,
        name: &str,
        created: bool,
        delta: &State,
        origin: ReplicaId,
    ) -> Result<u64> {
        let var = &core.vars[name];
        let entry = LogEntry {
            name: name.to_string(),
            kind: var.meta.kind,
            origin,
            delta: codec::encode(delta),
        };
        let meta = created.then(|| var.meta.clone());
        let seq = match core.storage.append(meta.as_ref(), &entry) {
            Ok(seq) => seq,
            Err(e) => {
                core.reload(name);
                return Err(e.into());
            }
        };
        core.dirty.insert(name.to_string());
        core.since_checkpoint += 1;
        if self.inner.config.durability == Durability::Durable {
            if let Err(e) = core.storage.flush() {
                core.failed = Some(e.to_string());
                return Err(e.into());
            }
        }
        if core.since_checkpoint >= self.inner.config.checkpoint_every.max(1) {
            if let Err(e) = core.checkpoint(self.inner.config.log_retain) {
                core.failed = Some(e.to_string());
                return Err(e);
            }
        }
        Ok(seq)
    }

    fn publish(&self, name: &str, kind: Kind, seq: u64, origin: ReplicaId) {
        // No subscriber is not an error.
        let _ = self.inner.feed.send(Change {
            name: name.to_string(),
            kind,
            seq,
            origin,
            local: origin == self.inner.replica,
        });
    }

    /// Joins a delta (or whole state) received from replica `origin` into the
    /// variable `name` of `kind`, creating it if needed. The bytes are untrusted:
    /// they are size-checked, decoded and validated before anything changes, and
    /// last-writer-wins timestamps too far ahead of the local clock are refused.
    ///
    /// Returns the delta-log sequence number, or `None` if the delta held nothing
    /// new (then nothing is written).
    pub fn merge(
        &self,
        origin: ReplicaId,
        name: &str,
        kind: Kind,
        delta: &[u8],
    ) -> Result<Option<u64>> {
        validate_name(name)?;
        let bad = |source| Error::BadDelta {
            name: name.to_string(),
            source,
        };
        let delta: State = codec::decode(delta, self.inner.config.max_delta_len).map_err(bad)?;
        if delta.kind() != kind {
            return Err(Error::TypeMismatch {
                name: name.to_string(),
                expected: kind,
                found: delta.kind(),
            });
        }
        let mut core = self.core();
        core.check_writable()?;
        if let Some(ts) = delta.max_timestamp() {
            core.clock
                .observe(ts, now_ms())
                .map_err(|source| Error::ClockSkew {
                    name: name.to_string(),
                    source,
                })?;
        }
        let created = core.load(name)?.is_none();
        let mut next = match core.vars.get(name) {
            Some(var) if var.meta.kind != kind => {
                return Err(Error::TypeMismatch {
                    name: name.to_string(),
                    expected: kind,
                    found: var.meta.kind,
                })
            }
            Some(var) => var.state.clone(),
            None => State::new(kind),
        };
        next.join(delta.clone()).expect("kinds checked above");
        if !created && core.vars[name].state == next {
            return Ok(None);
        }
        match core.vars.get_mut(name) {
            Some(var) => var.state = next,
            None => {
                let var = Var {
                    meta: VarMeta::new(kind),
                    state: next,
                };
                core.vars.insert(name.to_string(), var);
            }
        }
        let seq = self.persist(&mut core, name, created, &delta, origin)?;
        self.publish(name, kind, seq, origin);
        Ok(Some(seq))
    }

    /// Every variable and its kind, in name order.
    pub fn variables(&self) -> Result<Vec<(String, Kind)>> {
        let core = self.core();
        Ok(core
            .storage
            .variables()?
            .into_iter()
            .map(|(n, m)| (n, m.kind))
            .collect())
    }

    /// The kind of `name`, if it exists.
    pub fn kind_of(&self, name: &str) -> Result<Option<Kind>> {
        validate_name(name)?;
        Ok(self.core().load(name)?.map(|v| v.meta.kind))
    }

    /// The encoded whole state of `name` (for state transfer), if it exists.
    pub fn state_bytes(&self, name: &str) -> Result<Option<(Kind, Vec<u8>)>> {
        validate_name(name)?;
        Ok(self
            .core()
            .load(name)?
            .map(|v| (v.meta.kind, codec::encode(&v.state))))
    }

    /// Up to `limit` delta-log entries after sequence number `after`, oldest first.
    pub fn deltas_since(&self, after: u64, limit: usize) -> Result<Vec<(u64, LogEntry)>> {
        Ok(self.core().storage.log_after(after, limit)?)
    }

    /// The newest delta-log sequence number.
    pub fn last_seq(&self) -> u64 {
        self.core().storage.last_seq()
    }

    /// Writes a checkpoint and flushes everything written so far to disk.
    pub fn flush(&self) -> Result<()> {
        let mut core = self.core();
        core.check_writable()?;
        let done = core
            .checkpoint(self.inner.config.log_retain)
            .and_then(|()| Ok(core.storage.flush()?));
        if let Err(e) = done {
            core.failed = Some(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// Subscribes to every change, local or merged.
    pub fn changes(&self) -> ChangeFeed {
        ChangeFeed::new(self.inner.feed.subscribe(), None)
    }

    /// Subscribes to the changes of one variable.
    pub fn watch(&self, name: &str) -> Result<ChangeFeed> {
        validate_name(name)?;
        Ok(ChangeFeed::new(
            self.inner.feed.subscribe(),
            Some(name.to_string()),
        ))
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
