//! Client operations over every variable type, and the history of what was
//! acknowledged.

use crate::options::Workload;
use crate::rng::Rng;
use atoll_core::{Error, OpCtx};
use atoll_crdt::variable::{Bytes, Kind, MapValue, State};
use atoll_crdt::{CrdtError, ElementId, ReplicaId, Timestamp};
use std::fmt;

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Add to a counter (negative: subtract).
    CounterAdd(i64),
    /// Write a last-writer-wins register.
    RegisterSet(u64),
    /// Write a multi-value register.
    MvWrite(u64),
    /// Add an element to a set.
    SetAdd(u64),
    /// Remove an element from a set.
    SetRemove(u64),
    /// Add to a map key's counter.
    MapIncr(u64, i64),
    /// Write a map key's register.
    MapSet(u64, u64),
    /// Add to a map key's set.
    MapSetAdd(u64, u64),
    /// Remove a map key.
    MapRemove(u64),
    /// Insert a bag element owned by this node.
    BagInsert(u64),
    /// Take one element this node owns.
    BagTake,
    /// Hand the `pick`-th element this node owns to node `to`.
    BagTransfer {
        /// Which owned element (modulo how many there are).
        pick: u64,
        /// The new owner.
        to: ReplicaId,
    },
}

impl Op {
    /// The kind of variable it applies to.
    pub fn kind(&self) -> Kind {
        match self {
            Op::CounterAdd(_) => Kind::Counter,
            Op::RegisterSet(_) => Kind::Register,
            Op::MvWrite(_) => Kind::MvRegister,
            Op::SetAdd(_) | Op::SetRemove(_) => Kind::Set,
            Op::MapIncr(..) | Op::MapSet(..) | Op::MapSetAdd(..) | Op::MapRemove(_) => Kind::Map,
            Op::BagInsert(_) | Op::BagTake | Op::BagTransfer { .. } => Kind::Bag,
        }
    }

    /// Whether only an element's owner may do it (fenced after a restart).
    pub fn owner_only(&self) -> bool {
        matches!(self, Op::BagTake | Op::BagTransfer { .. })
    }
}

/// What an acknowledged operation did, beyond its delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It was applied.
    Done,
    /// A bag element was inserted, taken or transferred.
    Element(ElementId),
}

/// Picks the next operation: a variable name and what to do to it.
pub fn next_op(rng: &mut Rng, w: &Workload, nodes: &[ReplicaId]) -> (String, Op) {
    let m = &w.mix;
    let weights = [m.counter, m.register, m.mv_register, m.set, m.map, m.bag];
    let total: u32 = weights.iter().sum();
    let mut pick = rng.below(u64::from(total.max(1))) as u32;
    let mut which = 0;
    for (i, wt) in weights.iter().enumerate() {
        if pick < *wt {
            which = i;
            break;
        }
        pick -= wt;
    }
    let var = rng.index(w.vars_per_type.max(1));
    let e = rng.below(w.elements.max(1));
    let v = rng.next_u64() >> 16;
    let (prefix, op) = match which {
        0 => {
            let by = rng.range(1, 10) as i64;
            ("c", Op::CounterAdd(if rng.chance(0.3) { -by } else { by }))
        }
        1 => ("r", Op::RegisterSet(v)),
        2 => ("mv", Op::MvWrite(v)),
        3 => (
            "s",
            if rng.chance(0.6) {
                Op::SetAdd(e)
            } else {
                Op::SetRemove(e)
            },
        ),
        4 => (
            "m",
            match rng.below(10) {
                0..=3 => Op::MapIncr(e, rng.range(1, 5) as i64),
                4..=5 => Op::MapSet(e, v),
                6..=7 => Op::MapSetAdd(e, rng.below(4)),
                _ => Op::MapRemove(e),
            },
        ),
        _ => (
            "b",
            match rng.below(10) {
                0..=4 => Op::BagInsert(v),
                5..=7 => Op::BagTake,
                _ => Op::BagTransfer {
                    pick: rng.next_u64(),
                    to: nodes[rng.index(nodes.len())],
                },
            },
        ),
    };
    let shared = w.shared_names > 0 && rng.below(100) < u64::from(w.shared_names);
    let prefix = if shared { "x" } else { prefix };
    (format!("{prefix}{var}"), op)
}

fn bytes(x: u64) -> Bytes {
    Bytes::from(x.to_le_bytes())
}

fn key(k: u64) -> String {
    format!("k{k}")
}

