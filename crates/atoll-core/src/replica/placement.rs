//! Placement: variables owned by rule, and where they may be owned.
//!
//! A replica's configuration may hold rules ([`OwnedRule`]): a variable
//! whose name begins with a rule's prefix is owned from its first write
//! that runs at an owner (or its first strong operation), without a call
//! to own it. That request goes to the variable's home, which grants the
//! variable to the node the rule places it at:
//!
//! - [`Place::Anywhere`]: the node that asked;
//! - [`Place::Site`]: the node that asked if it is on that site, else the
//!   node of the site drawn from the name (rendezvous hashing over the
//!   nodes whose site the home knows);
//! - [`Place::Node`]: that node.
//!
//! Placement wins over use: a variable placed on a site moves by use only
//! within the site, one placed on a node never moves by use, and a manual
//! move elsewhere is refused ([`OwnershipError::Placement`]); the
//! operator's override (`force_owner`) is not.
//!
//! Each node's site is replicated: [`SITES_VAR`] maps node ids to sites,
//! and each node writes its own entry from [`ReplicaConfig::site`]
//! ([`Replica::announce_site`]). Every node should hold the same rules: a
//! node without the rule writes such a variable locally until it is owned
//! (the writes merge as on any variable). A variable released by an
//! operator stays ownerless: rules grant only a variable never owned.

use super::owners::{fnv, mix, Route};
use super::*;
use crate::error::OwnershipError;
use atoll_crdt::variable::Bytes;
use atoll_crdt::Ownership;

/// The replicated map of node sites: key a node id (16 hex digits), its
/// register the node's site (a postcard-encoded string, as the store's
/// handles encode values).
pub const SITES_VAR: &str = "_atoll.sites";

/// Where a rule places the variables it owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// At the node that first uses the variable; it then moves by use.
    Anywhere,
    /// On a node of this site; it moves by use within the site only.
    Site(String),
    /// On this node; it never moves by use.
    Node(ReplicaId),
}

/// Every variable whose name begins with `prefix` is owned, placed as
/// `place` (the longest matching prefix applies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRule {
    /// The names it covers (system names never are).
    pub prefix: String,
    /// Where they are owned.
    pub place: Place,
}

impl<B: Backend> Replica<B> {
    /// The rule that owns `name`, if any: of those whose prefix begins it,
    /// the one with the longest prefix.
    pub fn rule_for(&self, name: &str) -> Option<&OwnedRule> {
        if crate::is_reserved(name) {
            return None;
        }
        self.config
            .owned
            .iter()
            .filter(|r| name.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len())
    }

    /// The site of node `id` as known here (this node's from its
    /// configuration, the others' from [`SITES_VAR`]).
    pub fn site_of(&mut self, id: ReplicaId) -> Option<String> {
        if id == self.id() && self.config.site.is_some() {
            return self.config.site.clone();
        }
        self.recorded_site(id)
    }

    fn recorded_site(&mut self, id: ReplicaId) -> Option<String> {
        let Ok(Some(State::Map(m))) = self.ks.state(SITES_VAR) else {
            return None;
        };
        let bytes = m.get(&id.to_string())?.register.get()?;
        postcard::from_bytes::<String>(bytes).ok()
    }

    /// Writes this node's site ([`ReplicaConfig::site`]) into
    /// [`SITES_VAR`] if it is not recorded there yet, so that every node
    /// learns it by replication.
    pub fn announce_site(&mut self, now: impl Into<Now>) -> crate::Result<()> {
        let now = self.input(now);
        let Some(site) = self.config.site.clone() else {
            return Ok(());
        };
        let me = self.id();
        if self.recorded_site(me).as_ref() == Some(&site) {
            return Ok(());
        }
        let value = postcard::to_allocvec(&site).map_err(|e| Error::Failed(e.to_string()))?;
        let op = Op::MapChange {
            key: me.to_string(),
            incr: None,
            set: Some(Bytes::from(value)),
            add: None,
        };
        self.write_routed(now, SITES_VAR, op, Route::Local)
            .map(drop)
    }

    /// Whether `name` may be owned by `node`, as its rule places it; the
    /// error says why not.
    pub(super) fn check_placement(&mut self, name: &str, node: ReplicaId) -> crate::Result<()> {
        let Some(OwnedRule { prefix, place }) = self.rule_for(name).cloned() else {
            return Ok(());
        };
        let why = match place {
            Place::Anywhere => return Ok(()),
            Place::Node(n) if n == node => return Ok(()),
            Place::Node(n) => format!("the rule for prefix {prefix:?} places it on node {n}"),
            Place::Site(site) => match self.site_of(node) {
                Some(s) if s == site => return Ok(()),
                s => format!(
                    "the rule for prefix {prefix:?} places it on site {site:?}, and node {node} is {}",
                    s.map_or("of no known site".to_string(), |s| format!("on site {s:?}"))
                ),
            },
        };
        Err(OwnershipError::Placement {
            name: name.to_string(),
            why,
        }
        .into())
    }

    /// The node a rule places `name` at when `requester` first uses it.
    fn placed_at(&mut self, name: &str, requester: ReplicaId) -> crate::Result<ReplicaId> {
        let Some(rule) = self.rule_for(name).cloned() else {
            return Ok(requester);
        };
        let site = match rule.place {
            Place::Anywhere => return Ok(requester),
            Place::Node(n) => return Ok(n),
            Place::Site(site) => site,
        };
        if self.site_of(requester).as_ref() == Some(&site) {
            return Ok(requester);
        }
        let h = fnv(name.as_bytes());
        let nodes: Vec<ReplicaId> = std::iter::once(self.id())
            .chain(self.peers.keys().copied())
            .collect();
        let mut on_site = Vec::new();
        for id in nodes {
            if self.site_of(id).as_ref() == Some(&site) {
                on_site.push(id);
            }
        }
        on_site
            .into_iter()
            .max_by_key(|id| (mix(h ^ id.0), *id))
            .ok_or_else(|| {
                OwnershipError::Placement {
                    name: name.to_string(),
                    why: format!(
                        "the rule for prefix {:?} places it on site {site:?}, and no node of that site is known here",
                        rule.prefix
                    ),
                }
                .into()
            })
    }

    /// On the first use of `name` by `requester` (`op`, a write that runs
    /// at an owner or a strong operation): if a rule owns the variable,
    /// it was never owned, and this node is its home, grants it where the
    /// rule places it; does nothing otherwise. A grant to another node is
    /// an offer, which the request meets as a transfer under way.
    pub(super) fn grant_by_rule(
        &mut self,
        name: &str,
        op: &Op,
        requester: ReplicaId,
    ) -> crate::Result<()> {
        if !op.at_owner() || self.rule_for(name).is_none() {
            return Ok(());
        }
        let record = self.ownership(name)?;
        let me = self.id();
        if record.epoch != 0 || record.handoff().is_some() || self.home(name) != me || self.fenced()
        {
            return Ok(());
        }
        match self.placed_at(name, requester)? {
            to if to == me => self.write_record(name, Ownership::owned(1, me)).map(drop),
            to => self.hand_off(name, to).map(drop),
        }
    }
}
