//! The transport: one QUIC endpoint per node, mutual TLS, one stream per
//! connection, a handshake, then frames both ways.
//!
//! About 700 lines: the endpoint, dialing, accepting, the handshake and the
//! connection loop share the `Shared` state and are read together; the
//! frame codec and TLS are in `frame.rs` and `tls.rs`.

use crate::frame::{read_frame, write_frame, Hello};
use crate::tls::Identity;
use crate::{CloseCode, NetError};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Transport limits and timers.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// The address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// This node's id, sent in the handshake.
    pub node_id: u64,
    /// This node's incarnation, sent in the handshake.
    pub incarnation: u64,
    /// The replication protocol version, sent in the handshake; a peer with
    /// another is refused.
    pub protocol_version: u32,
    /// The largest frame accepted, checked before allocating. Default: 16 MiB + 4 KiB.
    pub max_frame_len: usize,
    /// How long the handshake may take. Default: 5 s.
    pub handshake_timeout: Duration,
    /// Reconnect backoff: first and largest wait. Defaults: 100 ms, 10 s.
    pub reconnect_min: Duration,
    /// See `reconnect_min`.
    pub reconnect_max: Duration,
    /// Frames queued per peer before new ones are dropped (the protocol sends
    /// them again). Default: 256.
    pub peer_queue: usize,
    /// Events queued for the node before the transport waits. Default: 4096.
    pub event_queue: usize,
    /// QUIC keep-alive interval; a peer silent for four of them is gone. Default: 1 s.
    pub keep_alive: Duration,
}

impl TransportConfig {
    /// Defaults for `listen` and `node_id`.
    pub fn new(listen: SocketAddr, node_id: u64, protocol_version: u32) -> Self {
        TransportConfig {
            listen,
            node_id,
            incarnation: 0,
            protocol_version,
            max_frame_len: (16 << 20) + 4096,
            handshake_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            peer_queue: 256,
            event_queue: 4096,
            keep_alive: Duration::from_secs(1),
        }
    }
}

/// What the transport tells the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// A peer completed the handshake.
    Connected {
        /// Its node id.
        peer: u64,
        /// Its incarnation (see [`crate::frame::Hello`]).
        incarnation: u64,
        /// Its address.
        addr: SocketAddr,
    },
    /// A frame from a peer.
    Message {
        /// The peer.
        peer: u64,
        /// The frame.
        payload: Vec<u8>,
    },
    /// A connection to a peer ended.
    Disconnected {
        /// The peer.
        peer: u64,
        /// Why, as clear as the transport knows.
        reason: String,
    },
    /// A connection attempt or an incoming connection was refused.
    Refused {
        /// The remote address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

struct Conn {
    conn: quinn::Connection,
    tx: mpsc::Sender<Vec<u8>>,
    /// The node id of the side that opened the connection.
    initiator: u64,
}

struct Shared {
    /// While set, connections are refused and dialers wait (a simulated network cut).
    partitioned: std::sync::atomic::AtomicBool,
    config: TransportConfig,
    cluster_id: u128,
    client: quinn::ClientConfig,
    conns: Mutex<BTreeMap<u64, Conn>>,
    events: mpsc::Sender<NetEvent>,
    /// Node ids removed from the cluster: refused in the handshake.
    denied: Mutex<BTreeSet<u64>>,
    /// The refusal last logged at warn for each address, and when: the same
    /// refusal again is logged at debug for [`REFUSAL_LOG_EVERY`].
    refusal_log: Mutex<BTreeMap<SocketAddr, (String, std::time::Instant)>>,
}

/// How long the same refusal from one address goes unrepeated at warn: a
/// dialer retries a dead or refusing peer every few seconds.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// A node's transport. Dropping it closes the endpoint.
pub struct Transport {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

/// A reconnecting dialer; dropping or aborting it stops the dialing (a
/// connection it made stays up).
pub struct Dialer {
    task: JoinHandle<()>,
}

impl Dialer {
    /// Stops dialing.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for Dialer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn close(conn: &quinn::Connection, code: CloseCode, reason: &str) {
    conn.close(quinn::VarInt::from_u32(code as u32), reason.as_bytes());
}

/// A connection error as a [`NetError::Tls`]: what quinn said, readably,
/// and the close code of ours the peer closed with, if any.
fn lost(e: &quinn::ConnectionError) -> NetError {
    let code = match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            CloseCode::from_code(c.error_code.into_inner())
        }
        _ => None,
    };
    NetError::Tls {
        why: describe(e),
        code,
    }
}

