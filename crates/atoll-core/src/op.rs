//! The operations on variables: one vocabulary for every writer.
//!
//! An [`Op`] names what to do to one variable; [`Op::apply`] is the one place
//! an operation turns into a delta and an [`Answer`]. The store's typed
//! handles, the HTTP and CLI operations layer, the simulator's workload and
//! the test network all build `Op`s, and the keyspace applies them
//! ([`crate::Keyspace::apply`], or [`crate::Replica::write`], which also
//! queues the delta for the peers). An `Op` is serializable, so that an
//! operation on an owned variable can travel to its owner.
//!
//! Values are bytes here: the handles encode the application's types.

use crate::{Error, OpCtx, Result};
use atoll_crdt::variable::{Bytes, Kind, MapValue, State};
use atoll_crdt::{set_add, set_remove, CrdtError, ElementId, ReplicaId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One operation on one variable. Each applies as one delta: one log entry,
/// one flush, all or nothing.
///
/// The strong operations ([`Op::strong`]) decide on the state as seen
/// here. They are linearizable only where every write that could change
/// their decision is serialized: at the variable's owner, where the replica
/// routes them ([`crate::Replica::request`]; docs/ownership.md). More
/// variants will come (a bag's take of any element), hence
/// `non_exhaustive`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Op {
    /// Adds `by` (negative to subtract) to a counter. Answers
    /// [`Answer::Value`]: the counter's value after it, as seen here.
    CounterAdd {
        /// How much.
        by: i64,
    },
    /// Writes a last-writer-wins register.
    RegisterSet {
        /// The encoded value.
        value: Bytes,
    },
    /// Writes a multi-value register, replacing every value seen here.
    MvRegisterSet {
        /// The encoded value.
        value: Bytes,
    },
    /// Adds every member of `add`, then removes every member of `remove`.
    /// Answers [`Answer::Removed`]: for each of `remove`, whether it was
    /// present after the adds.
    SetChange {
        /// Members to add.
        add: Vec<Bytes>,
        /// Members to remove.
        remove: Vec<Bytes>,
    },
    /// Changes the fields of one map entry: adds `incr` to its counter,
    /// writes `set` to its register and adds `add` to its set, each if given.
    MapChange {
        /// The entry.
        key: String,
        /// Added to its counter.
        incr: Option<i64>,
        /// Written to its register.
        set: Option<Bytes>,
        /// Added to its set.
        add: Option<Bytes>,
    },
    /// Removes `member` from the set of map entry `key`.
    MapRemoveMember {
        /// The entry.
        key: String,
        /// The member.
        member: Bytes,
    },
    /// Removes a map entry as seen here. Answers [`Answer::Present`].
    MapRemove {
        /// The entry.
        key: String,
    },
    /// Strong: writes `value` to a last-writer-wins register only if its
    /// value is `expected` (`None`: never written). Answers
    /// [`Answer::Swapped`]; a refused swap writes nothing.
    RegisterCompareAndSet {
        /// The value the register must hold.
        expected: Option<Bytes>,
        /// The value written if it does.
        value: Bytes,
    },
    /// Strong: subtracts `by` from a counter only if that leaves it at least
    /// `floor`. Answers [`Answer::Decremented`]; a refused decrement writes
    /// nothing.
    CounterDecrementIf {
        /// How much to subtract.
        by: i64,
        /// The least value the counter may reach.
        floor: i64,
    },
    /// Strong: adds `member` to a set only if it is absent, a claim.
    /// Answers [`Answer::Claimed`]; a refused claim writes nothing.
    SetAddIfAbsent {
        /// The member claimed.
        member: Bytes,
    },
    /// Strong: writes `value` to the register of map entry `key` only if
    /// it holds `expected` (`None`: absent, or never written). Answers
    /// [`Answer::Swapped`]; a refused swap writes nothing.
    MapCompareAndSet {
        /// The entry.
        key: String,
        /// The value its register must hold.
        expected: Option<Bytes>,
        /// The value written if it does.
        value: Bytes,
    },
    /// Inserts values into a bag, owned by this node. Answers
    /// [`Answer::Inserted`]: their element ids, in order.
    BagInsert {
        /// The encoded values.
        values: Vec<Bytes>,
    },
    /// Takes one element this node owns out of a bag. Answers
    /// [`Answer::Taken`]. Only an element's owner may take it, and a fenced
    /// replica takes nothing ([`Op::owner_only`]).
    BagTake,
    /// Hands element `id`, which this node must own, to node `to`. A
    /// transfer to this node itself changes nothing.
    BagTransfer {
        /// The element.
        id: ElementId,
        /// The new owner.
        to: ReplicaId,
    },
    /// Hands several elements, each of which this node must own, each to
    /// its node, as one operation (a rebalancing of the bag's shares;
    /// `shares` in the replica). A move to this node itself is skipped.
    BagTransfers {
        /// (element, new owner) pairs.
        moves: Vec<(ElementId, ReplicaId)>,
    },
    /// An operator's adoption of the share of node `from`, gone for good:
    /// every element it owns becomes this node's. Answers
    /// [`Answer::Adopted`]. If `from` is alive, it may take an element
    /// this node also takes: like an ownership override, it breaks the
    /// bag's exclusivity.
    BagAdopt {
        /// The node whose elements are adopted.
        from: ReplicaId,
    },
    /// Strong: enables escrow of a counter's decrement rights, with
    /// `floor` (docs/ownership.md): from then on no decrement takes it
    /// below `floor`, and the owner grants nodes rights to decrement
    /// locally. Runs at the owner, whose replica writes the escrow record
    /// (applied to the counter alone, it is refused). Answers
    /// [`Answer::Done`]; enabling it again with the same floor changes
    /// nothing.
    CounterEscrow {
        /// The least value the counter may reach.
        floor: i64,
    },
    /// Reads a variable of `kind` where its writes are decided: changes
    /// nothing, and on an owned variable runs at the owner, whose reply
    /// carries the whole state, so that a read after it here sees every
    /// write the owner had made (`Handle::*_strong`). Answers
    /// [`Answer::Done`].
    Read {
        /// The variable's kind.
        kind: Kind,
    },
}

