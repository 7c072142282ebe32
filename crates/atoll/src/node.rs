//! A replicating node: a [`Store`] whose replica talks to its peers over QUIC.
//!
//! The node owns a tokio runtime. One driver task runs the replica state
//! machine the way quinn's `ConnectionDriver` runs quinn-proto: it hands the
//! replica what the network brings, sends what the replica wants sent, and
//! sleeps until the replica's next deadline, a network event, or a local write.
//! Peers' addresses live in a replicated set (`_atoll.peers`), so every node
//! learns its peers' peers and keeps connections to them.
//!
//! Over 1 100 lines: startup, membership and the peer set, host names,
//! inbound decoding and the driver loop. It is due to be split by concern
//! (startup, membership, inbound, driver).

use crate::store::now_ms;
use crate::{Config, Durability, Error, Result, Store};
use atoll_core::protocol::{Decoded, Decoder, PROTOCOL_VERSION};
use atoll_core::{Event, PeerStatus, ProtocolError, ReplicaConfig};
use atoll_crdt::ReplicaId;
use atoll_net::tls::Identity;
use atoll_net::{CloseCode, Dialer, NetEvent, Transport, TransportConfig};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How to start a [`Node`].
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The store: data directory, durability, limits.
    pub store: Config,
    /// The directory holding `ca.pem`, `cluster-id`, `node.pem`, `node.key`
    /// (made by `atoll init`).
    pub cert_dir: PathBuf,
    /// The address to listen on for peers (port 0: any free port).
    pub listen: SocketAddr,
    /// Peers to keep connections to, by address (added to the peer set).
    pub peers: Vec<SocketAddr>,
    /// Peers to keep connections to, by host name (`host:port`): each is
    /// resolved at start, and again every few seconds; when its address
    /// changes, the new one is dialed and added to the peer set, and the
    /// old one, if no peer answers there, is forgotten.
    pub peer_hosts: Vec<String>,
    /// Replication limits and timers.
    pub replica: ReplicaConfig,
    /// Transport limits and timers (`listen` and the node id are filled in).
    pub transport: Option<TransportConfig>,
    /// Where the local HTTP API listens (`None`: no HTTP API). Default:
    /// 127.0.0.1, any free port.
    pub http: Option<SocketAddr>,
    /// The bearer token the HTTP API requires; mandatory unless it listens on loopback.
    pub http_token: Option<String>,
    /// Dial every address in the replicated peer set, not only `peers` and
    /// those added here. Default: true.
    pub learn_peers: bool,
}

impl NodeConfig {
    /// Checks every setting against its range (also done by [`Node::start`]).
    pub fn validate(&self) -> std::result::Result<(), atoll_core::ConfigError> {
        self.store.validate()?;
        self.replica.validate()
    }

    /// A node storing in `data_dir`, with certificates in `cert_dir`, listening on `listen`.
    pub fn new(
        data_dir: impl Into<PathBuf>,
        cert_dir: impl Into<PathBuf>,
        listen: SocketAddr,
    ) -> Self {
        NodeConfig {
            store: Config::new(data_dir),
            cert_dir: cert_dir.into(),
            listen,
            peers: Vec::new(),
            peer_hosts: Vec::new(),
            replica: ReplicaConfig::default(),
            transport: None,
            http: Some(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))),
            http_token: None,
            learn_peers: true,
        }
    }
}

/// A snapshot of a node's state.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// The node's id (its replica id).
    pub id: ReplicaId,
    /// The address it listens on.
    pub listen: SocketAddr,
    /// The newest delta-log sequence number.
    pub last_seq: u64,
    /// Each peer's sync state, with its address when known.
    pub peers: Vec<(PeerStatus, Option<SocketAddr>)>,
    /// The last refusals (address, reason), newest last.
    pub refusals: Vec<(SocketAddr, String)>,
    /// Why each peer's last connection ended: closed by the peer (with its
    /// reason), disconnected here (with ours: say, it broke the protocol),
    /// or lost.
    pub disconnects: BTreeMap<ReplicaId, String>,
    /// Variables held in memory (loaded since the node started; a state
    /// transfer sends a variable unchanged since the last checkpoint
    /// without loading it).
    pub variables_loaded: usize,
    /// The configured or learned peer addresses this node dials that no
    /// connected peer answers from: each with its last refusal (`None`:
    /// still dialing, never refused) and since when (ms since the Unix
    /// epoch) it has been in that state.
    pub unanswered: Vec<(SocketAddr, Option<String>, u64)>,
}

#[derive(Default)]
struct Shared {
    addrs: BTreeMap<ReplicaId, SocketAddr>,
    refusals: Vec<(SocketAddr, String)>,
    /// Why each peer's last connection ended.
    disconnects: BTreeMap<ReplicaId, String>,
    /// Peers whose connection this node is closing, with the reason already
    /// in `disconnects` (the transport reports it only as closed locally).
    closing_here: BTreeSet<ReplicaId>,
    /// Peers ever connected, to count reconnects.
    seen: BTreeSet<ReplicaId>,
    reconnects: u64,
    /// Each dialed address not connected: its last refusal (`None`: none
    /// yet) and since when it has been so.
    dialing: BTreeMap<SocketAddr, (Option<String>, u64)>,
}