/// The peer closed the connection instead of answering our hello: why, and
/// with which code, if it said.
fn refused_by_peer(conn: &quinn::Connection) -> NetError {
    match conn.close_reason() {
        Some(e) => match lost(&e) {
            NetError::Tls { why, code } => NetError::Handshake { code, why },
            other => other,
        },
        None => NetError::Handshake {
            code: None,
            why: "peer ended the handshake".into(),
        },
    }
}

fn describe(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            format!("closed by peer: {}", String::from_utf8_lossy(&c.reason))
        }
        quinn::ConnectionError::LocallyClosed => "closed locally".into(),
        other => other.to_string(),
    }
}

impl Transport {
    /// Binds the endpoint and starts accepting connections. Events arrive on the receiver.
    pub fn bind(
        config: TransportConfig,
        identity: &Identity,
    ) -> Result<(Transport, mpsc::Receiver<NetEvent>), NetError> {
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(config.keep_alive));
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(config.keep_alive * 4).map_err(NetError::config)?,
        ));
        let transport = Arc::new(transport);
        let server_tls =
            QuicServerConfig::try_from(identity.server_config()?).map_err(NetError::config)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
        server.transport_config(transport.clone());
        let client_tls =
            QuicClientConfig::try_from(identity.client_config()?).map_err(NetError::config)?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_tls));
        client.transport_config(transport);
        let endpoint =
            quinn::Endpoint::server(server, config.listen).map_err(|source| NetError::Bind {
                addr: config.listen.to_string(),
                source,
            })?;
        let (events, rx) = mpsc::channel(config.event_queue.max(1));
        let shared = Arc::new(Shared {
            partitioned: std::sync::atomic::AtomicBool::new(false),
            config,
            cluster_id: identity.cluster_id,
            client,
            conns: Mutex::new(BTreeMap::new()),
            events,
            denied: Mutex::new(BTreeSet::new()),
            refusal_log: Mutex::new(BTreeMap::new()),
        });
        let accept = tokio::spawn(accept_loop(endpoint.clone(), shared.clone()));
        Ok((
            Transport {
                endpoint,
                shared,
                accept,
            },
            rx,
        ))
    }

    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.endpoint.local_addr().map_err(|source| NetError::Bind {
            addr: "the endpoint's address".into(),
            source,
        })
    }

    /// Keeps a connection to `addr`: dials, and after any failure or
    /// disconnection dials again with exponential backoff and jitter.
    pub fn dial(&self, addr: SocketAddr) -> Dialer {
        let endpoint = self.endpoint.clone();
        let shared = self.shared.clone();
        Dialer {
            task: tokio::spawn(dial_loop(endpoint, shared, addr)),
        }
    }

    /// Queues a frame for `peer`; false if it is not connected or its queue is full.
    pub fn send(&self, peer: u64, payload: Vec<u8>) -> bool {
        let conns = self.shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns
            .get(&peer)
            .is_some_and(|c| c.tx.try_send(payload).is_ok())
    }

    /// For each connected peer, how many UDP datagrams its connection has
    /// received: keep-alives count, so a count that moves shows a live
    /// link even when no message is exchanged.
    pub fn datagrams_received(&self) -> Vec<(u64, u64)> {
        let conns = self.shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns
            .iter()
            .map(|(peer, c)| (*peer, c.conn.stats().udp_rx.datagrams))
            .collect()
    }

    /// Closes the connection to `peer` with `code` and a reason the peer will see.
    pub fn disconnect(&self, peer: u64, code: CloseCode, reason: &str) {
        let conns = self.shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = conns.get(&peer) {
            close(&c.conn, code, reason);
        }
    }

    /// Refuses these node ids from now on (a node removed from the cluster,
    /// though its certificate is still valid), and closes their connections.
    /// Replaces the previous set.
    pub fn deny(&self, ids: BTreeSet<u64>) {
        {
            let conns = self.shared.conns.lock().unwrap_or_else(|e| e.into_inner());
            for id in &ids {
                if let Some(c) = conns.get(id) {
                    close(&c.conn, CloseCode::PeerRemoved, "removed from this cluster");
                }
            }
        }
        *self.shared.denied.lock().unwrap_or_else(|e| e.into_inner()) = ids;
    }

    /// Cuts this node off the network (closing every connection, refusing new
    /// ones, pausing dialers) or reconnects it: a partition for demos and tests.
    pub fn set_partitioned(&self, partitioned: bool) {
        self.shared
            .partitioned
            .store(partitioned, std::sync::atomic::Ordering::SeqCst);
        if partitioned {
            let conns = self.shared.conns.lock().unwrap_or_else(|e| e.into_inner());
            for c in conns.values() {
                close(&c.conn, CloseCode::Shutdown, "network partitioned");
            }
        }
    }

    /// The connected peers and their addresses.
    pub fn connected(&self) -> Vec<(u64, SocketAddr)> {
        let conns = self.shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns
            .iter()
            .map(|(id, c)| (*id, c.conn.remote_address()))
            .collect()
    }

    /// Closes every connection and the endpoint, and waits briefly for the
    /// peers to be told.
    pub async fn shutdown(&self) {
        self.accept.abort();
        self.endpoint.close(
            quinn::VarInt::from_u32(CloseCode::Shutdown as u32),
            b"node shutting down",
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.accept.abort();
        self.endpoint.close(
            quinn::VarInt::from_u32(CloseCode::Shutdown as u32),
            b"node shutting down",
        );
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            if shared.partitioned.load(std::sync::atomic::Ordering::SeqCst) {
                incoming.refuse();
                return;
            }
            let timeout = shared.config.handshake_timeout;
            let result = tokio::time::timeout(timeout, async {
                let conn = incoming.await.map_err(|e| lost(&e))?;
                let (send, mut recv) = conn.accept_bi().await.map_err(|e| lost(&e))?;
                let hello = match read_frame(&mut recv, crate::frame::MAX_HELLO_LEN).await {
                    Ok(Some(h)) => h,
                    Ok(None) => {
                        return Err(NetError::Handshake {
                            code: None,
                            why: "stream ended before the hello".into(),
                        })
                    }
                    Err(e) => {
                        close(&conn, CloseCode::BadHandshake, &e.to_string());
                        return Err(e);
                    }
                };
                let peer = check_hello(&shared, &conn, &hello)?;
                let mut send = send;
                write_frame(&mut send, &our_hello(&shared).encode()).await?;
                Ok((conn, send, recv, peer))
            })
            .await;
            match result {
                Ok(Ok((conn, send, recv, peer))) => {
                    run_connection(shared, conn, send, recv, peer, peer.0).await
                }
                Ok(Err(e)) => report_refused(&shared, addr, e.to_string()).await,
                Err(_) => report_refused(&shared, addr, "handshake timed out".into()).await,
            }
        });
    }
}

