//! A replicating node: a [`Store`] whose replica talks to its peers over QUIC.
//!
//! The node owns a tokio runtime. One driver task runs the replica state
//! machine the way quinn's `ConnectionDriver` runs quinn-proto: it hands the
//! replica what the network brings, sends what the replica wants sent, and
//! sleeps until the replica's next deadline, a network event, or a local write.

use crate::store::now_ms;
use crate::{Config, Durability, Error, Result, Store};
use atoll_core::protocol::PROTOCOL_VERSION;
use atoll_core::{Event, PeerStatus, ProtocolError, ReplicaConfig};
use atoll_crdt::ReplicaId;
use atoll_net::tls::Identity;
use atoll_net::{CloseCode, Dialer, NetEvent, Transport, TransportConfig};
use std::collections::BTreeMap;
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
    /// Peers to keep connections to, by address.
    pub peers: Vec<SocketAddr>,
    /// Replication limits and timers.
    pub replica: ReplicaConfig,
    /// Transport limits and timers (`listen` and the node id are filled in).
    pub transport: Option<TransportConfig>,
}

impl NodeConfig {
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
            replica: ReplicaConfig::default(),
            transport: None,
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
    /// Each peer's sync state, with its address when connected.
    pub peers: Vec<(PeerStatus, Option<SocketAddr>)>,
    /// The last refusals (address, reason), newest last.
    pub refusals: Vec<(SocketAddr, String)>,
}

#[derive(Default)]
struct Shared {
    addrs: BTreeMap<ReplicaId, SocketAddr>,
    refusals: Vec<(SocketAddr, String)>,
}

/// A running node. It dereferences to its [`Store`], so the typed handles
/// (`node.counter("hits")?`) work as on a store. Dropping it shuts it down.
pub struct Node {
    store: Store,
    transport: Arc<Transport>,
    shared: Arc<Mutex<Shared>>,
    dialers: Mutex<Vec<Dialer>>,
    stop: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    listen: SocketAddr,
}

impl std::ops::Deref for Node {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Node {
    /// Opens the store, binds the transport, dials the configured peers and
    /// starts replicating.
    pub fn start(config: NodeConfig) -> Result<Node> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("atoll-node")
            .enable_all()
            .build()
            .map_err(|e| Error::Node(format!("cannot start the runtime: {e}")))?;
        let identity = Identity::load(&config.cert_dir).map_err(|e| Error::Node(e.to_string()))?;
        let store = Store::open_with(config.store.clone())?;
        store.replica().set_config(config.replica.clone());
        let mut tc = config
            .transport
            .clone()
            .unwrap_or_else(|| TransportConfig::new(config.listen, 0, PROTOCOL_VERSION));
        tc.listen = config.listen;
        tc.node_id = store.replica_id().0;
        tc.protocol_version = PROTOCOL_VERSION;
        let (transport, net_rx) = {
            let _guard = runtime.enter();
            Transport::bind(tc, &identity).map_err(|e| Error::Node(e.to_string()))?
        };
        let listen = transport
            .local_addr()
            .map_err(|e| Error::Node(e.to_string()))?;
        let transport = Arc::new(transport);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (stop, stopped) = oneshot::channel();
        let flush_every = match config.store.durability {
            Durability::Durable => None,
            Durability::Buffered { flush_every_ms } => {
                Some(Duration::from_millis(flush_every_ms.max(1)))
            }
        };
        runtime.spawn(drive(
            store.clone(),
            transport.clone(),
            net_rx,
            shared.clone(),
            stopped,
            flush_every,
        ));
        let node = Node {
            store,
            transport,
            shared,
            dialers: Mutex::new(Vec::new()),
            stop: Some(stop),
            runtime: Some(runtime),
            listen,
        };
        for addr in &config.peers {
            node.add_peer(*addr);
        }
        tracing::info!(id = %node.store.replica_id(), %listen, "node started");
        Ok(node)
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Keeps a connection to the peer at `addr` (reconnecting as needed).
    pub fn add_peer(&self, addr: SocketAddr) {
        let rt = self.runtime.as_ref().expect("running");
        let _guard = rt.enter();
        let dialer = self.transport.dial(addr);
        self.dialers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dialer);
    }

