//! Owned variables: the records of who owns what, where each operation
//! runs, and what the node that decides about a variable does.
//!
//! Every variable has one node that decides about it: its owner, if the
//! record (`_atoll.owner/{name}`, an [`Ownership`]) names one, or else its
//! *home*, a node drawn from the variable's name among this node and its
//! peers (rendezvous hashing), which does nothing but grant ownership. So a
//! change of owner is always made by one node, in a chain of epochs: the
//! home grants epoch e+1 of a free variable; the owner hands epoch e+1 on
//! (`handoff`), or releases it. Nothing is decided while the deciding node
//! is fenced (it opened and has not yet been brought up to date by every
//! peer): a node restored from an old backup cannot resurrect an ownership
//! it gave away, because its peers hold the later record.
//!
//! The decider's side of requests is in `serving`; the requester's side
//! (requests sent and their answers) in `requests`; the move of a variable
//! to its new owner in `handoff`; moves by use in `migration`.

use super::*;
use crate::error::OwnershipError;
use crate::keyspace::{owned_by_record, owner_record, OWNER_PREFIX};
use crate::protocol::Body;
use atoll_crdt::{Handoff, Ownership, Stage};

/// How many records are read at a time when the index is loaded.
const LOAD_BATCH: usize = 256;

/// What this replica knows of owned variables.
#[derive(Default)]
pub(super) struct Owners {
    /// Every ownership record held here, by its variable's name: loaded
    /// from the keyspace on first use (`None` until then, or after a merge
    /// made outside the replica).
    pub(super) records: Option<BTreeMap<String, Ownership>>,
    /// Answers of requests applied here: (requester's incarnation, id) ->
    /// (variable, answer); `kept_order` holds the keys oldest first.
    pub(super) kept: BTreeMap<(ReplicaId, u64), (String, Answer)>,
    pub(super) kept_order: VecDeque<(ReplicaId, u64)>,
    /// Until when (monotonic ms) a request sent again may concern an answer
    /// no longer kept here: set from the first input (what was kept before
    /// opening is gone), when an answer is dropped, and from an offer.
    pub(super) forgotten_until: Option<u64>,
    /// Offers of ownership made by this node, by variable: when each was
    /// last sent (monotonic ms).
    pub(super) offered: BTreeMap<String, u64>,
    /// What each variable owned here was used for, by node (see
    /// `migration`).
    pub(super) usage: BTreeMap<String, super::migration::Usage>,
    /// Variables moved away by use since opening.
    pub(super) migrations: u64,
    /// Requests this node sent, waiting for their answers, by id.
    pub(super) pending: BTreeMap<u64, super::requests::Pending>,
    /// The last request id given.
    pub(super) last_id: u64,
}

/// Where an operation, or a change of owner, runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// Here, as on any variable: it needs no owner.
    Local,
    /// Here: this node decides about the variable.
    Here,
    /// Here, out of this node's escrow balance: a decrement of a counter
    /// with escrow, which needs no owner (`escrow`).
    Escrow,
    /// At another node, which decides about it.
    At(ReplicaId),
}

