//! Mirroring: which namespaces travel between which nodes.
//!
//! The configuration is a replicated map ([`MIRROR_VAR`]), so every node
//! holds it, and a change on any node takes effect on each as it arrives.
//! Its key is a namespace; its entry's register says whether the namespace
//! is mirrored, and its set names links, each a pair of nodes.
//!
//! - The default namespace is mirrored unless disabled; any other is local
//!   (it never leaves the node it is written on) until enabled.
//! - A mirrored namespace with no links travels between every two nodes;
//!   with links, only over them (`peer add` on node `a` of peer `b` adds
//!   the link `a`-`b`). Data travels along the links: a node forwards what
//!   it holds of a namespace to the nodes it is linked with for it.
//! - The system's own variables (peers, namespaces, this map) travel
//!   everywhere.
//!
//! A node sends a peer nothing of a namespace they do not share: no log
//! entry (skipped as if the peer held it), no state in a transfer, no
//! digest in a check. What a peer sends of a namespace this node's setting
//! does not share with it (it had not seen a change yet) is refused:
//! acknowledged, so the link goes on, not merged, and counted
//! ([`NsTraffic`], [`Event::MirrorRefused`]); a namespace this node has no
//! setting for yet is taken (the peer's setting is newer).
//! A namespace newly shared with a peer is sent to it by a state transfer,
//! once the peer acknowledged the change itself: what was written while it
//! was local reaches the peer too.

use super::*;
use crate::keyspace::DigestTree;
use crate::{data_namespace, DEFAULT_NS, MIRROR_VAR};
use atoll_crdt::variable::Bytes;
use std::collections::BTreeSet;

/// The most namespaces counted apart per peer: a peer cannot grow the
/// counters without bound by what it sends (the rest count under `*`).
const MAX_COUNTED: usize = 256;

/// The mirroring of every namespace that has any, as read from
/// [`MIRROR_VAR`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mirroring {
    /// By namespace.
    pub namespaces: BTreeMap<String, NsMirror>,
}

/// One namespace's mirroring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NsMirror {
    /// Enabled or disabled, if either was ever set (`None`: as by default:
    /// mirrored for the default namespace, local for any other).
    pub enabled: Option<bool>,
    /// The links it travels over, each a pair of nodes, lower id first
    /// (none: between every two nodes).
    pub links: BTreeSet<(ReplicaId, ReplicaId)>,
}

/// What was sent to, or refused from, one peer of one namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NsTraffic {
    /// Log entries and states sent, each time.
    pub sent_vars: u64,
    /// Their bytes (the deltas and states, not the framing).
    pub sent_bytes: u64,
    /// Variables the peer sent that were refused (not shared with it).
    pub refused_vars: u64,
    /// Their bytes.
    pub refused_bytes: u64,
}

/// A link's key in the map: the two ids, lower first.
fn link_member(a: ReplicaId, b: ReplicaId) -> Result<Bytes, Error> {
    let (lo, hi) = Mirroring::link(a, b);
    let key = format!("{lo}-{hi}");
    postcard::to_allocvec(&key)
        .map(Bytes::from)
        .map_err(|e| Error::Failed(e.to_string()))
}

fn parse_link(member: &[u8]) -> Option<(ReplicaId, ReplicaId)> {
    let key: String = postcard::from_bytes(member).ok()?;
    let (a, b) = key.split_once('-')?;
    let id = |s: &str| u64::from_str_radix(s, 16).ok().map(ReplicaId);
    Some(Mirroring::link(id(a)?, id(b)?))
}

impl NsMirror {
    /// Whether it is mirrored at all: as set, else as by default.
    pub fn mirrored(&self, ns: &str) -> bool {
        self.enabled.unwrap_or(ns == DEFAULT_NS)
    }
}

impl Mirroring {
    /// The mirroring a state of [`MIRROR_VAR`] says (nothing: none set).
    /// Entries that do not decode are skipped: every node skips the same.
    pub fn read(state: Option<&State>) -> Mirroring {
        let Some(State::Map(m)) = state else {
            return Mirroring::default();
        };
        let namespaces = m
            .iter()
            .map(|(ns, v)| {
                let enabled = v
                    .register
                    .get()
                    .and_then(|b| postcard::from_bytes::<bool>(b).ok());
                let links = v.set.0.keys().filter_map(|m| parse_link(m)).collect();
                (ns.clone(), NsMirror { enabled, links })
            })
            .collect();
        Mirroring { namespaces }
    }

    /// The link between nodes `a` and `b`, as [`NsMirror::links`] holds
    /// it: lower id first.
    pub fn link(a: ReplicaId, b: ReplicaId) -> (ReplicaId, ReplicaId) {
        if a <= b {
            (a, b)
        } else {
            (b, a)
        }
    }

    /// Whether namespace `ns` is mirrored.
    pub fn mirrored(&self, ns: &str) -> bool {
        self.namespaces
            .get(ns)
            .map_or(ns == DEFAULT_NS, |m| m.mirrored(ns))
    }

