//! Membership: the replicated peer set (`_atoll.peers`) and removed set
//! (`_atoll.removed`), the node's control over its transport and replica,
//! and the status it reports.

use super::*;

pub(crate) use atoll_core::{PEERS_VAR, REMOVED_VAR};

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
    pub(super) transport: Arc<Transport>,
    pub(super) shared: Mutex<Shared>,
    pub(super) dialers: Mutex<BTreeMap<SocketAddr, Dialer>>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) listen: SocketAddr,
    /// The addresses the bag fence waits for (the peer set at start, less this
    /// node's own); removing a peer removes its address here too.
    pub(super) fence_addrs: Mutex<BTreeSet<String>>,
}

/// Counters for `/metrics`.
pub(crate) struct Metrics {
    pub(crate) local_ops: u64,
    pub(crate) merged: u64,
    pub(crate) reconnects: u64,
    pub(crate) conflicts: u64,
}

impl Control {
    pub(super) fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn status(&self, store: &Store) -> NodeStatus {
        let (peers, variables_loaded, resident_bytes) = {
            let r = store.replica();
            let ks = r.keyspace_ref();
            (r.peers(), ks.loaded(), ks.resident_bytes())
        };
        let peers_connected: BTreeSet<ReplicaId> =
            peers.iter().filter(|p| p.connected).map(|p| p.id).collect();
        // Read before `shared` is taken: `dial` holds the dialers while it
        // takes `shared` (the other order deadlocked a status call
        // against the membership watcher).
        let dialed: Vec<SocketAddr> = self
            .dialers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
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
            resident_bytes,
            unanswered: {
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
    pub(super) fn dial(&self, addr: SocketAddr) {
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
    pub(super) fn sync_denied(&self, store: &Store) -> Result<()> {
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
    pub(super) fn sync_membership(&self, store: &Store) -> Result<()> {
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
                    return Err(Error::Unreachable { addr, why });
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
    pub(super) fn forget_addr(&self, store: &Store, addr: SocketAddr) -> Result<bool> {
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

/// Applies changes of the replicated peer set (dialing its addresses if
/// `learn_peers`) and removed set. It wakes only for those (not for every
/// write), and ends with the node's runtime.
pub(super) async fn watch_membership(store: Store, control: Arc<Control>, learn_peers: bool) {
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
