//! Client operations over every variable type, and the history of what was
//! acknowledged.

use crate::options::Workload;
use crate::rng::Rng;
use atoll_core::{Answer, Op as StoreOp};
use atoll_crdt::variable::{Bytes, Kind, State};
use atoll_crdt::{ElementId, ReplicaId, Timestamp};
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
    /// Not a client's: the replica gave an element of its share to node
    /// `to`, whose share was low (`atoll_core::Rebalance`).
    BagGive {
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
            Op::BagInsert(_) | Op::BagTake | Op::BagTransfer { .. } | Op::BagGive { .. } => {
                Kind::Bag
            }
        }
    }

    /// Whether only an element's owner may do it (fenced after a restart).
    pub fn owner_only(&self) -> bool {
        matches!(
            self,
            Op::BagTake | Op::BagTransfer { .. } | Op::BagGive { .. }
        )
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

/// Whether `var` is one of the names every type shares (`x0`, `x1`, ...),
/// in any namespace (`.../pair/x0`, `.../loc/n2.x0`).
pub fn shared_name(var: &str) -> bool {
    let last = var.rsplit('/').next().unwrap_or(var);
    let short = last.split_once('.').map_or(last, |(_, s)| s);
    short.starts_with('x')
}

fn bytes(x: u64) -> Bytes {
    Bytes::from(x.to_le_bytes())
}

fn key(k: u64) -> String {
    format!("k{k}")
}

impl Op {
    /// The store operation ([`atoll_core::Op`]) that carries out this client
    /// operation at node `node`, whose elements of the bag, if it is a bag
    /// transfer, are `owned` (in element order).
    ///
    /// A transfer from an empty share is a take, which finds nothing: both
    /// change nothing (and, like every operation, tick the node's clock).
    pub fn to_store(&self, owned: &[ElementId]) -> StoreOp {
        match self {
            Op::CounterAdd(by) => StoreOp::CounterAdd { by: *by },
            Op::RegisterSet(v) => StoreOp::RegisterSet { value: bytes(*v) },
            Op::MvWrite(v) => StoreOp::MvRegisterSet { value: bytes(*v) },
            Op::SetAdd(e) => StoreOp::SetChange {
                add: vec![bytes(*e)],
                remove: Vec::new(),
            },
            Op::SetRemove(e) => StoreOp::SetChange {
                add: Vec::new(),
                remove: vec![bytes(*e)],
            },
            Op::MapIncr(k, by) => StoreOp::MapChange {
                key: key(*k),
                incr: Some(*by),
                set: None,
                add: None,
            },
            Op::MapSet(k, x) => StoreOp::MapChange {
                key: key(*k),
                incr: None,
                set: Some(bytes(*x)),
                add: None,
            },
            Op::MapSetAdd(k, x) => StoreOp::MapChange {
                key: key(*k),
                incr: None,
                set: None,
                add: Some(bytes(*x)),
            },
            Op::MapRemove(k) => StoreOp::MapRemove { key: key(*k) },
            Op::BagInsert(v) => StoreOp::BagInsert {
                values: vec![bytes(*v)],
            },
            Op::BagTake => StoreOp::BagTake,
            Op::BagTransfer { pick, to } => match owned.len() {
                0 => StoreOp::BagTake,
                n => StoreOp::BagTransfer {
                    id: owned[(*pick % n as u64) as usize],
                    to: *to,
                },
            },
            // Made by the replica, never asked for: nothing to do.
            Op::BagGive { .. } => StoreOp::BagTransfers { moves: Vec::new() },
        }
    }

    /// What the store's answer to [`Op::to_store`]'s operation says this
    /// client operation did.
    pub fn outcome(store_op: &StoreOp, answer: &Answer) -> Outcome {
        match (store_op, answer) {
            (StoreOp::BagTransfer { id, .. }, _) => Outcome::Element(*id),
            (_, Answer::Inserted(ids)) if !ids.is_empty() => Outcome::Element(ids[0]),
            (_, Answer::Taken(Some((id, _)))) => Outcome::Element(*id),
            _ => Outcome::Done,
        }
    }
}

/// The elements of a bag state owned by `node`, in element order.
pub fn owned_by(state: Option<&State>, node: ReplicaId) -> Vec<ElementId> {
    match state {
        Some(State::Bag(b)) => b
            .iter()
            .filter(|(_, e)| e.owner == node)
            .map(|(id, _)| id)
            .collect(),
        _ => Vec::new(),
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