/// Applies `op` to `state` the way the store's handles do: returns the delta
/// (`None`: nothing to do) and the outcome.
pub fn apply(
    op: &Op,
    state: &mut State,
    ctx: &OpCtx,
) -> Result<(Option<State>, Option<Outcome>), Error> {
    let crdt = |source: CrdtError| Error::Crdt {
        name: String::new(),
        source,
    };
    let done = |d: State| Ok((Some(d), Some(Outcome::Done)));
    match (op, state) {
        (Op::CounterAdd(by), State::Counter(c)) => {
            done(State::Counter(c.add(ctx.replica, *by).map_err(crdt)?))
        }
        (Op::RegisterSet(v), State::Register(r)) => {
            done(State::Register(r.set(ctx.ts, ctx.replica, bytes(*v))))
        }
        (Op::MvWrite(v), State::MvRegister(r)) => {
            done(State::MvRegister(r.write(ctx.replica, bytes(*v))))
        }
        (Op::SetAdd(e), State::Set(s)) => done(State::Set(s.add(ctx.replica, bytes(*e)))),
        (Op::SetRemove(e), State::Set(s)) => {
            if !s.contains(&bytes(*e)) {
                return Ok((None, None));
            }
            done(State::Set(s.remove(&bytes(*e))))
        }
        (Op::MapIncr(k, by), State::Map(m)) => {
            let d = m
                .update(key(*k), |v, c| {
                    v.counter
                        .add(c, ctx.replica, *by)
                        .map(MapValue::with_counter)
                })
                .map_err(crdt)?;
            done(State::Map(d))
        }
        (Op::MapSet(k, x), State::Map(m)) => {
            let d = m
                .update(key(*k), |v, c| {
                    Ok::<_, CrdtError>(MapValue::with_register(v.register.set(
                        c,
                        ctx.replica,
                        ctx.ts,
                        bytes(*x),
                    )))
                })
                .map_err(crdt)?;
            done(State::Map(d))
        }
        (Op::MapSetAdd(k, x), State::Map(m)) => {
            let d = m
                .update(key(*k), |v, c| {
                    Ok::<_, CrdtError>(MapValue::with_set(atoll_crdt::set_add(
                        &v.set,
                        c,
                        ctx.replica,
                        bytes(*x),
                    )))
                })
                .map_err(crdt)?;
            done(State::Map(d))
        }
        (Op::MapRemove(k), State::Map(m)) => {
            if m.get(&key(*k)).is_none() {
                return Ok((None, None));
            }
            done(State::Map(m.remove(&key(*k))))
        }
        (Op::BagInsert(v), State::Bag(b)) => {
            let (id, d) = b.insert_as(ctx.replica, ctx.node, bytes(*v));
            Ok((Some(State::Bag(d)), Some(Outcome::Element(id))))
        }
        (Op::BagTake, State::Bag(b)) => match b.take(ctx.node) {
            Some((id, _, d)) => Ok((Some(State::Bag(d)), Some(Outcome::Element(id)))),
            None => Ok((None, None)),
        },
        (Op::BagTransfer { pick, to }, State::Bag(b)) => {
            let owned: Vec<ElementId> = b
                .iter()
                .filter(|(_, e)| e.owner == ctx.node)
                .map(|(id, _)| id)
                .collect();
            if owned.is_empty() || *to == ctx.node {
                return Ok((None, None));
            }
            let id = owned[(*pick % owned.len() as u64) as usize];
            let d = b
                .transfer_as(ctx.replica, ctx.node, id, *to)
                .map_err(crdt)?;
            Ok((Some(State::Bag(d)), Some(Outcome::Element(id))))
        }
        (op, s) => unreachable!("{op:?} applied to a {}", s.kind()),
    }
}

/// Why an acknowledged operation is allowed to be missing at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loss {
    /// The node crashed before a buffered flush made it durable.
    BufferedCrash {
        /// When.
        at: u64,
        /// The node.
        node: usize,
    },
    /// The node was restored from a backup taken before the operation, and no
    /// other node had received it.
    Restore {
        /// When.
        at: u64,
        /// The node.
        node: usize,
    },
    /// A crash lost it under durable writes: never allowed (an invariant violation).
    DurableCrash {
        /// When.
        at: u64,
        /// The node.
        node: usize,
    },
}

/// One acknowledged operation.
#[derive(Clone, Debug)]
pub struct Record {
    /// Its number in the history.
    pub id: u64,
    /// When it was acknowledged (simulated ms).
    pub at: u64,
    /// The node that acknowledged it.
    pub node: usize,
    /// The incarnation that issued its dots.
    pub actor: ReplicaId,
    /// Its hybrid-clock timestamp.
    pub ts: Timestamp,
    /// The variable.
    pub var: String,
    /// What it did.
    pub op: Op,
    /// Its outcome.
    pub outcome: Outcome,
    /// Its delta: the operation is present in a state iff the state includes it.
    pub delta: State,
    /// If it was lost, and why that is allowed.
    pub lost: Option<Loss>,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op #{} at {} ms on n{}: {} {:?}",
            self.id, self.at, self.node, self.var, self.op
        )?;
        if let Outcome::Element(id) = self.outcome {
            write!(f, " (element {}.{})", id.replica.0, id.counter)?;
        }
        Ok(())
    }
}

/// Whether `state` includes `delta`: joining it changes nothing.
pub fn includes(state: &State, delta: &State) -> bool {
    let mut joined = state.clone();
    joined.join(delta.clone()).is_ok() && joined == *state
}

/// [`includes`] without copying the state in the common case: if stripping
/// from `delta` what `state` has leaves nothing, the state includes it (the
/// strip law); otherwise the full check decides.
pub fn includes_fast(state: &mut State, delta: &State) -> bool {
    strips_to_nothing(state, delta) || (state.kind() == delta.kind() && includes(state, delta))
}

/// Whether stripping from `delta` what `state` has leaves nothing: then the
/// state includes it (the strip law). `false` says nothing (strip may keep
/// what the state has); [`includes`] decides then.
pub fn strips_to_nothing(state: &mut State, delta: &State) -> bool {
    state.kind() == delta.kind() && state.strip(delta.clone()).is_bottom()
}