/// What an operation answers, besides its delta.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// Done; nothing more to say.
    Done,
    /// A counter's value after the operation, as seen here.
    Value(i128),
    /// For each member asked to be removed, whether it was present.
    Removed(Vec<bool>),
    /// Whether the map entry was present.
    Present(bool),
    /// The ids of the inserted bag elements, in order.
    Inserted(Vec<ElementId>),
    /// The bag element taken and its value (`None`: this node owns none).
    Taken(Option<(ElementId, Bytes)>),
    /// Whether a compare-and-set wrote its value.
    Swapped(bool),
    /// Whether a conditional decrement was made, and the counter's value
    /// after it (as it was, if refused).
    Decremented {
        /// It was made.
        done: bool,
        /// The counter's value now.
        value: i128,
    },
    /// Whether a claim added its member (`false`: it was there already).
    Claimed(bool),
    /// The ids of the bag elements adopted.
    Adopted(Vec<ElementId>),
}

/// An operation applied: its answer, and the delta it wrote, if any.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// What the operation answers.
    pub answer: Answer,
    /// The hybrid-clock timestamp it was issued at.
    pub ts: Timestamp,
    /// The change, as logged and shipped (`None`: nothing changed, nothing
    /// was written).
    pub delta: Option<State>,
    /// Where it went in the delta log (`None` with `delta`).
    pub applied: Option<crate::Applied>,
}

impl Op {
    /// The kind of variable it applies to.
    pub fn kind(&self) -> Kind {
        match self {
            Op::CounterAdd { .. } | Op::CounterDecrementIf { .. } | Op::CounterEscrow { .. } => {
                Kind::Counter
            }
            Op::RegisterSet { .. } | Op::RegisterCompareAndSet { .. } => Kind::Register,
            Op::MvRegisterSet { .. } => Kind::MvRegister,
            Op::SetChange { .. } | Op::SetAddIfAbsent { .. } => Kind::Set,
            Op::MapChange { .. }
            | Op::MapRemoveMember { .. }
            | Op::MapRemove { .. }
            | Op::MapCompareAndSet { .. } => Kind::Map,
            Op::BagInsert { .. }
            | Op::BagTake
            | Op::BagTransfer { .. }
            | Op::BagTransfers { .. }
            | Op::BagAdopt { .. } => Kind::Bag,
            Op::Read { kind } => *kind,
        }
    }