async fn report_refused(shared: &Shared, addr: SocketAddr, reason: String) {
    let fresh = {
        let mut log = shared.refusal_log.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let fresh = log.get(&addr).is_none_or(|(last, at)| {
            *last != reason || now.duration_since(*at) >= REFUSAL_LOG_EVERY
        });
        if fresh {
            // Bounded: an address flood keeps the newest few hundred.
            if log.len() >= 512 {
                log.pop_first();
            }
            log.insert(addr, (reason.clone(), now));
        }
        fresh
    };
    // Two nodes dialing each other at once keep one connection; the other
    // closing is routine.
    if fresh && !reason.contains("duplicate connection") {
        tracing::warn!(%addr, %reason, "connection refused");
    } else {
        tracing::debug!(%addr, %reason, "connection refused");
    }
    let _ = shared.events.send(NetEvent::Refused { addr, reason }).await;
}

fn our_hello(shared: &Shared) -> Hello {
    Hello {
        magic: *b"atoll",
        protocol: shared.config.protocol_version,
        cluster_id: shared.cluster_id,
        node_id: shared.config.node_id,
        incarnation: shared.config.incarnation,
    }
}

/// Checks the peer's hello; on a mismatch closes the connection with a reason
/// the peer will see, and returns the same reason.
fn check_hello(
    shared: &Shared,
    conn: &quinn::Connection,
    bytes: &[u8],
) -> Result<(u64, u64), NetError> {
    let refuse = |code, why: String| {
        close(conn, code, &why);
        Err(NetError::Handshake {
            code: Some(code),
            why,
        })
    };
    let hello = match Hello::decode(bytes) {
        Ok(h) => h,
        Err(e) => return refuse(CloseCode::BadHandshake, e.to_string()),
    };
    if hello.protocol != shared.config.protocol_version {
        return refuse(
            CloseCode::VersionMismatch,
            format!(
                "protocol version mismatch: this node speaks {}, the peer {}",
                shared.config.protocol_version, hello.protocol
            ),
        );
    }
    if hello.cluster_id != shared.cluster_id {
        return refuse(
            CloseCode::ClusterMismatch,
            format!(
                "cluster mismatch: this node is in cluster {:032x}, the peer in {:032x}",
                shared.cluster_id, hello.cluster_id
            ),
        );
    }
    if hello.node_id == shared.config.node_id {
        return refuse(CloseCode::SelfConnection, "connected to itself".into());
    }
    if shared
        .denied
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&hello.node_id)
    {
        return refuse(
            CloseCode::PeerRemoved,
            format!("node {:016x} was removed from this cluster", hello.node_id),
        );
    }
    Ok((hello.node_id, hello.incarnation))
}