/// The replicated set of peer addresses every node keeps connections to.
pub(crate) const PEERS_VAR: &str = "_atoll.peers";

/// The replicated set of node ids (16 hex digits) removed from the cluster:
/// every node refuses them in the handshake.
pub(crate) const REMOVED_VAR: &str = "_atoll.removed";

/// The node ids in the replicated removed set.
pub(crate) fn removed_peers(store: &Store) -> Result<Vec<ReplicaId>> {
    Ok(store
        .system_set(REMOVED_VAR)?
        .members()?
        .iter()
        .filter_map(|id| u64::from_str_radix(id, 16).ok())
        .map(ReplicaId)
        .collect())
}

/// What the node and its HTTP API share: the transport, dialers and peer addresses.
pub(crate) struct Control {
    transport: Arc<Transport>,
    shared: Mutex<Shared>,
    dialers: Mutex<BTreeMap<SocketAddr, Dialer>>,
    runtime: tokio::runtime::Handle,
    listen: SocketAddr,
    /// The addresses the bag fence waits for (the peer set at start, less this
    /// node's own); removing a peer removes its address here too.
    fence_addrs: Mutex<BTreeSet<String>>,
}

/// Counters for `/metrics`.
pub(crate) struct Metrics {
    pub(crate) local_ops: u64,
    pub(crate) merged: u64,
    pub(crate) reconnects: u64,
    pub(crate) conflicts: u64,
}

impl Control {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn status(&self, store: &Store) -> NodeStatus {
        let (peers, variables_loaded) = {
            let mut r = store.replica();
            (r.peers(), r.keyspace().loaded())
        };
        let peers_connected: BTreeSet<ReplicaId> =
            peers.iter().filter(|p| p.connected).map(|p| p.id).collect();
        // Not under the replica's lock: the driver takes it, then this one.
        let shared = self.shared();
        NodeStatus {
            id: store.replica_id(),
            listen: self.listen,
            last_seq: store.last_seq(),
            peers: peers
                .into_iter()
                .map(|p| {
                    let addr = shared.addrs.get(&p.id).copied();
                    (p, addr)
                })
                .collect(),
            refusals: shared.refusals.clone(),
            disconnects: shared.disconnects.clone(),
            variables_loaded,
            unanswered: {
                let dialed: Vec<SocketAddr> = self
                    .dialers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .copied()
                    .collect();
                let connected: BTreeSet<SocketAddr> = shared
                    .addrs
                    .iter()
                    .filter(|(id, _)| peers_connected.contains(id))
                    .map(|(_, a)| *a)
                    .collect();
                dialed
                    .into_iter()
                    .filter(|a| !connected.contains(a))
                    .map(|a| {
                        let (why, since) = shared.dialing.get(&a).cloned().unwrap_or((None, 0));
                        (a, why, since)
                    })
                    .collect()
            },
        }
    }

    pub(crate) fn metrics(&self, store: &Store) -> Metrics {
        let (local_ops, merged) = store.op_counts();
        Metrics {
            local_ops,
            merged,
            reconnects: self.shared().reconnects,
            conflicts: store.conflicts_found(),
        }
    }

    /// Starts dialing `addr` unless already dialing it (or it is this node).
    fn dial(&self, addr: SocketAddr) {
        if addr == self.listen {
            return;
        }
        let mut dialers = self.dialers.lock().unwrap_or_else(|e| e.into_inner());
        if let std::collections::btree_map::Entry::Vacant(slot) = dialers.entry(addr) {
            let _guard = self.runtime.enter();
            slot.insert(self.transport.dial(addr));
            self.shared().dialing.insert(addr, (None, now_ms()));
        }
    }

    /// Refuses the node ids in the replicated removed set, and forgets them
    /// as peers.
    fn sync_denied(&self, store: &Store) -> Result<()> {
        let denied: BTreeSet<u64> = removed_peers(store)?.iter().map(|id| id.0).collect();
        for id in &denied {
            let id = ReplicaId(*id);
            if store.replica().peers().iter().any(|p| p.id == id) {
                store.replica().remove_peer(id);
                tracing::info!(peer = %id, "peer removed from the cluster: refusing it");
            }
            self.shared().addrs.remove(&id);
        }
        self.transport.deny(denied);
        Ok(())
    }

    /// Dials every address in the replicated peer set; stops dialing those
    /// removed; refuses the nodes removed.
    fn sync_membership(&self, store: &Store) -> Result<()> {
        self.sync_denied(store)?;
        let wanted: BTreeSet<SocketAddr> = store
            .system_set(PEERS_VAR)?
            .members()?
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        for addr in &wanted {
            self.dial(*addr);
        }
        let mut dialers = self.dialers.lock().unwrap_or_else(|e| e.into_inner());
        dialers.retain(|addr, _| wanted.contains(addr));
        Ok(())
    }

