//! The embedded store: variables by name, persisted, with a change feed.

use crate::feed::{Change, ChangeFeed};
use crate::{Config, CoreError, Durability, Result};
use atoll_core::protocol::Body;
use atoll_core::{
    conflict_of, is_reserved, validate_name, Answer, Applied, ConflictEvent, Keyspace, Now, Op,
    OwnershipError, Replica, ReplicaConfig,
};
use atoll_crdt::codec;
use atoll_crdt::variable::{Kind, State};
use atoll_crdt::ReplicaId;
use atoll_store::{Backend, LogEntry, MemoryBackend, SledBackend};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Milliseconds since the Unix epoch on the wall clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds on the process's monotonic clock, from its first reading:
/// what the replica times its retransmissions and lag on.
pub(crate) fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The time of a replica input: monotonic for its timers, wall for its
/// keyspace's hybrid logical clock.
pub(crate) fn clock() -> Now {
    Now {
        mono: mono_ms(),
        wall: now_ms(),
    }
}

struct Inner {
    replica: Mutex<Replica<Box<dyn Backend>>>,
    id: ReplicaId,
    incarnation: ReplicaId,
    config: Config,
    feed: broadcast::Sender<Change>,
    /// Wakes a node's driver after a local write (unused without a node).
    wake: tokio::sync::Notify,
    /// Wakes a node's membership watcher when the peer set changes.
    peers_changed: tokio::sync::Notify,
    /// Local writes and merged deltas, for metrics.
    local_ops: std::sync::atomic::AtomicU64,
    merged: std::sync::atomic::AtomicU64,
    /// No node runs on the store (see [`Store::set_running`]).
    standalone: std::sync::atomic::AtomicBool,
    /// Type conflicts resolved here, for metrics.
    conflicts: std::sync::atomic::AtomicU64,
    /// Operations that ran at an owner, here or sent there, and those that
    /// failed because the owner could not be reached (for metrics).
    pub(crate) at_owner: crate::ownership::OwnerCounters,
    /// Callers waiting for the answer of a request sent to another node,
    /// by request id (see [`Store::request`]).
    waiting: Mutex<std::collections::HashMap<u64, Answered>>,
    /// Consistency checks: callers waiting, the last report.
    checks: Mutex<checks::Checks>,
    /// Group commit: the shared flush under way.
    commit: commit::Commit,
}

/// Where the answer of a request sent to another node goes.
type Answered = std::sync::mpsc::SyncSender<std::result::Result<Answer, OwnershipError>>;

mod checks;
mod commit;
mod requests;

