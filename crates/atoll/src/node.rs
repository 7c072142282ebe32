//! A replicating node: a [`Store`] whose replica talks to its peers over QUIC.
//!
//! The node owns a tokio runtime. One driver task runs the replica state
//! machine the way quinn's `ConnectionDriver` runs quinn-proto: it hands the
//! replica what the network brings, sends what the replica wants sent, and
//! sleeps until the replica's next deadline, a network event, or a local write.
//! Peers' addresses live in a replicated set (`_atoll.peers`), so every node
//! learns its peers' peers and keeps connections to them.
//!
//! By concern: this module starts and stops the node; `membership` keeps
//! the peer set and the node's control; `hosts` resolves and follows peers
//! given by name; `inbound` decodes what arrives; `driver` runs the replica.

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

mod driver;
mod hosts;
mod inbound;
mod membership;

use driver::drive;
pub use hosts::resolve_peer;
pub(crate) use hosts::resolve_peer_async;
use hosts::{follow_names, resolve_host};
use inbound::{decode_inbound, Inbound};
use membership::watch_membership;
pub(crate) use membership::Control;
pub(crate) use membership::{removed_peers, PEERS_VAR, REMOVED_VAR};

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
    /// A bearer token of the HTTP API that reaches everything (an admin
    /// token of every namespace). It, or one of `http_tokens`, is
    /// mandatory unless the API listens on loopback; with neither, the API
    /// takes requests without a token.
    pub http_token: Option<String>,
    /// The HTTP API's other tokens, each reaching some namespaces to read,
    /// write or administer (kept hashed: `HttpToken::generate`).
    pub http_tokens: Vec<crate::HttpToken>,
    /// Dial every address in the replicated peer set, not only `peers` and
    /// those added here. Default: true.
    pub learn_peers: bool,
    /// Consistency checks in the background, and where reports go
    /// (docs/consistency.md). Default: none, reports to the log.
    pub checks: CheckConfig,
}

/// Background consistency checks and their reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// How often the node checks its peers (ms; `None`: never by itself).
    pub every_ms: Option<u64>,
    /// Where every check's report goes.
    pub exporter: CheckExporter,
    /// Which reports are exported.
    pub report: CheckReporting,
}

/// Where a check's report goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CheckExporter {
    /// A tracing event (target `atoll::check`), the report as JSON.
    #[default]
    Log,
    /// A line of JSON appended to this file, opened again for each report
    /// (so that a rotated file is followed).
    File(PathBuf),
}

/// Which reports are exported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CheckReporting {
    /// Every report.
    Always,
    /// Only those where some peer is not `ok`.
    #[default]
    OnConflict,
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
            http_tokens: Vec::new(),
            learn_peers: true,
            checks: CheckConfig::default(),
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
    /// Variables held in memory (used lately, within `Config::cache_bytes`
    /// if set; a state transfer sends a variable unchanged since the last
    /// checkpoint without loading it).
    pub variables_loaded: usize,
    /// What they count against `Config::cache_bytes`: their encoded size
    /// (as last read or checkpointed) plus a fixed cost each.
    pub resident_bytes: usize,
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
            if !addr.ip().is_loopback()
                && config.http_token.as_deref().is_none_or(str::is_empty)
                && config.http_tokens.is_empty()
            {
                return Err(Error::HttpTokenRequired { addr });
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("atoll-node")
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                what: "cannot start the runtime".into(),
                source,
            })?;
        let identity = Identity::load(&config.cert_dir)?;
        let store = Store::open_with(config.store.clone())?;
        store.replica().set_config(config.replica.clone());
        store.replica().announce_site(crate::store::clock())?;

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
            Transport::bind(tc, &identity)?
        };
        let listen = transport.local_addr()?;
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
                    .map_err(|source| Error::Io {
                        what: format!("cannot listen for HTTP on {addr}"),
                        source,
                    })?;
                let bound = listener.local_addr().map_err(|source| Error::Io {
                    what: "the HTTP listener's address".into(),
                    source,
                })?;
                let api = crate::http::Api {
                    store: store.clone(),
                    control: control.clone(),
                    tokens: crate::tokens::Tokens::new(
                        config.http_token.as_deref(),
                        &config.http_tokens,
                    ),
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
        store.set_check_export(config.checks.exporter.clone(), config.checks.report);
        if let Some(every) = config.checks.every_ms.filter(|&ms| ms > 0) {
            let store = store.clone();
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(every));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let s = store.clone();
                    // The report is exported as every check's is.
                    if let Ok(Err(e)) =
                        tokio::task::spawn_blocking(move || s.check_consistency()).await
                    {
                        tracing::warn!("background check failed: {e}");
                    }
                }
            });
        }
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

    /// Checks that every reachable peer holds the same data as this node,
    /// and repairs the variables that diverge: the report says, per peer,
    /// `ok`, `in_flight`, `divergent` or `unreachable`
    /// (docs/consistency.md).
    pub fn check(&self) -> crate::Result<atoll_core::CheckReport> {
        self.store.check_consistency()
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
