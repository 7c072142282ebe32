//! Owned variables, as the store offers them: who owns a variable, taking
//! ownership, moving and releasing it, and an operator's override. The
//! strong operations themselves are on the handles
//! ([`crate::Counter::decrement_if`], [`crate::Register::compare_and_set`],
//! [`crate::Set::add_if_absent`]). The model: docs/ownership.md.

use crate::{CoreError, Result, Store};
use atoll_core::protocol::Body;
use atoll_core::{is_reserved, validate_name, OwnershipError};
use atoll_crdt::{Ownership, ReplicaId};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Operations that run at an owner, counted for `/metrics`.
#[derive(Default)]
pub(crate) struct OwnerCounters {
    /// Run here, at the owner.
    pub(crate) local: AtomicU64,
    /// Sent to another node and answered.
    pub(crate) forwarded: AtomicU64,
    /// Sent, and failed because the owner could not be reached.
    pub(crate) unreachable: AtomicU64,
    /// Microseconds waited for forwarded answers, in total.
    pub(crate) wait_us: AtomicU64,
}

impl OwnerCounters {
    pub(crate) fn note_local(&self) {
        self.local.fetch_add(1, Relaxed);
    }

    pub(crate) fn note_wait(&self, waited: Duration) {
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.wait_us.fetch_add(us, Relaxed);
    }

    pub(crate) fn note_forwarded<T>(
        &self,
        got: &std::result::Result<std::result::Result<T, OwnershipError>, impl Sized>,
    ) {
        match got {
            Ok(Err(OwnershipError::OwnerUnreachable { .. })) | Err(_) => {
                self.unreachable.fetch_add(1, Relaxed);
            }
            _ => {
                self.forwarded.fetch_add(1, Relaxed);
            }
        }
    }
}

/// How often [`Store::own`] looks whether the offer arrived.
const POLL: Duration = Duration::from_millis(5);

impl Store {
    fn check_owned_name(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        if is_reserved(name) {
            return Err(crate::Error::Reserved {
                name: name.chars().take(80).collect(),
                what: "system variables have no owner",
            });
        }
        Ok(())
    }

    /// Who owns `name`, as this node knows it: the epoch, the owner (none
    /// while the variable is ownerless), and an offer under way.
    pub fn owner(&self, name: &str) -> Result<Ownership> {
        self.check_owned_name(name)?;
        Ok(self.replica().ownership(name)?)
    }

    /// Every variable that has an ownership record here (owned now, or
    /// once), with its record.
    pub fn ownerships(&self) -> Result<Vec<(String, Ownership)>> {
        Ok(self.replica().ownerships()?)
    }

    /// The site of node `id` as this node knows it (its own from its
    /// configuration, the others' as they announced them), for placement
    /// rules (docs/ownership.md).
    pub fn site_of(&self, id: ReplicaId) -> Option<String> {
        self.replica().site_of(id)
    }

    /// Owned variables as this node sees them: how many it owns, how many of
    /// those it is handing on, and how many requests it sent wait for an
    /// owner's answer.
    pub fn ownership_summary(&self) -> Result<(usize, usize, usize)> {
        let mut r = self.replica();
        let me = r.id();
        let records = r.ownerships()?;
        let owned = records.iter().filter(|(_, o)| o.owner() == Some(me));
        let handing = owned.clone().filter(|(_, o)| o.handoff().is_some()).count();
        Ok((owned.count(), handing, r.requests_in_flight()))
    }

    /// Makes this node the owner of `name`: asks the node that decides
    /// about it (its owner, or while it is ownerless the node that released
    /// it, or its home), then waits until the variable, with its state, has
    /// arrived here. Strong operations on it then run here without a round
    /// trip. Fails with [`OwnershipError::OwnerUnreachable`] if that node
    /// cannot be reached or its offer did not arrive in time, and
    /// [`OwnershipError::InTransfer`] if the variable is being handed
    /// elsewhere meanwhile (the offer keeps coming; `owner` tells).
    pub fn own(&self, name: &str) -> Result<()> {
        let me = self.replica_id();
        self.own_by(name, me)?;
        let timeout = Duration::from_millis(self.replica().config().request_timeout_ms);
        let start = Instant::now();
        // Waits without stalling a node's runtime (an HTTP request).
        crate::store::blocking(|| loop {
            let record = self.owner(name)?;
            if record.owner() == Some(me) {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                let e = match record.handoff() {
                    Some(h) => OwnershipError::InTransfer {
                        name: name.to_string(),
                        owner: record.owner().or(record.custodian()).unwrap_or(me),
                        to: h.to,
                        since_ms: h.since_ms,
                    },
                    None => OwnershipError::OwnerUnreachable {
                        name: name.to_string(),
                        owner: record.owner().or(record.custodian()),
                        waited_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                        last: Some(
                            "the offer was made but has not arrived; it keeps coming (atoll owner NAME tells)"
                                .into(),
                        ),
                    },
                };
                return Err(CoreError::Ownership(e).into());
            }
            std::thread::sleep(POLL);
        })
    }