impl Drop for Inner {
    fn drop(&mut self) {
        let r = self.replica.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = r.keyspace().close() {
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
                Box::new(SledBackend::open(path, every, atoll_store::STATES)?)
            }
            None => Box::new(MemoryBackend::new()),
        };
        Store::open_backend(backend, config)
    }

    /// Opens a store on any backend (a [`MemoryBackend`] a test can crash, say).
    pub fn open_backend(backend: Box<dyn Backend>, config: Config) -> Result<Store> {
        config.validate()?;
        let ks_config = config.keyspace();
        let keyspace = Keyspace::open(
            backend,
            ks_config,
            ReplicaId(rand::random()),
            ReplicaId(rand::random()),
            now_ms(),
        )?;
        let (feed, _) = broadcast::channel(config.change_feed_capacity.max(1));
        let (id, incarnation) = (keyspace.replica_id(), keyspace.incarnation());
        let mut replica = Replica::new(keyspace, ReplicaConfig::default());
        // A store of a cluster opened without a node is fenced until a node
        // runs on it and its peers bring it up to date.
        let clustered = Self::in_cluster(&mut replica)?;
        if clustered && !config.last_of_cluster {
            replica.expect_peers(1);
        }
        Ok(Store {
            inner: Arc::new(Inner {
                id,
                incarnation,
                replica: Mutex::new(replica),
                standalone: std::sync::atomic::AtomicBool::new(true),
                config,
                feed,
                wake: tokio::sync::Notify::new(),
                peers_changed: tokio::sync::Notify::new(),
                local_ops: Default::default(),
                merged: Default::default(),
                conflicts: Default::default(),
                waiting: Default::default(),
                checks: Default::default(),
                commit: Default::default(),
                at_owner: Default::default(),
            }),
        })
    }

    /// Whether the store belongs to a cluster: it knows peers' addresses,
    /// or has merged from a peer.
    fn in_cluster(r: &mut Replica<Box<dyn Backend>>) -> Result<bool> {
        let ks = r.keyspace();
        if ks.storage().has_peer_holds()? {
            return Ok(true);
        }
        let found = ks.read(crate::node::PEERS_VAR, Kind::Set, |s| {
            Ok::<_, CoreError>(matches!(s, Some(State::Set(set)) if !set.is_empty()))
        });
        match found {
            Ok(found) => Ok(found),
            // Not a set: not ours.
            Err(CoreError::TypeMismatch { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A node runs on this store from now on (its fence waits for the
    /// node's peers).
    pub(crate) fn set_running(&self) {
        self.inner
            .standalone
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// No node runs on this store.
    pub(crate) fn is_standalone(&self) -> bool {
        self.inner
            .standalone
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whom a fenced bag operation waits for, said for the error.
    fn fence_waiting(&self, r: &Replica<Box<dyn Backend>>) -> String {
        if self
            .inner
            .standalone
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return "its peers: this store belongs to a cluster and was opened without a node; \
                    run it as a node (atoll run) so that its peers bring it up to date, or, if it \
                    is the last node of its cluster, open it with --last-of-cluster \
                    (Config::last_of_cluster)"
                .to_string();
        }
        r.fence_waiting()
    }

    /// This store's node id: stable across openings; it owns the bag elements
    /// this store inserts.
    pub fn replica_id(&self) -> ReplicaId {
        self.inner.id
    }

    /// The id this opening issues its updates under: new every time the store
    /// is opened, so a restored or copied data directory never reissues one.
    pub fn incarnation(&self) -> ReplicaId {
        self.inner.incarnation
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The replica state machine (for the node's driver).
    pub(crate) fn replica(&self) -> MutexGuard<'_, Replica<Box<dyn Backend>>> {
        // The replica is consistent between calls; a panic elsewhere while
        // holding the lock does not invalidate it.
        self.inner.replica.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keyspace(&self) -> KeyspaceGuard<'_> {
        KeyspaceGuard(self.replica())
    }

    /// Wakes the node's driver (after a change outside `write`).
    pub(crate) fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Waits until a local write wants the driver (used by a node).
    pub(crate) async fn woken(&self) {
        self.inner.wake.notified().await
    }

    /// Checks `name` and that, if the variable exists, it is a `kind`; a
    /// system name is refused, except a conflict copy's (read-only).
    pub(crate) fn check(&self, name: &str, kind: Kind) -> Result<()> {
        if is_reserved(name) && conflict_of(name).is_none() {
            return Err(crate::Error::Reserved {
                name: name.chars().take(80).collect(),
                what: "only conflict copies (_atoll.conflict/TYPE/NAME) can be read; \
                       membership changes through the peer commands",
            });
        }
        self.keyspace_check(name, kind)
    }

    /// [`Store::check`] for the node's own system variables too.
    pub(crate) fn keyspace_check(&self, name: &str, kind: Kind) -> Result<()> {
        Ok(self.keyspace().check(name, kind)?)
    }

    /// Reads a variable: `f` sees its state, or `None` if it does not exist.
    pub(crate) fn read<R>(
        &self,
        name: &str,
        kind: Kind,
        f: impl FnOnce(Option<&State>) -> Result<R>,
    ) -> Result<R> {
        self.keyspace().read(name, kind, f)
    }

    /// Applies a local operation ([`Replica::write`]: logged, flushed as
    /// configured, queued for the peers), announces it on the change feed
    /// and wakes the node's driver. Every local write goes through here.
    /// `system` is for the node's own writes to a system variable (any other
    /// write of a reserved name is refused).
    pub(crate) fn write(&self, system: bool, name: &str, op: Op) -> Result<Answer> {
        if is_reserved(name) && !system {
            return Err(crate::Error::Reserved {
                name: name.chars().take(80).collect(),
                what: "only the node writes them (membership through the peer commands; \
                       conflict copies are read-only)",
            });
        }
        let fenced_bag_op = op.owner_only();
        self.request(name, Body::Op(op), fenced_bag_op)
    }

    /// Brings this node's copy of `name` (a `kind`) up to its owner's, if
    /// it is owned: asks the owner, whose reply carries its whole state (a
    /// read after this sees every write the owner made). An ownerless
    /// variable has nothing to wait for.
    pub(crate) fn sync_with_owner(&self, name: &str, kind: Kind) -> Result<()> {
        self.check(name, kind)?;
        self.request(name, Body::Op(Op::Read { kind }), false)
            .map(drop)
    }

    /// The counters of operations at owners.
    pub(crate) fn owner_counters(&self) -> &crate::ownership::OwnerCounters {
        &self.inner.at_owner
    }

    fn waiting(&self) -> MutexGuard<'_, std::collections::HashMap<u64, Answered>> {
        self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer of request `id` came (the node's driver calls this).
    pub(crate) fn answered(&self, id: u64, result: std::result::Result<Answer, OwnershipError>) {
        if let Some(tx) = self.waiting().remove(&id) {
            // The caller may have stopped waiting: not an error.
            let _ = tx.try_send(result);
        }
    }

    /// Logs a type conflict resolved here and counts it.
    pub(crate) fn conflict_found(&self, c: &atoll_core::Conflict) {
        self.inner
            .conflicts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            name = %c.name,
            kept = %c.kept,
            moved = %c.moved,
            copy = %c.copy,
            "type conflict: {:?} was created as a {} and as a {} on two sides of a split; \
             the {} keeps the name on every node, the {}'s data is kept in {:?}",
            c.name, c.kept, c.moved, c.kept, c.moved, c.copy
        );
    }

    /// Type conflicts resolved here since the store was opened (each
    /// conflict copy created here counts once).
    pub(crate) fn conflicts_found(&self) -> u64 {
        self.inner
            .conflicts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every conflict copy: the name, the type that kept it, the type moved
    /// out, and the copy that holds the moved data. Conflict copies are
    /// replicated, so every node lists the same ones once converged.
    pub fn conflicts(&self) -> Result<Vec<(String, Kind, Kind, String)>> {
        let mut out = Vec::new();
        let vars = self.keyspace().variables()?;
        for (copy, _) in vars {
            if let Some((name, moved)) = conflict_of(&copy) {
                let kept = self.kind_of(name)?.unwrap_or(moved);
                out.push((name.to_string(), kept, moved, copy.clone()));
            }
        }
        Ok(out)
    }

    pub(crate) fn publish(&self, a: Applied) {
        let local = a.origin == self.inner.incarnation;
        let counter = if local {
            &self.inner.local_ops
        } else {
            &self.inner.merged
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if a.name == crate::node::PEERS_VAR || a.name == crate::node::REMOVED_VAR {
            self.inner.peers_changed.notify_one();
        }
        // No subscriber is not an error.
        let _ = self.inner.feed.send(Change {
            local,
            name: a.name,
            kind: a.kind,
            seq: a.seq,
            origin: a.origin,
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
        let now = clock();
        let (applied, conflicts) = {
            let mut r = self.replica();
            let applied = r.keyspace().merge(origin, name, kind, delta, now.wall)?;
            if applied.is_some() {
                if atoll_core::owned_by_record(name).is_some() {
                    r.reload_ownership();
                }
                if atoll_core::escrowed_by_record(name).is_some() {
                    r.reload_escrows();
                }
                r.handle_local_writes(now);
            }
            (applied, r.keyspace().take_conflicts())
        };
        for c in conflicts {
            match c {
                ConflictEvent::Found(c) => self.conflict_found(&c),
                ConflictEvent::Moved(a) => self.publish(a),
            }
        }
        Ok(applied.map(|a| {
            let seq = a.seq;
            self.publish(a);
            self.inner.wake.notify_one();
            seq
        }))
    }

    /// Every variable and its kind, in name order.
    pub fn variables(&self) -> Result<Vec<(String, Kind)>> {
        Ok(self.keyspace().variables()?)
    }

    /// The kind of `name`, if it exists.
    pub fn kind_of(&self, name: &str) -> Result<Option<Kind>> {
        Ok(self.keyspace().kind_of(name)?)
    }

    /// The encoded whole state of `name` (for state transfer), if it exists.
    pub fn state_bytes(&self, name: &str) -> Result<Option<(Kind, Vec<u8>)>> {
        Ok(self
            .keyspace()
            .state(name)?
            .map(|s| (s.kind(), codec::encode(s))))
    }

    /// Up to `limit` delta-log entries after sequence number `after`, oldest first.
    pub fn deltas_since(&self, after: u64, limit: usize) -> Result<Vec<(u64, LogEntry)>> {
        Ok(self.keyspace().deltas_since(after, limit)?)
    }

    /// The sequence number from which the log holds every change (some
    /// joined into later entries of their variable), if it holds any.
    pub(crate) fn log_from(&self) -> Result<Option<u64>> {
        Ok(self.keyspace().log_from()?)
    }

    /// Whether a change from incarnation `origin` was written here (by
    /// this opening or a remembered earlier one).
    pub(crate) fn written_here(&self, origin: ReplicaId) -> bool {
        self.keyspace().is_own(origin)
    }

    /// The newest delta-log sequence number.
    pub fn last_seq(&self) -> u64 {
        self.keyspace().last_seq()
    }

    /// Writes a checkpoint and flushes everything written so far to disk.
    pub fn flush(&self) -> Result<()> {
        Ok(self.keyspace().flush()?)
    }

    /// Local writes and merged deltas since the store was opened.
    pub(crate) fn op_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.inner.local_ops.load(Relaxed),
            self.inner.merged.load(Relaxed),
        )
    }

    /// Subscribes to every change, local or merged.
    pub fn changes(&self) -> ChangeFeed {
        ChangeFeed::new(self.inner.feed.subscribe(), None)
    }

    /// Returns once the replicated peer set changes (or changed since the
    /// last call): the membership watcher's wake-up, which other writes do
    /// not disturb.
    pub(crate) async fn peers_changed(&self) {
        self.inner.peers_changed.notified().await;
    }

    /// Whether bag takes and transfers are refused for now: after it opens, a
    /// node's store takes only once its peers have brought it up to date
    /// (see `Error::Fenced`).
    pub fn fenced(&self) -> bool {
        self.replica().fenced()
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

/// Runs `f`, which blocks, without stalling the node's runtime when
/// called from one of its tasks (an HTTP request waiting for an owner's
/// answer): the runtime moves its other tasks off this thread meanwhile.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A locked replica, seen as its keyspace.
struct KeyspaceGuard<'a>(MutexGuard<'a, Replica<Box<dyn Backend>>>);

impl std::ops::Deref for KeyspaceGuard<'_> {
    type Target = Keyspace<Box<dyn Backend>>;
    fn deref(&self) -> &Self::Target {
        self.0.keyspace_ref()
    }
}

impl std::ops::DerefMut for KeyspaceGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.keyspace()
    }
}