    /// Whether nodes `a` and `b` exchange namespace `ns`.
    pub fn shares(&self, ns: &str, a: ReplicaId, b: ReplicaId) -> bool {
        let links = self.namespaces.get(ns).map(|m| &m.links);
        self.mirrored(ns)
            && links.is_none_or(|l| l.is_empty() || l.contains(&Mirroring::link(a, b)))
    }

    /// Whether it changes nothing: only the default namespace travels, and
    /// everywhere (so that a store that never mirrors anything else pays
    /// for no lookup).
    fn default_only(&self) -> bool {
        self.namespaces.iter().all(|(ns, m)| {
            ns == DEFAULT_NS && m.mirrored(ns) && m.links.is_empty()
                || ns != DEFAULT_NS && !m.mirrored(ns)
        })
    }
}

/// What the replica keeps of the mirroring.
pub(super) struct Mirrors {
    pub(super) config: Mirroring,
    /// The keyspace's count of changes to it when it was read.
    seen: u64,
    /// Only the default namespace travels, everywhere.
    default_only: bool,
}

impl Default for Mirrors {
    fn default() -> Self {
        Mirrors {
            config: Mirroring::default(),
            seen: 0,
            default_only: true,
        }
    }
}

impl Mirrors {
    /// Whether `me` and `peer` exchange the variable `name`.
    pub(super) fn shares_var(&self, name: &str, me: ReplicaId, peer: ReplicaId) -> bool {
        self.shares_ns(data_namespace(name), me, peer)
    }

    /// Whether `me` and `peer` exchange the variables of namespace `ns`
    /// (`None`: the system's own).
    fn shares_ns(&self, ns: Option<&str>, me: ReplicaId, peer: ReplicaId) -> bool {
        match ns {
            None => true,
            Some(ns) if self.default_only => ns == DEFAULT_NS,
            Some(ns) => self.config.shares(ns, me, peer),
        }
    }
}

/// Counts `bytes` of namespace `ns` in `traffic`, with `add`.
fn count(traffic: &mut BTreeMap<String, NsTraffic>, ns: &str, add: impl FnOnce(&mut NsTraffic)) {
    if let Some(t) = traffic.get_mut(ns) {
        add(t);
        return;
    }
    let key = if traffic.len() < MAX_COUNTED { ns } else { "*" };
    add(traffic.entry(key.to_string()).or_default());
}

impl<B: Backend> Replica<B> {
    /// The mirroring as this node holds it now.
    pub fn mirroring(&mut self) -> &Mirroring {
        self.refresh_mirroring();
        &self.mirrors.config
    }

    /// Enables (or disables) the mirroring of namespace `ns`, on every node
    /// as the change reaches it.
    pub fn set_mirrored(
        &mut self,
        now: impl Into<Now>,
        ns: &str,
        enabled: bool,
    ) -> crate::Result<()> {
        let now = self.input(now);
        crate::validate_namespace(ns)?;
        let value = postcard::to_allocvec(&enabled).map_err(|e| Error::Failed(e.to_string()))?;
        let op = Op::MapChange {
            key: ns.to_string(),
            incr: None,
            set: Some(Bytes::from(value)),
            add: None,
        };
        self.write_routed(now, MIRROR_VAR, op, owners::Route::Local)?;
        self.refresh_mirroring();
        Ok(())
    }

    /// Adds (or removes) the link between this node and `peer` for
    /// namespace `ns`.
    pub fn set_mirror_link(
        &mut self,
        now: impl Into<Now>,
        ns: &str,
        peer: ReplicaId,
        linked: bool,
    ) -> crate::Result<()> {
        let now = self.input(now);
        crate::validate_namespace(ns)?;
        if peer == self.id() {
            return Err(Error::Failed(format!(
                "node {peer} is this node: a link is between two nodes"
            )));
        }
        let member = link_member(self.id(), peer)?;
        let op = if linked {
            Op::MapChange {
                key: ns.to_string(),
                incr: None,
                set: None,
                add: Some(member),
            }
        } else {
            Op::MapRemoveMember {
                key: ns.to_string(),
                member,
            }
        };
        self.write_routed(now, MIRROR_VAR, op, owners::Route::Local)?;
        self.refresh_mirroring();
        Ok(())
    }

