//! The driver: one task runs the replica state machine the way quinn's
//! `ConnectionDriver` runs quinn-proto. It hands the replica what the
//! network brings, sends what the replica wants sent, and sleeps until the
//! replica's next deadline, a network event, or a local write.

use super::*;
use crate::store::{clock, mono_ms};

pub(super) const MAX_REFUSALS: usize = 16;

pub(super) async fn drive(
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
        let (deadline, applied, checked) = {
            let mut r = store.replica();
            let mut applied = Vec::new();
            // Reports are handed on once the replica is let go: exporting
            // one reads the store.
            let mut checked = Vec::new();
            while let Some(e) = r.poll_event() {
                match e {
                    Event::Applied(a) => applied.push(a),
                    Event::StateTransferStarted { peer, why, changed } => match changed {
                        Some(changed) => tracing::info!(
                            %peer, %why, changed,
                            "state transfer started: only the variables changed since what the peer holds"
                        ),
                        None => {
                            tracing::info!(%peer, %why, "state transfer started: every variable")
                        }
                    },
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
                    Event::OwnerChanged {
                        name,
                        record,
                        conflict,
                    } => {
                        if conflict {
                            tracing::warn!(%name, ?record, "two owners were named in one epoch (an override, or nodes that know different peers); every node keeps this one");
                        } else {
                            tracing::info!(%name, ?record, "owner changed");
                        }
                    }
                    Event::Migrating { name, to, why } => {
                        tracing::info!(%name, %to, %why, "moving ownership to where it is used");
                    }
                    Event::Rebalanced {
                        name,
                        moves,
                        applied: a,
                        ..
                    } => {
                        tracing::debug!(%name, given = moves.len(), "bag elements given to low shares");
                        applied.push(a);
                    }
                    Event::Answered { id, name, result } => {
                        tracing::debug!(id, %name, ?result, "request answered");
                        store.answered(id, result);
                    }
                    Event::Checked(report) => checked.push(*report),
                    Event::Repaired { name, from } => store.repaired(&name, from),
                    Event::MirrorGained { peer, namespaces } => {
                        tracing::info!(%peer, ?namespaces, "namespaces now mirrored with the peer: it is sent what it lacks of them");
                    }
                    Event::MirrorRefused {
                        peer,
                        namespace,
                        first,
                        variables,
                        bytes,
                    } => {
                        tracing::warn!(%peer, %namespace, %first, variables, bytes, "refused what the peer sent of a namespace not mirrored with it (acknowledged, not merged; see `atoll mirror status`)");
                    }
                    Event::Unfenced => {
                        tracing::info!(
                            "every peer has brought this node up to date; bag takes allowed"
                        );
                    }
                }
            }
            (r.poll_timeout(), applied, checked)
        };
        for a in applied {
            store.publish(a);
        }
        for report in checked {
            store.checked(report, || control.status(&store));
        }
        let sleep = match deadline {
            Some(at) => Duration::from_millis(at.saturating_sub(mono_ms())),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = &mut stopped => return,
            _ = store.woken() => {}
            _ = tokio::time::sleep(sleep) => store.replica().handle_timeout(clock()),
            _ = flush_tick.tick(), if flush_every.is_some() => {
                let mut r = store.replica();
                if let Err(e) = r.keyspace().sync() {
                    tracing::error!("background flush failed: {e}");
                }
                r.handle_local_writes(clock());
            }
            _ = heard_tick.tick() => {
                let counts = transport.datagrams_received();
                let now = clock();
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

pub(super) fn on_net_event(
    store: &Store,
    transport: &Transport,
    shared: &Mutex<Shared>,
    ev: Inbound,
) {
    let now = now_ms();
    let at = clock();
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
            r.set_connected(id, Some(ReplicaId(incarnation)), at);
            tracing::info!(peer = %id, %addr, "peer connected");
        }
        Inbound::Disconnected { peer, reason } => {
            store.replica().set_connected(ReplicaId(peer), None, at);
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
pub(super) fn bounded_reason(reason: &str) -> String {
    const MAX: usize = 400;
    match reason.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &reason[..at]),
        None => reason.to_string(),
    }
}

pub(super) fn on_message(
    store: &Store,
    transport: &Transport,
    shared: &Mutex<Shared>,
    peer: u64,
    decoded: Decoded,
) {
    let result = store
        .replica()
        .handle_decoded(clock(), ReplicaId(peer), decoded);
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
