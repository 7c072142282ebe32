//! The bag fence: after opening, takes and transfers wait until every peer
//! has brought this replica up to date (so that an element taken before a
//! restore is never taken again).

use super::*;

impl<B: Backend> Replica<B> {
    /// Whether bag takes and transfers must wait. A replica that just opened
    /// may run on storage restored from an old backup, holding elements it
    /// already took or handed away after that backup; only its peers know. So
    /// from opening until every peer has sent it a complete interval (all that
    /// peer held), it does not take or transfer. A replica with no peers is
    /// never fenced; peers added once the fence lifted do not fence it again.
    pub fn fenced(&self) -> bool {
        !self.unfenced
            && (self.peers.len() < self.expected_peers || !self.peers.values().all(|p| p.caught_up))
    }

    /// The peers the fence waits for: those known and not yet caught up,
    /// and how many more it expects to hear from (see
    /// [`Replica::expect_peers`]).
    pub fn fence_waits(&self) -> (Vec<ReplicaId>, usize) {
        let behind = self
            .peers
            .iter()
            .filter(|(_, p)| !p.caught_up)
            .map(|(id, _)| *id)
            .collect();
        (behind, self.expected_peers.saturating_sub(self.peers.len()))
    }

    pub(super) fn update_fence(&mut self) {
        if !self.unfenced && !self.fenced() {
            self.unfenced = true;
            if !self.peers.is_empty() {
                self.events.push_back(Event::Unfenced);
            }
            // Offers wait for the fence.
            self.offers_due(self.last_now);
        }
    }

    /// Whom the fence waits for, in words: the peers not yet caught up and
    /// how many configured peers were not heard from.
    pub fn fence_waiting(&self) -> String {
        let (behind, unheard) = self.fence_waits();
        let mut parts = Vec::new();
        if !behind.is_empty() {
            let ids: Vec<String> = behind.iter().map(|id| id.to_string()).collect();
            parts.push(format!(
                "peers {} (connected or known, not yet caught up)",
                ids.join(", ")
            ));
        }
        if unheard > 0 {
            parts.push(format!(
                "{unheard} configured peer(s) not yet heard from (see `atoll peer list`)"
            ));
        }
        if parts.is_empty() {
            parts.push("its peers".to_string());
        }
        format!(
            "{}; retry once they are reachable, or remove a peer that is gone for good (atoll peer remove)",
            parts.join(" and ")
        )
    }
}
