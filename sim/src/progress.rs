//! The link-progress invariant: a peer pair whose link stays up must keep
//! moving. While a node's log holds entries a connected peer has not
//! acknowledged, what the peer acknowledged (or, during a state transfer,
//! how far the transfer got) must change within [`STALL_MS`]. A delta that
//! no retry can merge (a type conflict treated as a poison message was
//! one) stalls a link this way, silently, while every state converges
//! elsewhere.

use atoll_core::PeerStatus;
use std::collections::BTreeMap;

/// The longest a connected link may go without progress (simulated ms): far
/// beyond any retransmit back-off, round trip or lossy stretch the
/// simulator draws.
pub const STALL_MS: u64 = 120_000;

/// What progress of a node towards one peer looks like.
type Mark = (u64, Option<(u64, String, Option<(String, u32)>)>);

/// Per ordered node pair: the connection's generation, its last progress
/// mark, and since when it has not changed.
#[derive(Default)]
pub struct Progress {
    seen: BTreeMap<(usize, usize), (u64, Mark, u64)>,
}

impl Progress {
    /// Checks node `x`'s view of peer `y` at `now`; `gen` names the current
    /// connection (`None`: the link is down, or meant to be). Returns a
    /// failure if the pair has been stuck for longer than [`STALL_MS`].
    pub fn observe(
        &mut self,
        now: u64,
        x: usize,
        y: usize,
        gen: Option<u64>,
        p: &PeerStatus,
    ) -> Option<String> {
        let Some(gen) = gen.filter(|_| p.connected && p.lag > 0) else {
            self.seen.remove(&(x, y));
            return None;
        };
        let mark: Mark = (
            p.acked,
            p.transfer.as_ref().map(|t| {
                let parts = t.in_parts.as_ref().map(|(n, _, acked)| (n.clone(), *acked));
                (t.as_of, t.done_through.clone(), parts)
            }),
        );
        match self.seen.get_mut(&(x, y)) {
            Some((g, m, since)) if *g == gen && *m == mark => {
                if now.saturating_sub(*since) > STALL_MS {
                    *since = now;
                    return Some(format!(
                        "n{x} -> n{y}: acked stuck at {} with {} entries to go for over {STALL_MS} ms on a link that stayed up{}",
                        p.acked,
                        p.lag,
                        p.stuck
                            .as_ref()
                            .map(|s| format!(" ({})", s.reason))
                            .unwrap_or_default()
                    ));
                }
            }
            _ => {
                self.seen.insert((x, y), (gen, mark, now));
            }
        }
        None
    }
}