    /// Reads the mirroring again if it changed since it was last read; a
    /// peer it now shares a namespace with that it did not is sent a state
    /// transfer once it holds the change.
    pub(super) fn refresh_mirroring(&mut self) {
        let changes = self.ks.mirror_changes();
        if changes == self.mirrors.seen {
            return;
        }
        self.mirrors.seen = changes;
        let old = self.mirrors.config.clone();
        self.load_mirroring();
        let me = self.id();
        let new = &self.mirrors.config;
        let names: BTreeSet<&String> = old.namespaces.keys().chain(new.namespaces.keys()).collect();
        let last = self.ks.last_seq();
        let mut owed = Vec::new();
        for (&id, p) in self.peers.iter_mut() {
            let gained: Vec<String> = names
                .iter()
                .filter(|ns| !old.shares(ns, me, id) && new.shares(ns, me, id))
                .map(|ns| ns.to_string())
                .collect();
            if !gained.is_empty() {
                p.mirror_resync = Some(last);
                p.owed_on_disk = Some(last);
                owed.push(id);
                self.events.push_back(Event::MirrorGained {
                    peer: id,
                    namespaces: gained,
                });
            }
        }
        // Kept on disk: a restart before the transfer must not forget it.
        for id in owed {
            self.note_owed(id, Some(last));
        }
    }

    /// Records (or forgets) the state transfer owed to `peer`; a failure is
    /// reported (the transfer is still owed while this replica runs).
    pub(super) fn note_owed(&mut self, peer: ReplicaId, from: Option<u64>) {
        if let Err(e) = self.ks.set_owed_transfer(peer, from) {
            self.events.push_back(Event::SendFailed {
                peer,
                error: format!("could not record the state transfer owed to it: {e}"),
            });
        }
    }

    /// Reads the mirroring (at opening, and when it changed).
    pub(super) fn load_mirroring(&mut self) {
        // An unreadable map keeps what was read before (at first: none).
        if let Ok(state) = self.ks.state(MIRROR_VAR) {
            let config = Mirroring::read(state);
            self.mirrors.default_only = config.default_only();
            self.mirrors.config = config;
        }
    }

    /// The digest tree of the variables this node shares with `peer`.
    pub(super) fn tree_shared_with(&mut self, peer: ReplicaId) -> crate::Result<DigestTree> {
        self.refresh_mirroring();
        let (me, mirrors) = (self.id(), &self.mirrors);
        self.ks.digest_tree_of(|ns| mirrors.shares_ns(ns, me, peer))
    }

    /// The digests of the variables of `buckets` this node shares with
    /// `peer`.
    pub(super) fn digests_shared_with(
        &mut self,
        peer: ReplicaId,
        buckets: &[u16],
    ) -> crate::Result<Vec<(String, u128)>> {
        self.refresh_mirroring();
        let (me, mirrors) = (self.id(), &self.mirrors);
        self.ks
            .digests_in_of(buckets, |ns| mirrors.shares_ns(ns, me, peer))
    }

    /// Whether `name` may go to `peer` (the mirroring read since the last
    /// refresh).
    pub(super) fn sends_to(&self, peer: ReplicaId, name: &str) -> bool {
        self.mirrors.shares_var(name, self.id(), peer)
    }

    /// Counts `bytes` of `name` sent to `peer`.
    pub(super) fn note_sent(&mut self, peer: ReplicaId, name: &str, bytes: usize) {
        let (Some(ns), Some(p)) = (data_namespace(name), self.peers.get_mut(&peer)) else {
            return;
        };
        count(&mut p.traffic, ns, |t| {
            t.sent_vars += 1;
            t.sent_bytes += bytes as u64;
        });
    }

    /// Whether `name`, from `peer`, is merged here: if not, it is counted
    /// and reported as refused. A name that is not valid is the peer's
    /// fault, as it is when merged.
    pub(super) fn accepts_from(
        &mut self,
        peer: ReplicaId,
        name: &str,
        bytes: usize,
    ) -> Result<bool, ProtocolError> {
        self.refresh_mirroring();
        if self.sends_to(peer, name) {
            return Ok(true);
        }
        // A namespace this node has no setting for yet is taken: the peer
        // sends it by a setting that has not arrived here (a state
        // transfer's chunk with the setting lost and sent again, a node new
        // or restored). Only what this node's own setting excludes is
        // refused.
        let ns = data_namespace(name);
        if ns.is_some_and(|ns| !self.mirrors.config.namespaces.contains_key(ns)) {
            return Ok(true);
        }
        crate::validate_name(name)
            .map_err(|e| hostile(peer, format!("a variable of a bad name: {e}")))?;
        let ns = ns.unwrap_or("");
        if let Some(p) = self.peers.get_mut(&peer) {
            count(&mut p.traffic, ns, |t| {
                t.refused_vars += 1;
                t.refused_bytes += bytes as u64;
            });
        }
        // Refusals one after another, of one peer and namespace, are one
        // event.
        if let Some(Event::MirrorRefused {
            peer: p,
            namespace,
            variables,
            bytes: b,
            ..
        }) = self.events.back_mut()
        {
            if *p == peer && namespace == ns {
                *variables += 1;
                *b += bytes as u64;
                return Ok(false);
            }
        }
        self.events.push_back(Event::MirrorRefused {
            peer,
            namespace: ns.to_string(),
            first: name.to_string(),
            variables: 1,
            bytes: bytes as u64,
        });
        Ok(false)
    }
}