    /// Makes node `to` the owner of `name`: asks the node that decides about
    /// it to offer it to `to`, and returns once the offer is under way (the
    /// move completes when `to` accepts; [`Store::owner`] tells).
    pub fn own_by(&self, name: &str, to: ReplicaId) -> Result<()> {
        self.check_owned_name(name)?;
        self.request(name, Body::Own { to }, false).map(drop)
    }

    /// Makes `name` ownerless again (at its owner, wherever that is): its
    /// writes stay local everywhere, and strong operations are refused.
    pub fn release(&self, name: &str) -> Result<()> {
        self.check_owned_name(name)?;
        self.request(name, Body::Release, false).map(drop)
    }

    /// An operator's override, for an owner that is gone for good: makes
    /// `to` the owner of `name` in the next epoch this node knows of,
    /// without asking anyone. If the owner it replaces is alive, the two
    /// may both accept strong operations until they hear of each other:
    /// this breaks exclusivity (docs/ownership.md).
    pub fn force_owner(&self, name: &str, to: ReplicaId) -> Result<Ownership> {
        self.check_owned_name(name)?;
        let now = crate::store::clock();
        let record = self.replica().force_owner(now, name, to)?;
        self.wake();
        Ok(record)
    }
}

/// A counter's escrow of decrement rights, as this node sees it
/// ([`crate::Counter::escrow`]; docs/ownership.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscrowStatus {
    /// The least value the counter may reach.
    pub floor: i64,
    /// The counter's value here.
    pub value: i128,
    /// What the owner's pool holds, as seen here: the value less the floor
    /// and every node's balance.
    pub pool: i128,
    /// Each node granted rights, or given a target, by node id.
    pub nodes: Vec<EscrowNode>,
}

/// One node's rights in a counter's escrow ([`EscrowStatus`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EscrowNode {
    /// The node.
    pub node: ReplicaId,
    /// What it holds: granted, less spent and given back.
    pub balance: i128,
    /// What it spent in all, on decrements made there.
    pub spent: u64,
    /// The share the owner wants it to hold (`None`: none set).
    pub target: Option<u64>,
}

impl Store {
    /// The escrow of counter `name`'s decrement rights, as this node sees
    /// it (`None`: escrow is not enabled on it).
    pub fn escrow(&self, name: &str) -> Result<Option<EscrowStatus>> {
        self.check_owned_name(name)?;
        let Some((e, counter)) = self.replica().escrow_and_counter(name)? else {
            return Ok(None);
        };
        let value = counter.value();
        let floor = e.floor.unwrap_or_default();
        let target = |n: ReplicaId| e.targets().and_then(|t| t.shares.get(&n).copied());
        let row = |node: ReplicaId, balance: i128| EscrowNode {
            node,
            balance,
            spent: atoll_crdt::spent_by(&counter, node),
            target: target(node),
        };
        let mut nodes: Vec<EscrowNode> = e.balances(&counter).map(|(n, b)| row(n, b)).collect();
        for n in e
            .targets()
            .map(|t| t.shares.clone())
            .unwrap_or_default()
            .into_keys()
        {
            if !nodes.iter().any(|r| r.node == n) {
                nodes.push(row(n, 0));
            }
        }
        nodes.sort();
        Ok(Some(EscrowStatus {
            floor,
            value,
            pool: value - i128::from(floor) - e.held(&counter),
            nodes,
        }))
    }

    /// Rights this node granted as an owner since it started.
    pub fn escrow_granted(&self) -> u64 {
        self.replica().escrow_granted()
    }
}
