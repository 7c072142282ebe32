//! Inbound decoding: each message (and the deltas in it) is decoded as it
//! arrives, beside the driver, and handed on in arrival order.

use super::*;

/// Messages at least this large are decoded apart from the runtime's workers.
pub(super) const DECODE_APART_BYTES: usize = 64 << 10;

/// A transport event on its way to the driver, a message decoded.
pub(super) enum Inbound {
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
pub(super) const DECODE_AHEAD: usize = 2;

/// Events decoded or waiting, at most: beyond it, the transport's channel
/// holds the rest (and the connection's flow control the sender).
pub(super) const DECODE_QUEUE: usize = 64;

/// An event in [`decode_inbound`]'s queue.
pub(super) enum Pending {
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
pub(super) async fn decode_inbound(
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