    /// Cuts the node off the network, or reconnects it (for demos and tests:
    /// a real partition looks the same to the node).
    pub fn set_partitioned(&self, partitioned: bool) {
        self.transport.set_partitioned(partitioned);
    }

    /// The store (also reachable through `Deref`).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The node's state and its peers'.
    pub fn status(&self) -> NodeStatus {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let peers = self.store.replica().peers();
        NodeStatus {
            id: self.store.replica_id(),
            listen: self.listen,
            last_seq: self.store.last_seq(),
            peers: peers
                .into_iter()
                .map(|p| {
                    let addr = shared.addrs.get(&p.id).copied();
                    (p, addr)
                })
                .collect(),
            refusals: shared.refusals.clone(),
        }
    }

    /// Stops replicating, closes connections and flushes the store.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.dialers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        if let Some(rt) = self.runtime.take() {
            let transport = self.transport.clone();
            rt.block_on(async move { transport.shutdown().await });
            rt.shutdown_timeout(Duration::from_secs(2));
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

async fn drive(
    store: Store,
    transport: Arc<Transport>,
    mut net: mpsc::Receiver<NetEvent>,
    shared: Arc<Mutex<Shared>>,
    mut stopped: oneshot::Receiver<()>,
    flush_every: Option<Duration>,
) {
    let mut flush_tick = tokio::time::interval(flush_every.unwrap_or(Duration::from_secs(3600)));
    loop {
        // Outputs first: transmits, then events, then the next deadline.
        let (deadline, applied) = {
            let mut r = store.replica();
            while let Some(t) = r.poll_transmit() {
                // A full or missing connection drops the frame; the replica sends again.
                transport.send(t.to.0, t.payload);
            }
            let mut applied = Vec::new();
            while let Some(e) = r.poll_event() {
                match e {
                    Event::Applied(a) => applied.push(a),
                    Event::StateTransferStarted { peer } => {
                        tracing::info!(%peer, "state transfer started");
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
                if let Err(e) = r.keyspace().flush() {
                    tracing::error!("background flush failed: {e}");
                }
                r.handle_local_writes(now_ms());
            }
            ev = net.recv() => {
                let Some(ev) = ev else { return };
                on_net_event(&store, &transport, &shared, ev);
            }
        }
    }
}

fn on_net_event(store: &Store, transport: &Transport, shared: &Mutex<Shared>, ev: NetEvent) {
    let now = now_ms();
    match ev {
        NetEvent::Connected { peer, addr } => {
            let id = ReplicaId(peer);
            shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .addrs
                .insert(id, addr);
            let mut r = store.replica();
            r.add_peer(id);
            r.set_connected(id, true, now);
            tracing::info!(peer = %id, %addr, "peer connected");
        }
        NetEvent::Message { peer, payload } => {
            let result = store
                .replica()
                .handle_message(now, ReplicaId(peer), &payload);
            match result {
                Ok(()) => {}
                Err(e @ (ProtocolError::Hostile { .. } | ProtocolError::UnknownPeer(_))) => {
                    tracing::warn!("disconnecting peer {peer:016x}: {e}");
                    transport.disconnect(peer, CloseCode::ProtocolViolation, &e.to_string());
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
        NetEvent::Disconnected { peer, reason } => {
            store.replica().set_connected(ReplicaId(peer), false, now);
            tracing::info!("peer {peer:016x} disconnected: {reason}");
        }
        NetEvent::Refused { addr, reason } => {
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            s.refusals.push((addr, reason));
            if s.refusals.len() > MAX_REFUSALS {
                s.refusals.remove(0);
            }
        }
    }
}
