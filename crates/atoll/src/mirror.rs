//! Mirroring per namespace, as the store offers it: which namespaces leave
//! this node, and to which peers (the model: [`atoll_core::Mirroring`] and
//! docs/operations.md). The configuration is replicated cluster metadata:
//! a change made on any node is seen on every node, and takes effect
//! there as it arrives, without a restart.

use crate::{Error, ReplicaId, Result, Store};
use atoll_core::{Mirroring, NsTraffic, DEFAULT_NS};
use std::collections::BTreeSet;

/// One namespace's mirroring as this node sees it ([`Store::mirror_status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceMirror {
    /// The namespace.
    pub namespace: String,
    /// Mirrored at all (`false`: it never leaves the node it is written on).
    pub mirrored: bool,
    /// The links it travels over, each a pair of nodes (none: between
    /// every two nodes, if mirrored).
    pub links: Vec<(ReplicaId, ReplicaId)>,
    /// Each known peer: whether this node shares the namespace with it,
    /// and what it sent to it and refused from it.
    pub peers: Vec<PeerMirror>,
}

/// A namespace's traffic with one peer ([`NamespaceMirror::peers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerMirror {
    /// The peer.
    pub peer: ReplicaId,
    /// The namespace travels between this node and it.
    pub shared: bool,
    /// Sent to it, and refused from it, since this node started.
    pub traffic: NsTraffic,
}

impl NamespaceMirror {
    /// As the HTTP API and the CLI's `--json` give it.
    pub fn to_json(&self) -> serde_json::Value {
        let peers: Vec<serde_json::Value> = self
            .peers
            .iter()
            .map(|p| {
                serde_json::json!({
                    "peer": p.peer.to_string(),
                    "shared": p.shared,
                    "sent_vars": p.traffic.sent_vars,
                    "sent_bytes": p.traffic.sent_bytes,
                    "refused_vars": p.traffic.refused_vars,
                    "refused_bytes": p.traffic.refused_bytes,
                })
            })
            .collect();
        let links: Vec<[String; 2]> = self
            .links
            .iter()
            .map(|(a, b)| [a.to_string(), b.to_string()])
            .collect();
        serde_json::json!({
            "namespace": self.namespace,
            "mirrored": self.mirrored,
            "links": links,
            "peers": peers,
        })
    }
}

impl Store {
    /// The mirroring of every namespace (`default`, the namespaces created,
    /// and any namespace configured), or of `only`.
    pub fn mirror_status(&self, only: Option<&str>) -> Result<Vec<NamespaceMirror>> {
        let names: BTreeSet<String> = match only {
            Some(ns) => {
                self.namespace(ns)?;
                [ns.to_string()].into()
            }
            None => self.namespaces()?.into_iter().collect(),
        };
        let mut r = self.replica();
        let config: Mirroring = r.mirroring().clone();
        let me = r.id();
        let peers = r.peers();
        drop(r);
        let mut names = names;
        if only.is_none() {
            names.extend(config.namespaces.keys().cloned());
        }
        let mut names: Vec<String> = names.into_iter().collect();
        // `default` first, as `namespaces` lists them.
        names.sort_by_key(|ns| (ns != DEFAULT_NS, ns.clone()));
        Ok(names
            .into_iter()
            .map(|ns| {
                let links = config
                    .namespaces
                    .get(&ns)
                    .map(|m| m.links.iter().copied().collect())
                    .unwrap_or_default();
                let peers = peers
                    .iter()
                    .map(|p| PeerMirror {
                        peer: p.id,
                        shared: config.shares(&ns, me, p.id),
                        traffic: p.namespaces.get(&ns).copied().unwrap_or_default(),
                    })
                    .collect();
                NamespaceMirror {
                    mirrored: config.mirrored(&ns),
                    namespace: ns,
                    links,
                    peers,
                }
            })
            .collect())
    }

    /// Mirrors namespace `ns` (`enabled`), or keeps it local: on every
    /// node, as the change reaches it. A namespace newly mirrored is sent
    /// to the peers it is shared with, what was written while it was local
    /// too.
    pub fn set_mirrored(&self, ns: &str, enabled: bool) -> Result<()> {
        self.namespace(ns)?;
        let mut r = self.replica();
        r.set_mirrored(crate::store::clock(), ns, enabled)?;
        r.keyspace().sync()?;
        drop(r);
        self.wake();
        Ok(())
    }

    /// Links this node and `peer` for namespace `ns` (`linked`), or
    /// unlinks them. A mirrored namespace with links travels only over
    /// them; with none, between every two nodes: so removing a mirrored
    /// namespace's last link is refused ([`Error::InvalidInput`]; disable
    /// its mirroring first).
    pub fn set_mirror_peer(&self, ns: &str, peer: ReplicaId, linked: bool) -> Result<()> {
        self.namespace(ns)?;
        if peer == self.replica_id() {
            return Err(Error::InvalidInput {
                what: format!("node {peer} is this node: a mirror peer is another node"),
            });
        }
        let mut r = self.replica();
        let me = r.id();
        let config = r.mirroring().clone();
        let links = config
            .namespaces
            .get(ns)
            .map(|m| m.links.clone())
            .unwrap_or_default();
        let last = links.len() == 1 && links.contains(&Mirroring::link(me, peer));
        if !linked && config.mirrored(ns) && last {
            // With no link left, a mirrored namespace goes to every peer.
            return Err(Error::InvalidInput {
                what: format!(
                    "this is {ns}'s last link: with none, a mirrored namespace replicates to every peer; \
                     keep it local first (`atoll mirror disable {ns}`), or add another link first"
                ),
            });
        }
        r.set_mirror_link(crate::store::clock(), ns, peer, linked)?;
        r.keyspace().sync()?;
        drop(r);
        self.wake();
        Ok(())
    }
}