async fn dial_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>, addr: SocketAddr) {
    let mut backoff = shared.config.reconnect_min;
    let mut known_peer: Option<u64> = None;
    loop {
        let cut = shared.partitioned.load(std::sync::atomic::Ordering::SeqCst);
        let already = cut
            || known_peer.is_some_and(|p| {
                shared
                    .conns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&p)
            });
        if cut {
            backoff = shared.config.reconnect_min;
        } else if !already {
            match dial_once(&endpoint, &shared, addr).await {
                Ok((conn, send, recv, peer)) => {
                    known_peer = Some(peer.0);
                    backoff = shared.config.reconnect_min;
                    let me = shared.config.node_id;
                    // Its own task: stopping this dialer leaves the connection up.
                    let running =
                        tokio::spawn(run_connection(shared.clone(), conn, send, recv, peer, me));
                    let _ = running.await;
                }
                Err(e) => report_refused(&shared, addr, e.to_string()).await,
            }
        }
        // Jitter: wait between half and all of the backoff.
        let ms = backoff.as_millis().max(2) as u64;
        let wait = Duration::from_millis(ms / 2 + rand::random::<u64>() % (ms / 2 + 1));
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(shared.config.reconnect_max);
    }
}

async fn dial_once(
    endpoint: &quinn::Endpoint,
    shared: &Arc<Shared>,
    addr: SocketAddr,
) -> Result<
    (
        quinn::Connection,
        quinn::SendStream,
        quinn::RecvStream,
        (u64, u64),
    ),
    NetError,