    /// Adds `addr` to the replicated peer set and dials it.
    pub(crate) fn add_peer(&self, store: &Store, addr: SocketAddr) -> Result<()> {
        store.system_set(PEERS_VAR)?.add(&addr.to_string())?;
        self.dial(addr);
        Ok(())
    }

    /// [`Control::add_peer`], then waits up to 10 s for the handshake; returns
    /// the peer's id, or the reason it was refused.
    pub(crate) async fn add_peer_and_wait(
        &self,
        store: &Store,
        addr: SocketAddr,
    ) -> Result<ReplicaId> {
        self.add_peer(store, addr)?;
        let start = tokio::time::Instant::now();
        loop {
            {
                let shared = self.shared();
                if let Some((id, _)) = shared.addrs.iter().find(|(_, a)| **a == addr) {
                    return Ok(*id);
                }
                if start.elapsed() > Duration::from_secs(10) {
                    let why = shared
                        .refusals
                        .iter()
                        .rev()
                        .find(|(a, _)| *a == addr)
                        .map_or("no answer".to_string(), |(_, r)| r.clone());
                    return Err(Error::Node(format!(
                        "could not connect to {addr} (still trying): {why}"
                    )));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Removes peer `id` from the cluster: drops its address from the peer
    /// set, stops dialing it, closes the connection, and adds it to the
    /// replicated removed set, so that every node refuses it from then on
    /// (its certificate stays valid; this is atoll's revocation). Returns
    /// whether it was a peer.
    pub(crate) fn remove_peer(&self, store: &Store, id: ReplicaId) -> Result<bool> {
        let known = store.replica().peers().iter().any(|p| p.id == id);
        let addr = self.shared().addrs.remove(&id);
        if let Some(addr) = addr {
            self.forget_addr(store, addr)?;
        }
        if known || addr.is_some() {
            store
                .system_set(REMOVED_VAR)?
                .add(&format!("{:016x}", id.0))?;
        }
        self.transport
            .disconnect(id.0, CloseCode::PeerRemoved, "peer removed");
        store.replica().remove_peer(id);
        self.sync_denied(store)?;
        Ok(known || addr.is_some())
    }

    /// Lifts the removal of node `id`: it leaves the replicated removed set,
    /// so that every node accepts it again as that set replicates. It
    /// reconnects by itself (it keeps dialing the addresses it knows); its
    /// address is not added back to the peer set (`peer add` does that).
    /// Returns whether it was removed. A removal made concurrently on another
    /// node, not yet seen here, wins: the node stays removed.
    pub(crate) fn readmit_peer(&self, store: &Store, id: ReplicaId) -> Result<bool> {
        let removed = store
            .system_set(REMOVED_VAR)?
            .remove(&format!("{:016x}", id.0))?;
        if !removed {
            return Ok(false);
        }
        self.sync_denied(store)?;
        tracing::info!(peer = %id, "peer readmitted to the cluster");
        Ok(true)
    }

    /// Forgets the peer at `addr`, whether or not it ever answered: the one
    /// connected from there, if any, as [`Control::remove_peer`] does, and the
    /// address itself. A dead address stops keeping bag takes fenced.
    /// Returns whether anything was forgotten.
    pub(crate) fn remove_peer_at(&self, store: &Store, addr: SocketAddr) -> Result<bool> {
        let id = self
            .shared()
            .addrs
            .iter()
            .find(|(_, a)| **a == addr)
            .map(|(id, _)| *id);
        if let Some(id) = id {
            return self.remove_peer(store, id);
        }
        self.forget_addr(store, addr)
    }

    /// Drops `addr` from the peer set, its dialer and the fence's count.
    fn forget_addr(&self, store: &Store, addr: SocketAddr) -> Result<bool> {
        let in_set = store.system_set(PEERS_VAR)?.remove(&addr.to_string())?;
        let dialed = self
            .dialers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr)
            .is_some();
        let mut fence = self.fence_addrs.lock().unwrap_or_else(|e| e.into_inner());
        let fenced = fence.remove(&addr.to_string());
        if fenced {
            store.replica().expect_peers(fence.len());
        }
        Ok(in_set || dialed || fenced)
    }
}

/// A running node. It dereferences to its [`Store`], so the typed handles
/// (`node.counter("hits")?`) work as on a store. Dropping it shuts it down.
pub struct Node {
    store: Store,
    control: Arc<Control>,
    stop: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    http: Option<SocketAddr>,
}

impl std::ops::Deref for Node {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Node {
    /// Opens the store, binds the transport and the HTTP API, dials the
    /// configured and replicated peers, and starts replicating.
    pub fn start(config: NodeConfig) -> Result<Node> {
        config.validate()?;
        if let Some(addr) = config.http {
            if !addr.ip().is_loopback() && config.http_token.as_deref().is_none_or(str::is_empty) {
                return Err(Error::Node(format!(
                    "the HTTP API would listen on {addr}, which is not loopback: set http_token"
                )));
            }
        }
        let most = atoll_store::MAX_RECORD_LEN;
        if config.replica.max_state_len == 0 || config.replica.max_state_len > most {
            return Err(Error::Node(format!(
                "replica.max_state_len must be between 1 and {most} (the largest log entry read back), not {}",
                config.replica.max_state_len
            )));
        }
        if config.replica.state_part_bytes == 0 {
            return Err(Error::Node(
                "replica.state_part_bytes must be at least 1".into(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("atoll-node")
            .enable_all()
            .build()
            .map_err(|e| Error::Node(format!("cannot start the runtime: {e}")))?;
        let identity = Identity::load(&config.cert_dir).map_err(|e| Error::Node(e.to_string()))?;
        let store = Store::open_with(config.store.clone())?;
        store.replica().set_config(config.replica.clone());

        let mut tc = config.transport.clone().unwrap_or_else(|| {
            let mut tc = TransportConfig::new(config.listen, 0, PROTOCOL_VERSION);
            // A frame is a message: one larger than the replica accepts is
            // refused as it is read, before it is allocated.
            tc.max_frame_len = config.replica.max_message_len.saturating_add(4096);
            tc
        });
        tc.listen = config.listen;
        tc.node_id = store.replica_id().0;
        tc.incarnation = store.incarnation().0;
        tc.protocol_version = PROTOCOL_VERSION;
        let (transport, net_rx) = {
            let _guard = runtime.enter();
            Transport::bind(tc, &identity).map_err(|e| Error::Node(e.to_string()))?
        };
        let listen = transport
            .local_addr()
            .map_err(|e| Error::Node(e.to_string()))?;
        // Bag takes wait until every peer in the peer set has brought this
        // node up to date (it may run on a restored backup). Peer ids are
        // learned only as peers connect, so the replica is told how many
        // addresses to wait for (all but this node's own).
        let mut fence_addrs: BTreeSet<String> = store
            .system_set(PEERS_VAR)?
            .members()?
            .into_iter()
            .collect();
        fence_addrs.extend(config.peers.iter().map(|a| a.to_string()));
        let named: Vec<(String, Option<SocketAddr>)> = config
            .peer_hosts
            .iter()
            .map(|host| (host.clone(), resolve_host(host)))
            .collect();
        fence_addrs.extend(named.iter().filter_map(|(_, a)| a.map(|a| a.to_string())));
        fence_addrs.remove(&listen.to_string());
        store.replica().expect_peers(fence_addrs.len());
        store.set_running();
        let control = Arc::new(Control {
            transport: Arc::new(transport),
            shared: Mutex::new(Shared::default()),
            dialers: Mutex::new(BTreeMap::new()),
            runtime: runtime.handle().clone(),
            listen,
            fence_addrs: Mutex::new(fence_addrs),
        });
        let http = match config.http {
            Some(addr) => {
                let listener = runtime
                    .block_on(tokio::net::TcpListener::bind(addr))
                    .map_err(|e| Error::Node(format!("cannot listen for HTTP on {addr}: {e}")))?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| Error::Node(e.to_string()))?;
                let api = crate::http::Api {
                    store: store.clone(),
                    control: control.clone(),
                    token: config.http_token.clone().filter(|t| !t.is_empty()),
                };
                runtime.spawn(async move {
                    if let Err(e) = axum::serve(listener, crate::http::router(api)).await {
                        tracing::error!("HTTP API stopped: {e}");
                    }
                });
                Some(bound)
            }
            None => None,
        };
        let (stop, stopped) = oneshot::channel();
        let flush_every = match config.store.durability {
            Durability::Durable => None,
            Durability::Buffered { flush_every_ms } => {
                Some(Duration::from_millis(flush_every_ms.max(1)))
            }
        };
        // Messages are decoded on their way to the driver, so that the next
        // is decoded (on another thread) while the driver merges the last.
        // Two decoded messages at most wait: the queue bounds memory, and a
        // full one holds the connections back.
        let (decoded_tx, decoded_rx) = mpsc::channel(2);
        runtime.spawn(decode_inbound(
            net_rx,
            decoded_tx,
            store.replica().decoder(),
        ));
        runtime.spawn(drive(
            store.clone(),
            control.clone(),
            decoded_rx,
            stopped,
            flush_every,
        ));
        runtime.spawn(watch_membership(
            store.clone(),
            control.clone(),
            config.learn_peers,
        ));
        let node = Node {
            store,
            control,
            stop: Some(stop),
            runtime: Some(runtime),
            http,
        };
        // Removed nodes are refused before anyone is dialed.
        node.control.sync_denied(&node.store)?;
        for addr in config
            .peers
            .iter()
            .chain(named.iter().filter_map(|(_, a)| a.as_ref()))
        {
            node.control.add_peer(&node.store, *addr)?;
        }
        if !named.is_empty() {
            if let Some(rt) = &node.runtime {
                rt.spawn(follow_names(
                    node.store.clone(),
                    node.control.clone(),
                    named,
                ));
            }
        }
        if config.learn_peers {
            node.control.sync_membership(&node.store)?;
        }
        tracing::info!(id = %node.store.replica_id(), %listen, "node started");
        Ok(node)
    }

    /// The address the node listens on for peers.
    pub fn local_addr(&self) -> SocketAddr {
        self.control.listen
    }

    /// The address of the local HTTP API, if it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Keeps a connection to the peer at `addr` (reconnecting as needed), and
    /// adds it to the replicated peer set so other nodes learn it too.
    pub fn add_peer(&self, addr: SocketAddr) -> Result<()> {
        self.control.add_peer(&self.store, addr)
    }

    /// Forgets peer `id`; returns whether it was one.
    pub fn remove_peer(&self, id: ReplicaId) -> Result<bool> {
        self.control.remove_peer(&self.store, id)
    }

    /// The node ids removed from the cluster (by any node): every node
    /// refuses them.
    pub fn removed_peers(&self) -> Result<Vec<ReplicaId>> {
        removed_peers(&self.store)
    }

    /// Lifts the removal of node `id` (see [`Node::remove_peer`]): every node
    /// accepts it again once the change replicates, and it reconnects by
    /// itself. Returns whether it had been removed. A removal concurrent with
    /// this one (made on another node, not yet seen here) wins.
    pub fn readmit_peer(&self, id: ReplicaId) -> Result<bool> {
        self.control.readmit_peer(&self.store, id)
    }

    /// Forgets the peer at `addr`, connected or not (one that never answered
    /// too): it leaves the replicated peer set, is no longer dialed, and bag
    /// takes no longer wait for it. Returns whether anything was forgotten.
    pub fn remove_peer_at(&self, addr: SocketAddr) -> Result<bool> {
        self.control.remove_peer_at(&self.store, addr)
    }

    /// Cuts the node off the network, or reconnects it (for demos and tests:
    /// a real partition looks the same to the node).
    pub fn set_partitioned(&self, partitioned: bool) {
        self.control.transport.set_partitioned(partitioned);
    }

    /// The store (also reachable through `Deref`).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The node's state and its peers'.
    pub fn status(&self) -> NodeStatus {
        self.control.status(&self.store)
    }

    /// Stops replicating, closes connections and flushes the store.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.control
            .dialers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        if let Some(rt) = self.runtime.take() {
            let transport = self.control.transport.clone();
            rt.block_on(async move { transport.shutdown().await });
            rt.shutdown_timeout(Duration::from_secs(2));
            let flushed = self.store.flush();
            match &flushed {
                Ok(()) => {
                    tracing::info!(id = %self.store.replica_id(), "node stopped; data flushed")
                }
                Err(e) => {
                    tracing::error!(id = %self.store.replica_id(), "node stopped; flush failed: {e}")
                }
            }
            return flushed;
        }
        self.store.flush()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = self.stop_all() {
            tracing::error!("node shutdown: {e}");
        }
    }
}

const MAX_REFUSALS: usize = 16;

/// How often peers given by host name are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// Resolves a peer's `host:port` (or address) to one address, IPv4 first
/// ("localhost" names both, and a node listens on one); the error says why.
/// Blocks while the name is looked up.
pub fn resolve_peer(host: &str) -> std::result::Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    first_v4(host.to_socket_addrs().map_err(|e| e.to_string())?)
}

/// [`resolve_peer`] without blocking the runtime.
pub(crate) async fn resolve_peer_async(host: &str) -> std::result::Result<SocketAddr, String> {
    first_v4(
        tokio::net::lookup_host(host)
            .await
            .map_err(|e| e.to_string())?,
    )
}

fn first_v4(addrs: impl Iterator<Item = SocketAddr>) -> std::result::Result<SocketAddr, String> {
    addrs
        .min_by_key(|a| a.is_ipv6())
        .ok_or_else(|| "the name resolves to no address".to_string())
}

/// A host name's address now (IPv4 first); `None`, logged, if it does not
/// resolve.
fn resolve_host(host: &str) -> Option<SocketAddr> {
    match resolve_peer(host) {
        Ok(addr) => Some(addr),
        Err(e) => {
            tracing::warn!(%host, "peer host does not resolve (trying again): {e}");
            None
        }
    }
}

/// Resolves the peers given by host name again and again; follows each to
/// its new address (see `NodeConfig::peer_hosts`). Ends with the node's
/// runtime.
async fn follow_names(
    store: Store,
    control: Arc<Control>,
    mut named: Vec<(String, Option<SocketAddr>)>,
) {
    loop {
        tokio::time::sleep(RESOLVE_EVERY).await;
        for (host, current) in named.iter_mut() {
            let now = match resolve_peer_async(host).await {
                Ok(addr) => Some(addr),
                Err(e) => {
                    tracing::debug!(%host, "peer host does not resolve: {e}");
                    None
                }
            };
            let Some(new) = now.filter(|a| Some(*a) != *current) else {
                continue;
            };
            tracing::info!(%host, %new, old = ?current, "peer host resolves to a new address");
            if let Err(e) = control.add_peer(&store, new) {
                tracing::warn!(%host, "could not add its new address: {e}");
                continue;
            }
            if let Some(old) = current.replace(new) {
                let answered = control.shared().addrs.values().any(|a| *a == old);
                if !answered {
                    let mut fence = control
                        .fence_addrs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if fence.remove(&old.to_string()) {
                        // The fence waits for the host at its new address.
                        fence.insert(new.to_string());
                    }
                    drop(fence);
                    if let Err(e) = control.forget_addr(&store, old) {
                        tracing::warn!(%host, "could not forget its old address: {e}");
                    }
                }
            }
        }
    }
}

/// Applies changes of the replicated peer set (dialing its addresses if
/// `learn_peers`) and removed set. It wakes only for those (not for every
/// write), and ends with the node's runtime.
async fn watch_membership(store: Store, control: Arc<Control>, learn_peers: bool) {
    loop {
        store.peers_changed().await;
        let synced = if learn_peers {
            control.sync_membership(&store)
        } else {
            control.sync_denied(&store)
        };
        if let Err(e) = synced {
            tracing::warn!("peer set: {e}");
        }
    }
}

/// Messages at least this large are decoded apart from the runtime's workers.
const DECODE_APART_BYTES: usize = 64 << 10;

/// A transport event on its way to the driver, a message decoded.
enum Inbound {
    Connected {
        peer: u64,
        incarnation: u64,
        addr: std::net::SocketAddr,
    },
    Message {
        peer: u64,
        decoded: Decoded,
    },
    Disconnected {
        peer: u64,
        reason: String,
    },
    Refused {
        addr: std::net::SocketAddr,
        reason: String,
    },
}

/// Large messages decoded at once, each on a blocking-pool thread: the parts
/// of a state arrive faster than one thread decodes them.
const DECODE_AHEAD: usize = 2;

/// Events decoded or waiting, at most: beyond it, the transport's channel
/// holds the rest (and the connection's flow control the sender).
const DECODE_QUEUE: usize = 64;

/// An event in [`decode_inbound`]'s queue.
enum Pending {
    Ready(Inbound),
    Decoding {
        peer: u64,
        task: tokio::task::JoinHandle<Decoded>,
    },
}

/// Decodes each message (and the deltas in it) as it arrives and hands it on,
/// in arrival order. Decoding needs no lock: it runs beside the driver. Up
/// to [`DECODE_AHEAD`] large messages are decoded at once, on blocking-pool
/// threads, which the OS runs on whichever cores are free (a runtime worker
/// would wait for the driver: it takes the woken driver first); what is
/// decoded is handed on in the order it arrived.
async fn decode_inbound(
    mut net: mpsc::Receiver<NetEvent>,
    to_driver: mpsc::Sender<Inbound>,
    decoder: Decoder,
) {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    loop {
        while matches!(queue.front(), Some(Pending::Ready(_))) {
            let Some(Pending::Ready(ev)) = queue.pop_front() else {
                unreachable!("matched above");
            };
            if to_driver.send(ev).await.is_err() {
                return;
            }
        }
        if !open && queue.is_empty() {
            return;
        }
        let decoding = queue
            .iter()
            .filter(|p| matches!(p, Pending::Decoding { .. }))
            .count();
        let room = decoding < DECODE_AHEAD && queue.len() < DECODE_QUEUE;
        tokio::select! {
            // The front one is decoded (only a decoding one can be at the
            // front here: ready ones were handed on above).
            done = async {
                match queue.front_mut() {
                    Some(Pending::Decoding { task, .. }) => task.await,
                    _ => std::future::pending().await,
                }
            } => {
                let Some(Pending::Decoding { peer, .. }) = queue.pop_front() else {
                    unreachable!("awaited above");
                };
                match done {
                    Ok(decoded) => queue.push_front(Pending::Ready(Inbound::Message { peer, decoded })),
                    // Only a panic (none is expected: decoding returns
                    // errors) or the runtime shutting down gets here.
                    Err(e) => tracing::error!("decoding a message from {peer:016x} failed: {e}"),
                }
            }
            ev = net.recv(), if open && room => {
                let Some(ev) = ev else {
                    open = false;
                    continue;
                };
                queue.push_back(match ev {
                    NetEvent::Message { peer, payload } if payload.len() >= DECODE_APART_BYTES => {
                        Pending::Decoding {
                            peer,
                            task: tokio::task::spawn_blocking(move || decoder.decode(&payload)),
                        }
                    }
                    NetEvent::Message { peer, payload } => Pending::Ready(Inbound::Message {
                        peer,
                        decoded: decoder.decode(&payload),
                    }),
                    NetEvent::Connected {
                        peer,
                        incarnation,
                        addr,
                    } => Pending::Ready(Inbound::Connected {
                        peer,
                        incarnation,
                        addr,
                    }),
                    NetEvent::Disconnected { peer, reason } => {
                        Pending::Ready(Inbound::Disconnected { peer, reason })
                    }
                    NetEvent::Refused { addr, reason } => {
                        Pending::Ready(Inbound::Refused { addr, reason })
                    }
                });
            }
        }
    }
}

async fn drive(
    store: Store,
    control: Arc<Control>,
    mut net: mpsc::Receiver<Inbound>,
    mut stopped: oneshot::Receiver<()>,
    flush_every: Option<Duration>,
) {
    let transport = control.transport.clone();
    let mut flush_tick = tokio::time::interval(flush_every.unwrap_or(Duration::from_secs(3600)));
    // Each second, a link whose connection received anything (keep-alives
    // included) counts as heard from.
    let mut heard_tick = tokio::time::interval(Duration::from_secs(1));
    let mut heard: BTreeMap<u64, u64> = BTreeMap::new();
    loop {
        // Outputs first: transmits, then events, then the next deadline.
        // The replica builds each interval as it is polled; the lock is let go
        // between them, so that the network carries one while the next is built
        // and local writes are not held up.
        loop {
            let Some(t) = store.replica().poll_transmit() else {
                break;
            };
            // A full or missing connection drops the frame; the replica sends again.
            transport.send(t.to.0, t.payload);
            // The connection's writer was woken into this worker's LIFO slot,
            // which no other worker steals: let it run now.
            tokio::task::yield_now().await;
        }
        let (deadline, applied) = {
            let mut r = store.replica();
            let mut applied = Vec::new();
            while let Some(e) = r.poll_event() {
                match e {
                    Event::Applied(a) => applied.push(a),
                    Event::StateTransferStarted { peer, why } => {
                        tracing::info!(%peer, %why, "state transfer started");
                    }
                    Event::StateTransferBlocked { peer, blocked } => {
                        tracing::warn!(%peer, "state transfer held back: {blocked}");
                    }
                    Event::SendFailed { peer, error } => {
                        tracing::error!(%peer, %error, "could not read the log to send to a peer; retrying on the next input");
                    }
                    Event::Conflict(c) => store.conflict_found(&c),
                    Event::StateTransferFinished { peer, as_of } => {
                        tracing::info!(%peer, as_of, "state transfer finished");
                    }
                    Event::PeerStuck { peer, reason } => {
                        tracing::warn!(%peer, %reason, "deltas from the peer are refused here and not acknowledged; it sends them again until they merge (see `peer list`)");
                    }
                    Event::Unfenced => {
                        tracing::info!(
                            "every peer has brought this node up to date; bag takes allowed"
                        );
                    }
                }
            }
            (r.poll_timeout(), applied)
        };
        for a in applied {
            store.publish(a);
        }
        let sleep = match deadline {
            Some(at) => Duration::from_millis(at.saturating_sub(now_ms())),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = &mut stopped => return,
            _ = store.woken() => {}
            _ = tokio::time::sleep(sleep) => store.replica().handle_timeout(now_ms()),
            _ = flush_tick.tick(), if flush_every.is_some() => {
                let mut r = store.replica();
                if let Err(e) = r.keyspace().sync() {
                    tracing::error!("background flush failed: {e}");
                }
                r.handle_local_writes(now_ms());
            }
            _ = heard_tick.tick() => {
                let counts = transport.datagrams_received();
                let now = now_ms();
                let mut r = store.replica();
                for (peer, n) in &counts {
                    if heard.get(peer).is_some_and(|before| before != n) {
                        r.heard_from(ReplicaId(*peer), now);
                    }
                }
                drop(r);
                heard = counts.into_iter().collect();
            }
            ev = net.recv() => {
                let Some(ev) = ev else { return };
                on_net_event(&store, &transport, &control.shared, ev);
            }
        }
    }
}

fn on_net_event(store: &Store, transport: &Transport, shared: &Mutex<Shared>, ev: Inbound) {
    let now = now_ms();
    match ev {
        Inbound::Message { peer, decoded } => {
            on_message(store, transport, shared, peer, decoded);
        }
        Inbound::Connected {
            peer,
            incarnation,
            addr,
        } => {
            let id = ReplicaId(peer);
            {
                let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                s.addrs.insert(id, addr);
                if let Some(state) = s.dialing.get_mut(&addr) {
                    *state = (None, now);
                }
                // A new connection: whatever was being closed here is over.
                s.closing_here.remove(&id);
                if !s.seen.insert(id) {
                    s.reconnects += 1;
                }
            }
            let mut r = store.replica();
            r.add_peer(id);
            r.set_connected(id, Some(ReplicaId(incarnation)), now);
            tracing::info!(peer = %id, %addr, "peer connected");
        }
        Inbound::Disconnected { peer, reason } => {
            store.replica().set_connected(ReplicaId(peer), None, now);
            tracing::info!("peer {peer:016x} disconnected: {reason}");
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(addr) = s.addrs.get(&ReplicaId(peer)).copied() {
                if let Some(state) = s.dialing.get_mut(&addr) {
                    *state = (None, now);
                }
            }
            // A connection closed here for a reason ends as "closed
            // locally": keep the reason, recorded when it was closed.
            let ours = s.closing_here.remove(&ReplicaId(peer));
            if !(ours && reason == "closed locally") {
                s.disconnects
                    .insert(ReplicaId(peer), bounded_reason(&reason));
            }
        }
        Inbound::Refused { addr, reason } => {
            // Two nodes dialing each other at once keep one connection:
            // the other one's closing is no refusal.
            if reason.contains("duplicate connection") {
                return;
            }
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((why, since)) = s.dialing.get_mut(&addr) {
                // Compared as kept (cut to a status line's length): the
                // same long refusal again keeps its `since`.
                let bounded = bounded_reason(&reason);
                if why.as_deref() != Some(bounded.as_str()) {
                    *why = Some(bounded);
                    *since = now;
                }
            }
            s.refusals.push((addr, reason));
            if s.refusals.len() > MAX_REFUSALS {
                s.refusals.remove(0);
            }
        }
    }
}

/// A close reason, cut to a length fit for a status line.
fn bounded_reason(reason: &str) -> String {
    const MAX: usize = 400;
    match reason.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &reason[..at]),
        None => reason.to_string(),
    }
}

fn on_message(
    store: &Store,
    transport: &Transport,
    shared: &Mutex<Shared>,
    peer: u64,
    decoded: Decoded,
) {
    let result = store
        .replica()
        .handle_decoded(now_ms(), ReplicaId(peer), decoded);
    match result {
        Ok(()) => {}
        Err(e @ (ProtocolError::Hostile { .. } | ProtocolError::UnknownPeer(_))) => {
            tracing::warn!("disconnecting peer {peer:016x}: {e}");
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            s.disconnects.insert(
                ReplicaId(peer),
                bounded_reason(&format!("disconnected here: {e}")),
            );
            s.closing_here.insert(ReplicaId(peer));
            drop(s);
            transport.disconnect(peer, CloseCode::ProtocolViolation, &e.to_string());
        }
        // Reported once per run by `Event::PeerStuck`, and in `peer list`.
        Err(e) => tracing::debug!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_core::protocol::Message;
    use atoll_crdt::variable::{Bytes, Kind, State};
    use atoll_crdt::OrSet;

    fn peer_of(ev: &Inbound) -> u64 {
        match ev {
            Inbound::Connected { peer, .. }
            | Inbound::Message { peer, .. }
            | Inbound::Disconnected { peer, .. } => *peer,
            Inbound::Refused { .. } => u64::MAX,
        }
    }

    /// Large messages are decoded several at once, but every event reaches
    /// the driver in the order it arrived: a slow decode holds back the
    /// quicker ones behind it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decoded_events_keep_their_arrival_order() {
        let mut set = OrSet::new();
        for i in 0..30_000u32 {
            set.add(ReplicaId(u64::MAX - 1), Bytes::from(i.to_be_bytes()));
        }
        let part = State::Set(set).encode_part(None, usize::MAX).unwrap().bytes;
        // A whole set of 30 000 members: slow to decode.
        let slow = Message::StatePart {
            as_of: 1,
            after: String::new(),
            name: "s".into(),
            kind: Kind::Set,
            version: 1,
            index: 0,
            part,
            end: true,
            last: true,
        }
        .encode();
        assert!(slow.len() >= DECODE_APART_BYTES);
        let (net_tx, net_rx) = mpsc::channel(256);
        let (tx, mut rx) = mpsc::channel(256);
        let decoder = Decoder {
            max_message_len: 64 << 20,
            max_delta_len: 64 << 20,
            max_state_len: 64 << 20,
        };
        let task = tokio::spawn(decode_inbound(net_rx, tx, decoder));
        let mut sent = Vec::new();
        for peer in 0..60u64 {
            let ev = match peer % 5 {
                0 => NetEvent::Message {
                    peer,
                    payload: slow.clone(),
                },
                // Large, and refused at once: done before the slow one.
                1 => NetEvent::Message {
                    peer,
                    payload: vec![0xff; DECODE_APART_BYTES],
                },
                2 => NetEvent::Message {
                    peer,
                    payload: vec![1, 2, 3],
                },
                3 => NetEvent::Connected {
                    peer,
                    incarnation: 1,
                    addr: "127.0.0.1:1".parse().unwrap(),
                },
                _ => NetEvent::Disconnected {
                    peer,
                    reason: String::new(),
                },
            };
            net_tx.send(ev).await.unwrap();
            sent.push(peer);
        }
        drop(net_tx);
        let mut got = Vec::new();
        while let Some(ev) = rx.recv().await {
            got.push(peer_of(&ev));
        }
        assert_eq!(got, sent);
        task.await.unwrap();
    }
}