    /// Whether it is a strong operation: it decides on the state it sees,
    /// so it runs only at the owner of an owned variable.
    pub fn strong(&self) -> bool {
        matches!(
            self,
            Op::RegisterCompareAndSet { .. }
                | Op::CounterDecrementIf { .. }
                | Op::CounterEscrow { .. }
                | Op::SetAddIfAbsent { .. }
                | Op::MapCompareAndSet { .. }
        )
    }

    /// Whether, on an owned variable, it runs at the owner: every write
    /// that could change what a strong operation decides on does, so that
    /// the owner sees them all. The writes that cannot stay local, so that
    /// every island keeps writing through a split: a counter's increments,
    /// a bag's inserts, and takes and transfers of a node's own elements.
    pub fn at_owner(&self) -> bool {
        match self {
            Op::CounterAdd { by } => *by < 0,
            Op::BagInsert { .. }
            | Op::BagTake
            | Op::BagTransfer { .. }
            | Op::BagTransfers { .. }
            | Op::BagAdopt { .. } => false,
            _ => true,
        }
    }

    /// Whether `answer` is one this operation can give (an answer from
    /// another node is checked before anyone relies on its variant).
    pub fn answers_with(&self, answer: &Answer) -> bool {
        matches!(
            (self, answer),
            (Op::CounterAdd { .. }, Answer::Value(_))
                | (
                    Op::RegisterSet { .. }
                        | Op::MvRegisterSet { .. }
                        | Op::MapChange { .. }
                        | Op::MapRemoveMember { .. }
                        | Op::BagTransfer { .. }
                        | Op::BagTransfers { .. }
                        | Op::CounterEscrow { .. }
                        | Op::Read { .. },
                    Answer::Done
                )
                | (Op::BagAdopt { .. }, Answer::Adopted(_))
                | (Op::SetChange { .. }, Answer::Removed(_))
                | (Op::MapRemove { .. }, Answer::Present(_))
                | (
                    Op::RegisterCompareAndSet { .. } | Op::MapCompareAndSet { .. },
                    Answer::Swapped(_)
                )
                | (Op::CounterDecrementIf { .. }, Answer::Decremented { .. })
                | (Op::SetAddIfAbsent { .. }, Answer::Claimed(_))
                | (Op::BagInsert { .. }, Answer::Inserted(_))
                | (Op::BagTake, Answer::Taken(_))
        )
    }

    /// Whether only an element's owner may do it: a replica refuses it while
    /// fenced after opening (see [`crate::Replica::fenced`]).
    pub fn owner_only(&self) -> bool {
        matches!(
            self,
            Op::BagTake | Op::BagTransfer { .. } | Op::BagTransfers { .. } | Op::BagAdopt { .. }
        )
    }