> {
    let work = async {
        let connecting = endpoint
            .connect_with(shared.client.clone(), addr, crate::certs::NODE_NAME)
            .map_err(|e| NetError::Tls {
                why: e.to_string(),
                code: None,
            })?;
        let conn = connecting.await.map_err(|e| lost(&e))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
        write_frame(&mut send, &our_hello(shared).encode()).await?;
        let reply = match read_frame(&mut recv, crate::frame::MAX_HELLO_LEN).await {
            Ok(Some(h)) => h,
            // The peer closed instead of answering: say why, if it said.
            _ => return Err(refused_by_peer(&conn)),
        };
        let peer = check_hello(shared, &conn, &reply)?;
        Ok((conn, send, recv, peer))
    };
    match tokio::time::timeout(shared.config.handshake_timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(NetError::Handshake {
            code: None,
            why: "handshake timed out".into(),
        }),
    }
}

/// Runs an established connection until it ends: a writer task drains the
/// peer's queue, this task reads frames.
async fn run_connection(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    peer: (u64, u64),
    initiator: u64,
) {
    let (peer, incarnation) = peer;
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(shared.config.peer_queue.max(1));
    {
        let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = conns.get(&peer) {
            // Two connections between the same nodes: keep the one opened by the
            // lower node id, on both sides alike. Same initiator: the new one
            // replaces the old, which is most likely dead.
            if existing.initiator < initiator {
                close(&conn, CloseCode::Duplicate, "duplicate connection");
                return;
            }
            close(&existing.conn, CloseCode::Duplicate, "duplicate connection");
        }
        conns.insert(
            peer,
            Conn {
                conn: conn.clone(),
                tx,
                initiator,
            },
        );
    }
    let _ = shared
        .events
        .send(NetEvent::Connected {
            peer,
            incarnation,
            addr: conn.remote_address(),
        })
        .await;
    let writer_conn = conn.clone();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write_frame(&mut send, &frame).await.is_err() {
                break;
            }
        }
        let _ = send.finish();
        drop(writer_conn);
    });
    let reason = loop {
        match read_frame(&mut recv, shared.config.max_frame_len).await {
            Ok(Some(payload)) => {
                if shared
                    .events
                    .send(NetEvent::Message { peer, payload })
                    .await
                    .is_err()
                {
                    break "node stopped".to_string();
                }
            }
            Ok(None) => break "peer finished the stream".to_string(),
            Err(e @ NetError::FrameTooLarge { .. }) => {
                let why = e.to_string();
                close(&conn, CloseCode::FrameTooLarge, &why);
                break why;
            }
            Err(e) => {
                break conn
                    .close_reason()
                    .map(|c| describe(&c))
                    .unwrap_or_else(|| e.to_string());
            }
        }
    };
    writer.abort();
    let still_ours = {
        let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        let ours = conns
            .get(&peer)
            .is_some_and(|c| c.conn.stable_id() == conn.stable_id());
        if ours {
            conns.remove(&peer);
        }
        ours
    };
    if still_ours {
        let _ = shared
            .events
            .send(NetEvent::Disconnected { peer, reason })
            .await;
    }
}

/// Connects to the node at `addr` as node `node_id`, outside any [`Transport`],
/// and completes the handshake speaking `protocol`: returns the connection and
/// its stream. For diagnostics and for tests that play a misbehaving peer.
pub async fn probe(
    identity: &Identity,
    addr: SocketAddr,
    node_id: u64,
    protocol: u32,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), NetError> {
    let client = QuicClientConfig::try_from(identity.client_config()?).map_err(NetError::config)?;
    let endpoint =
        quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).map_err(|source| {
            NetError::Bind {
                addr: "127.0.0.1:0".into(),
                source,
            }
        })?;
    let conn = endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(client)),
            addr,
            crate::certs::NODE_NAME,
        )
        .map_err(|e| NetError::Tls {
            why: e.to_string(),
            code: None,
        })?
        .await
        .map_err(|e| lost(&e))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
    let hello = Hello {
        magic: *b"atoll",
        protocol,
        cluster_id: identity.cluster_id,
        node_id,
        incarnation: node_id,
    };
    write_frame(&mut send, &hello.encode()).await?;
    match read_frame(&mut recv, crate::frame::MAX_HELLO_LEN).await {
        Ok(Some(_)) => Ok((conn, send, recv)),
        _ => Err(refused_by_peer(&conn)),
    }
}