/// FNV-1a, 64 bits: a hash that is the same on every node and in every
/// run (the standard library's is seeded at random).
pub(super) fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A 64-bit mix (splitmix64's finalizer).
pub(super) fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl<B: Backend> Replica<B> {
    /// The record of who owns `name` (the bottom record, epoch 0 and free,
    /// if it was never owned).
    pub fn ownership(&mut self, name: &str) -> crate::Result<Ownership> {
        crate::validate_name(name)?;
        Ok(self.records()?.get(name).cloned().unwrap_or_default())
    }

    /// Every variable with an ownership record here, and its record, in
    /// name order.
    pub fn ownerships(&mut self) -> crate::Result<Vec<(String, Ownership)>> {
        Ok(self
            .records()?
            .iter()
            .map(|(n, o)| (n.clone(), o.clone()))
            .collect())
    }

    /// Whether strong operations on `name` run here now: this node owns
    /// it, does not hand it on, and is not fenced.
    pub fn accepts_strong(&mut self, name: &str) -> crate::Result<bool> {
        // As routing decides it, so that this says what the code does.
        let probe = Op::SetAddIfAbsent {
            member: atoll_crdt::variable::Bytes::default(),
        };
        Ok(matches!(self.route_op(name, &probe), Ok(Route::Here)))
    }

    /// Whether a request on `name` may meet a transfer under way: the
    /// variable is being handed on, or a placement rule owns it (its first
    /// use may grant it elsewhere). A caller may then make the request
    /// again, once the new owner took it.
    pub fn may_be_in_transfer(&mut self, name: &str) -> bool {
        self.rule_for(name).is_some() || self.ownership(name).is_ok_and(|r| r.handoff().is_some())
    }

    /// The node that grants ownership of `name` while nobody owns it: of
    /// this node and its peers, the one whose id hashed with the name is
    /// greatest. Every node that knows the same peers names the same home.
    pub fn home(&self, name: &str) -> ReplicaId {
        let h = fnv(name.as_bytes());
        std::iter::once(self.id())
            .chain(self.peers.keys().copied())
            .max_by_key(|id| (mix(h ^ id.0), *id))
            .unwrap_or_else(|| self.id())
    }

    /// Reads every ownership record from the keyspace again, on next use:
    /// after a record was merged outside the replica (the store's own
    /// `merge`).
    pub fn reload_ownership(&mut self) {
        self.owners.records = None;
    }

    /// How many requests sent by this node wait for an answer.
    pub fn requests_in_flight(&self) -> usize {
        self.owners.pending.len()
    }

    /// The index of records, loaded from the keyspace on first use.
    pub(super) fn records(&mut self) -> crate::Result<&mut BTreeMap<String, Ownership>> {
        if self.owners.records.is_none() {
            let mut records = BTreeMap::new();
            let mut after = OWNER_PREFIX.to_string();
            loop {
                let batch = self.ks.variables_after(&after, LOAD_BATCH)?;
                let done = batch.len() < LOAD_BATCH;
                for (record, _) in batch {
                    let Some(name) = owned_by_record(&record) else {
                        return Ok(self.owners.records.insert(records));
                    };
                    if let Some(State::Owner(o)) = self.ks.state(&record)? {
                        records.insert(name.to_string(), o.clone());
                    }
                    after = record;
                }
                if done {
                    break;
                }
            }
            self.owners.records = Some(records);
        }
        Ok(self.owners.records.get_or_insert_with(BTreeMap::new))
    }

    /// Reads the record of `name` again after it changed here (a local
    /// write or a merge), and reports the change. A node that meets a
    /// later epoch stops acting as owner at once: routing reads this index.
    pub(super) fn record_changed(&mut self, name: &str) {
        if self.owners.records.is_none() {
            return;
        }
        let now = match self.ks.state(&owner_record(name)) {
            Ok(Some(State::Owner(o))) => o.clone(),
            // Unreadable: the index is loaded again on next use.
            _ => {
                self.owners.records = None;
                return;
            }
        };
        let before = self
            .owners
            .records
            .as_mut()
            .and_then(|r| r.insert(name.to_string(), now.clone()))
            .unwrap_or_default();
        if now.owner() != Some(self.id()) {
            self.owners.usage.remove(name);
        }
        if before != now {
            self.events.push_back(Event::OwnerChanged {
                name: name.to_string(),
                conflict: before.conflicts_with(&now),
                record: now,
            });
        }
    }

    /// After changes merged: the records among them are read again.
    pub(super) fn records_merged(&mut self, from_event: usize) {
        let names: Vec<String> = self
            .events
            .iter()
            .skip(from_event)
            .filter_map(|e| match e {
                Event::Applied(a) => owned_by_record(&a.name).map(str::to_string),
                _ => None,
            })
            .collect();
        for name in names {
            self.record_changed(&name);
            self.offer_if_due(&name, self.last_now);
        }
    }

    /// Writes `record` as this node's change of the record of `name`
    /// (joined into what is held); returns the change, if any.
    pub(super) fn write_record(
        &mut self,
        name: &str,
        record: Ownership,
    ) -> crate::Result<Option<VarDelta>> {
        let record_name = owner_record(name);
        let incarnation = self.ks.incarnation();
        let delta = State::Owner(record.clone());
        let applied = self.ks.merge_state(
            incarnation,
            &record_name,
            Kind::Owner,
            delta,
            None,
            self.wall,
        )?;
        let Some(_) = applied else {
            return Ok(None);
        };
        self.record_changed(name);
        let now = self.last_now;
        self.observe(now);
        Ok(Some(VarDelta {
            name: record_name,
            kind: Kind::Owner,
            delta: codec::encode(&State::Owner(record)),
        }))
    }

    /// Where an operation on `name` runs. A strong operation on a variable
    /// nobody owns, as far as this node knows, goes to the node that would
    /// have granted it (which refuses it if nobody owns it); at its owner, an operation that must run
    /// there is refused while the owner hands the variable on, or is fenced.
    pub(super) fn route_op(&mut self, name: &str, op: &Op) -> crate::Result<Route> {
        let record = self.ownership(name)?;
        // A take at a node whose share of an owned bag is empty goes to
        // the bag's owner, which takes one of its own elements: a take
        // finds an element the owner holds, in one round trip.
        if matches!(op, Op::BagTake) {
            if let Some(owner) = record.owner().filter(|&o| o != self.id()) {
                if !self.holds_elements(name)? {
                    return Ok(Route::At(owner));
                }
            }
        }
        // A decrement of a counter with escrow is as strong as a
        // conditional one, unless this node spends its own rights.
        let strong = match self.escrow_route(name, op, record.owner())? {
            super::escrow::Escrowed::Here => return Ok(Route::Escrow),
            super::escrow::Escrowed::AtOwner => true,
            super::escrow::Escrowed::No => op.strong(),
        };
        match record.owner() {
            // This node may not have heard of a grant yet: the node that
            // decides about the variable has, and tells.
            // So does a variable a placement rule owns, before its grant.
            None if strong || (op.at_owner() && self.placed_before_grant(name, &record)) => {
                match self.decider(name, &record) {
                    me if me == self.id() => {
                        // Granting it now, or catching up: not known yet.
                        self.check_deciding(name, me, &record)?;
                        Err(OwnershipError::NotOwned {
                            name: name.to_string(),
                        }
                        .into())
                    }
                    decider => Ok(Route::At(decider)),
                }
            }
            None => Ok(Route::Local),
            Some(_) if !op.at_owner() => Ok(Route::Local),
            Some(owner) if owner != self.id() => Ok(Route::At(owner)),
            Some(owner) => {
                self.check_deciding(name, owner, &record)?;
                Ok(Route::Here)
            }
        }
    }

    /// Whether this node owns an element of bag `name` (false for a
    /// variable of another kind, or none).
    fn holds_elements(&mut self, name: &str) -> crate::Result<bool> {
        let me = self.id();
        Ok(match self.ks.state(name)? {
            Some(State::Bag(bag)) => bag.iter().any(|(_, e)| e.owner == me),
            _ => false,
        })
    }

    /// Whether `name` is owned by a placement rule and was never granted.
    fn placed_before_grant(&self, name: &str, record: &Ownership) -> bool {
        record.epoch == 0 && self.rule_for(name).is_some()
    }

    /// The node that decides about `name` as `record` says: its owner; while
    /// it is free, the node that released it (which holds what its owners
    /// left); for a variable never owned, its home.
    pub(super) fn decider(&self, name: &str, record: &Ownership) -> ReplicaId {
        record
            .owner()
            .or(record.custodian())
            .unwrap_or_else(|| self.home(name))
    }

    /// Where `body` runs: an operation as [`Replica::route_op`] says, a
    /// change of owner as [`Replica::route_change`] does.
    pub(super) fn route(&mut self, name: &str, body: &Body) -> crate::Result<Route> {
        match body {
            Body::Op(op) => self.route_op(name, op),
            Body::Own { .. } | Body::Release => self.route_change(name),
        }
    }

    /// Where a change of owner of `name` is decided (see
    /// [`Replica::decider`]).
    pub(super) fn route_change(&mut self, name: &str) -> crate::Result<Route> {
        let record = self.ownership(name)?;
        let decider = self.decider(name, &record);
        if decider != self.id() {
            return Ok(Route::At(decider));
        }
        self.check_deciding(name, decider, &record)?;
        Ok(Route::Here)
    }

    /// This node decides about `name` (per `record`): refused while it is
    /// fenced, or hands the variable on.
    pub(super) fn check_deciding(
        &self,
        name: &str,
        me: ReplicaId,
        record: &Ownership,
    ) -> Result<(), OwnershipError> {
        if self.fenced() {
            return Err(OwnershipError::Fenced {
                name: name.to_string(),
                waiting: self.fence_waiting(),
            });
        }
        if let Some(Handoff { to, since_ms }) = record.handoff() {
            return Err(OwnershipError::InTransfer {
                name: name.to_string(),
                owner: me,
                to,
                since_ms,
            });
        }
        Ok(())
    }

    /// Runs `body` here, where `name` is decided (the route said
    /// [`Route::Here`]): its answer, and the change it made, for a
    /// requester to merge.
    pub(super) fn decide(
        &mut self,
        name: &str,
        body: Body,
        requester: ReplicaId,
    ) -> crate::Result<(Answer, Option<VarDelta>, Option<Applied>)> {
        let record = self.ownership(name)?;
        // Nothing of a namespace goes to a node it is not mirrored to: not
        // an answer's change, nor the variable itself.
        let to = match &body {
            Body::Own { to } => *to,
            _ => requester,
        };
        self.check_mirrored(name, requester)?;
        self.check_mirrored(name, to)?;
        match body {
            Body::Op(op) => {
                if let Some((answer, change)) = self.escrow_at_owner(name, &op, requester)? {
                    return Ok((answer, change, None));
                }
                let read = matches!(op, Op::Read { .. });
                let out = self.ks.apply(name, op, self.wall)?;
                let change = match &out.delta {
                    Some(d) => Some(self.change_for_requester(name, d)?),
                    None if read => self.whole_state_for(name)?,
                    None => None,
                };
                let now = self.last_now;
                if out.applied.is_some() {
                    self.observe(now);
                }
                if record.owner() == Some(self.id()) {
                    self.note_use(name, requester, now);
                }
                Ok((out.answer, change, out.applied))
            }
            Body::Own { to } => {
                // Placement wins: a move elsewhere is refused.
                self.check_placement(name, to)?;
                let change = match record.owner() {
                    // Offered with its state (the kept answers too).
                    _ if to != self.id() => self.hand_off(name, to)?,
                    // This node holds the state already (it owns the
                    // variable, released it, or is its home): no offer.
                    Some(_) => None,
                    None => self.write_record(name, Ownership::owned(record.epoch + 1, to))?,
                };
                Ok((Answer::Done, change, None))
            }
            Body::Release => {
                let change = match record.owner() {
                    None => None,
                    Some(_) => {
                        self.write_record(name, Ownership::released(record.epoch + 1, self.id()))?
                    }
                };
                Ok((Answer::Done, change, None))
            }
        }
    }

    /// The whole state of `name`, for a strong read's requester (`None` if
    /// the variable does not exist).
    fn whole_state_for(&mut self, name: &str) -> crate::Result<Option<VarDelta>> {
        Ok(self.ks.state(name)?.map(|state| VarDelta {
            name: name.to_string(),
            kind: state.kind(),
            delta: codec::encode(state),
        }))
    }

    /// What a requester is sent of a change made for it: the variable's
    /// whole state if it is a counter or a register (small), so that the
    /// requester's copy then holds everything the owner's decision rested
    /// on (the delta alone could show a bounded counter's decrement
    /// without the increments that allowed it); the delta otherwise.
    fn change_for_requester(&mut self, name: &str, delta: &State) -> crate::Result<VarDelta> {
        let whole = matches!(
            delta.kind(),
            Kind::Counter | Kind::Register | Kind::MvRegister
        );
        let encoded = match self.ks.state(name)? {
            Some(state) if whole => codec::encode(state),
            _ => codec::encode(delta),
        };
        Ok(VarDelta {
            name: name.to_string(),
            kind: delta.kind(),
            delta: encoded,
        })
    }

    /// An operator's override: makes `to` the owner of `name` in the next
    /// epoch this node knows of, whoever owns it, without asking anyone.
    /// This breaks exclusivity if the owner it replaces is alive and
    /// reachable by others: meant for an owner that is gone for good. A
    /// node that meets the new record stops acting as owner; one that met
    /// another record of the same epoch reports the conflict
    /// ([`Event::OwnerChanged`]).
    pub fn force_owner(
        &mut self,
        now: impl Into<Now>,
        name: &str,
        to: ReplicaId,
    ) -> crate::Result<Ownership> {
        let now = self.input(now);
        self.observe(now);
        self.check_mirrored(name, to)?;
        let record = self.ownership(name)?;
        let forced = Ownership {
            epoch: record.epoch + 1,
            stage: Stage::Owned {
                owner: to,
                forced: true,
                handoff: None,
            },
        };
        self.write_record(name, forced)?;
        self.ownership(name)
    }

    /// Whether `name` may be owned by (or answered to) `node`: its
    /// namespace is mirrored between this node and it.
    pub(super) fn check_mirrored(&mut self, name: &str, node: ReplicaId) -> crate::Result<()> {
        self.refresh_mirroring();
        let me = self.id();
        if node == me || self.sends_to(node, name) {
            return Ok(());
        }
        let ns = crate::data_namespace(name).unwrap_or_default();
        Err(OwnershipError::Placement {
            name: name.to_string(),
            why: format!("namespace {ns:?} is not mirrored between nodes {me} and {node}"),
        }
        .into())
    }
}