    /// Applies the operation to `state` (of the variable `name`, of
    /// [`Op::kind`]): mutates it and returns the delta (`None`: nothing
    /// changed) and the answer. An operation refuses before it mutates, so
    /// an error leaves `state` as it was.
    /// A `state` of another kind is an [`Error::TypeMismatch`].
    pub fn apply(
        self,
        name: &str,
        state: &mut State,
        ctx: &OpCtx,
    ) -> Result<(Option<State>, Answer)> {
        let crdt = |source: CrdtError| Error::Crdt {
            name: name.to_string(),
            source,
        };
        let kind = state.kind();
        match (self, state) {
            (Op::CounterAdd { by }, State::Counter(c)) => {
                let d = c.add(ctx.replica, by).map_err(crdt)?;
                Ok((Some(State::Counter(d)), Answer::Value(c.value())))
            }
            (Op::RegisterCompareAndSet { expected, value }, State::Register(r)) => {
                if r.get() != expected.as_ref() {
                    return Ok((None, Answer::Swapped(false)));
                }
                let d = r.set(ctx.ts, ctx.replica, value);
                Ok((Some(State::Register(d)), Answer::Swapped(true)))
            }
            (Op::CounterDecrementIf { by, floor }, State::Counter(c)) => {
                let now = c.value();
                if now - i128::from(by) < i128::from(floor) {
                    let answer = Answer::Decremented {
                        done: false,
                        value: now,
                    };
                    return Ok((None, answer));
                }
                let neg = by.checked_neg().ok_or_else(|| crdt(CrdtError::Overflow))?;
                let d = c.add(ctx.replica, neg).map_err(crdt)?;
                let answer = Answer::Decremented {
                    done: true,
                    value: c.value(),
                };
                Ok((Some(State::Counter(d)), answer))
            }
            (Op::SetAddIfAbsent { member }, State::Set(s)) => {
                if s.contains(&member) {
                    return Ok((None, Answer::Claimed(false)));
                }
                let d = s.add(ctx.replica, member);
                Ok((Some(State::Set(d)), Answer::Claimed(true)))
            }
            (
                Op::MapCompareAndSet {
                    key,
                    expected,
                    value,
                },
                State::Map(m),
            ) => {
                if m.get(&key).and_then(|v| v.register.get()) != expected.as_ref() {
                    return Ok((None, Answer::Swapped(false)));
                }
                let d = m
                    .update(key, |v, c| {
                        Ok::<_, CrdtError>(MapValue::with_register(v.register.set(
                            c,
                            ctx.replica,
                            ctx.ts,
                            value,
                        )))
                    })
                    .map_err(crdt)?;
                Ok((Some(State::Map(d)), Answer::Swapped(true)))
            }
            (Op::RegisterSet { value }, State::Register(r)) => Ok((
                Some(State::Register(r.set(ctx.ts, ctx.replica, value))),
                Answer::Done,
            )),
            (Op::MvRegisterSet { value }, State::MvRegister(r)) => Ok((
                Some(State::MvRegister(r.write(ctx.replica, value))),
                Answer::Done,
            )),
            (Op::SetChange { add, remove }, State::Set(s)) => {
                let mut delta = None;
                for m in add {
                    join_step(&mut delta, State::Set(s.add(ctx.replica, m)));
                }
                let mut removed = Vec::with_capacity(remove.len());
                for m in &remove {
                    let had = s.contains(m);
                    if had {
                        join_step(&mut delta, State::Set(s.remove(m)));
                    }
                    removed.push(had);
                }
                Ok((delta, Answer::Removed(removed)))
            }
            (
                Op::MapChange {
                    key,
                    incr,
                    set,
                    add,
                },
                State::Map(m),
            ) => {
                let mut delta = None;
                // The counter first: it is the one step that can fail
                // (overflow), and a failed operation must change nothing.
                if let Some(by) = incr {
                    let d = m
                        .update(key.clone(), |v, c| {
                            v.counter
                                .add(c, ctx.replica, by)
                                .map(MapValue::with_counter)
                        })
                        .map_err(crdt)?;
                    join_step(&mut delta, State::Map(d));
                }
                if let Some(bytes) = set {
                    let d = m
                        .update(key.clone(), |v, c| {
                            Ok::<_, CrdtError>(MapValue::with_register(v.register.set(
                                c,
                                ctx.replica,
                                ctx.ts,
                                bytes,
                            )))
                        })
                        .map_err(crdt)?;
                    join_step(&mut delta, State::Map(d));
                }
                if let Some(bytes) = add {
                    let d = m
                        .update(key, |v, c| {
                            Ok::<_, CrdtError>(MapValue::with_set(set_add(
                                &v.set,
                                c,
                                ctx.replica,
                                bytes,
                            )))
                        })
                        .map_err(crdt)?;
                    join_step(&mut delta, State::Map(d));
                }
                Ok((delta, Answer::Done))
            }
            (Op::MapRemoveMember { key, member }, State::Map(m)) => {
                let d = m
                    .update(key, |v, _| {
                        Ok::<_, CrdtError>(MapValue::with_set(set_remove(&v.set, &member)))
                    })
                    .map_err(crdt)?;
                Ok((Some(State::Map(d)), Answer::Done))
            }
            (Op::MapRemove { key }, State::Map(m)) => {
                if m.get(&key).is_none() {
                    return Ok((None, Answer::Present(false)));
                }
                Ok((Some(State::Map(m.remove(&key))), Answer::Present(true)))
            }
            (Op::BagInsert { values }, State::Bag(b)) => {
                let mut delta = None;
                let mut ids = Vec::with_capacity(values.len());
                for v in values {
                    let (id, d) = b.insert_as(ctx.replica, ctx.node, v);
                    join_step(&mut delta, State::Bag(d));
                    ids.push(id);
                }
                Ok((delta, Answer::Inserted(ids)))
            }
            (Op::BagTake, State::Bag(b)) => match b.take(ctx.node) {
                Some((id, value, d)) => Ok((Some(State::Bag(d)), Answer::Taken(Some((id, value))))),
                None => Ok((None, Answer::Taken(None))),
            },
            (Op::BagTransfer { id, to }, State::Bag(b)) => {
                if to == ctx.node {
                    // Ours already: still refuse an element we do not own.
                    return match b.get(id) {
                        Some(e) if e.owner == ctx.node => Ok((None, Answer::Done)),
                        Some(e) => Err(crdt(CrdtError::NotOwner { owner: e.owner })),
                        None => Err(crdt(CrdtError::NoSuchElement)),
                    };
                }
                let d = b.transfer_as(ctx.replica, ctx.node, id, to).map_err(crdt)?;
                Ok((Some(State::Bag(d)), Answer::Done))
            }
            (Op::BagTransfers { moves }, State::Bag(b)) => {
                // One move per element (the last given), each checked before
                // any is made: all or nothing.
                let moves: BTreeMap<ElementId, ReplicaId> = moves.into_iter().collect();
                for id in moves.keys() {
                    match b.get(*id) {
                        Some(e) if e.owner == ctx.node => {}
                        Some(e) => return Err(crdt(CrdtError::NotOwner { owner: e.owner })),
                        None => return Err(crdt(CrdtError::NoSuchElement)),
                    }
                }
                let mut delta = None;
                for (id, to) in moves.into_iter().filter(|(_, to)| *to != ctx.node) {
                    let d = b.transfer_as(ctx.replica, ctx.node, id, to).map_err(crdt)?;
                    join_step(&mut delta, State::Bag(d));
                }
                Ok((delta, Answer::Done))
            }
            (Op::BagAdopt { from }, State::Bag(_)) if from == ctx.node => {
                Ok((None, Answer::Adopted(Vec::new())))
            }
            (Op::BagAdopt { from }, State::Bag(b)) => {
                let ids: Vec<ElementId> = b
                    .iter()
                    .filter(|(_, e)| e.owner == from)
                    .map(|(id, _)| id)
                    .collect();
                let mut delta = None;
                for id in &ids {
                    let d = b
                        .transfer_as(ctx.replica, from, *id, ctx.node)
                        .map_err(crdt)?;
                    join_step(&mut delta, State::Bag(d));
                }
                Ok((delta, Answer::Adopted(ids)))
            }
            (Op::CounterEscrow { .. }, State::Counter(_)) => Err(crate::OwnershipError::Escrow {
                name: name.to_string(),
                why: "escrow is enabled through the replica, at the counter's owner".into(),
            }
            .into()),
            (Op::Read { kind: wanted }, _) if wanted == kind => Ok((None, Answer::Done)),
            (op, _) => Err(Error::TypeMismatch {
                name: name.to_string(),
                expected: op.kind(),
                found: kind,
            }),
        }
    }
}

/// Joins one step's delta into an operation's delta so far: an operation of
/// several steps (a request that adds many members, say) is one delta, one
/// log entry and one flush.
fn join_step(acc: &mut Option<State>, step: State) {
    match acc {
        // Every step of an operation is of its variable's kind, so the join
        // cannot meet a kind mismatch.
        Some(a) => {
            let _ = a.join(step);
        }
        None => *acc = Some(step),
    }
}

#[cfg(test)]
mod tests;
