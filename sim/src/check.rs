//! The invariants checked once the liveness phase has converged: every replica
//! equal, and the final state agreeing with the history of acknowledged
//! operations (Jepsen's vocabulary: *lost* is acknowledged but missing,
//! *unexpected* is present but never acknowledged).

use crate::trace::fnv;
use crate::workload::{includes, includes_fast, Op, Outcome, Record};
use atoll_crdt::codec;
use atoll_crdt::variable::{Kind, State};
use atoll_crdt::{ElementId, ReplicaId};
use std::collections::{BTreeMap, BTreeSet};

/// A digest of one replica's whole keyspace.
pub fn digest(view: &BTreeMap<String, State>) -> u64 {
    let mut bytes = Vec::new();
    for (name, s) in view {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&codec::encode(s));
    }
    fnv(&bytes)
}

fn id_str(id: ElementId) -> String {
    format!("{}.{}", id.replica.0, id.counter)
}

/// Checks the converged views (one per node) against each other and the
/// history; returns every violation found.
pub fn check(
    views: &[BTreeMap<String, State>],
    history: &[Record],
    node_ids: &[ReplicaId],
) -> Vec<String> {
    let mut bad = Vec::new();
    let Some(final_view) = views.first() else {
        return bad;
    };
    // Convergence, by value and by digest.
    let d0 = digest(final_view);
    for (i, v) in views.iter().enumerate().skip(1) {
        if v != final_view {
            let differing: Vec<&String> = final_view
                .keys()
                .chain(v.keys())
                .filter(|n| final_view.get(*n) != v.get(*n))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            bad.push(format!("n{i} differs from n0 on {differing:?}"));
        }
        let d = digest(v);
        if d != d0 {
            bad.push(format!(
                "n{i}'s digest {d:016x} differs from n0's {d0:016x}"
            ));
        }
    }
    // Where each operation's delta belongs at the end: its variable, or the
    // conflict copy if another type kept the name.
    let home = |r: &Record| -> String {
        match final_view.get(&r.var) {
            Some(s) if s.kind() != r.op.kind() => atoll_core::conflict_name(&r.var, r.op.kind()),
            _ => r.var.clone(),
        }
    };
    let homes: Vec<String> = history.iter().map(home).collect();
    // An operation lost to a restore can come back with a later restore from a
    // newer backup: what is present counts, lost or not.
    let mut scratch = final_view.clone();
    let mut present = |r: &Record| {
        scratch
            .get_mut(&homes[r.id as usize])
            .is_some_and(|s| includes_fast(s, &r.delta))
    };
    let kept: Vec<&Record> = history
        .iter()
        .filter(|r| r.lost.is_none() || present(r))
        .collect();
    // Nothing acknowledged is lost: every delta is included in the final state.
    for r in &kept {
        if !present(r) {
            bad.push(format!("lost: acknowledged {r} is not in the final state"));
        }
    }
    // Nothing unexpected: the final state is exactly the join of what was acknowledged.
    let mut by_var: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in &kept {
        by_var
            .entry(homes[r.id as usize].as_str())
            .or_default()
            .push(r);
    }
    for (name, state) in final_view {
        // A conflict copy holds some of what was written to its name as its
        // kind: all of it while another type keeps the name, less if that
        // type's writes were lost and the name went back to the copy's kind.
        let copy_of = atoll_core::conflict_of(name);
        let mut expected = State::new(state.kind());
        let records: Vec<&Record> = match copy_of {
            Some((base, kind)) => kept
                .iter()
                .copied()
                .filter(|r| r.var == base && r.op.kind() == kind)
                .collect(),
            None => by_var.get(name.as_str()).cloned().unwrap_or_default(),
        };
        for r in records {
            if expected.join(r.delta.clone()).is_err() {
                bad.push(format!("{name}: {r} has the wrong kind"));
            }
        }
        let fits = match copy_of {
            Some(_) => includes(&expected, state),
            None => &expected == state,
        };
        if !fits {
            bad.push(format!(
                "unexpected: {name} is not the join of its acknowledged operations{}",
                set_diff(&expected, state)
            ));
        }
    }
    for name in by_var.keys() {
        if !final_view.contains_key(*name) {
            bad.push(format!("lost: variable {name} is missing"));
        }
    }
    // Counters, by arithmetic.
    for (name, recs) in &by_var {
        let sum: i128 = recs
            .iter()
            .filter_map(|r| match r.op {
                Op::CounterAdd(by) => Some(i128::from(by)),
                _ => None,
            })
            .sum();
        if let Some(State::Counter(c)) = final_view.get(*name) {
            if c.value() != sum {
                bad.push(format!(
                    "counter {name} is {} but its acknowledged increments sum to {sum}",
                    c.value()
                ));
            }
        }
    }
    // Registers: the write with the highest (timestamp, incarnation) wins.
    for (name, recs) in &by_var {
        let winner = recs
            .iter()
            .filter_map(|r| match r.op {
                Op::RegisterSet(v) => Some(((r.ts, r.actor), v)),
                _ => None,
            })
            .max();
        if let (Some((_, v)), Some(State::Register(reg))) = (winner, final_view.get(*name)) {
            if reg.get().map(|b| &b[..]) != Some(&v.to_le_bytes()[..]) {
                bad.push(format!(
                    "register {name} does not hold the last acknowledged write ({v})"
                ));
            }
        }
    }
    bad.extend(check_bags(final_view, history, &homes, node_ids));
    bad
}

fn set_diff(expected: &State, actual: &State) -> String {
    match (expected, actual) {
        (State::Set(e), State::Set(a)) => {
            let e: BTreeSet<&[u8]> = e.iter().map(|b| &b[..]).collect();
            let a: BTreeSet<&[u8]> = a.iter().map(|b| &b[..]).collect();
            format!(
                " (lost elements: {:?}; unexpected elements: {:?})",
                e.difference(&a).count(),
                a.difference(&e).count()
            )
        }
        _ => String::new(),
    }
}

/// Bags: no element taken twice, every untaken element present exactly once
/// with its last owner, nothing else present. Operations lost to a crash or a
/// restore impose nothing (their element may be present or not).
fn check_bags(
    final_view: &BTreeMap<String, State>,
    history: &[Record],
    homes: &[String],
    node_ids: &[ReplicaId],
) -> Vec<String> {
    #[derive(Default)]
    struct Element {
        inserted: bool,
        owner: Option<ReplicaId>,
        takes: Vec<u64>,
        any_lost: bool,
    }
    let mut bad = Vec::new();
    let mut bags: BTreeMap<&str, BTreeMap<ElementId, Element>> = BTreeMap::new();
    for r in history {
        if r.op.kind() != Kind::Bag {
            continue;
        }
        let Outcome::Element(id) = r.outcome else {
            continue;
        };
        let e = bags
            .entry(homes[r.id as usize].as_str())
            .or_default()
            .entry(id)
            .or_default();
        if r.lost.is_some() {
            e.any_lost = true;
            if matches!(r.op, Op::BagInsert(_)) {
                e.inserted = true;
            }
            continue;
        }
        match r.op {
            Op::BagInsert(_) => {
                e.inserted = true;
                e.owner = Some(node_ids[r.node]);
            }
            Op::BagTake => e.takes.push(r.id),
            Op::BagTransfer { to, .. } | Op::BagGive { to } => e.owner = Some(to),
            _ => {}
        }
    }
    for (name, elements) in &bags {
        let Some(State::Bag(bag)) = final_view.get(*name) else {
            // A bag whose every operation was lost (allowed, under buffered
            // durability or to a restore) may never have reached any other node.
            if !elements.values().all(|e| e.any_lost) {
                bad.push(format!("bag {name} is missing"));
            }
            continue;
        };
        for (id, e) in elements {
            let records = bag.records_of(*id);
            if e.takes.len() > 1 {
                bad.push(format!(
                    "bag {name}: element {} taken twice, by ops {:?}",
                    id_str(*id),
                    e.takes
                ));
            }
            if !e.takes.is_empty() {
                if records != 0 {
                    bad.push(format!(
                        "bag {name}: taken element {} is still present",
                        id_str(*id)
                    ));
                }
            } else if e.any_lost {
                // A lost take or transfer may or may not have happened.
                if records > 1 {
                    bad.push(format!(
                        "bag {name}: element {} is present {records} times",
                        id_str(*id)
                    ));
                }
            } else if records != 1 {
                bad.push(format!(
                    "bag {name}: untaken element {} is present {records} times, not once",
                    id_str(*id)
                ));
            } else if bag.get(*id).map(|x| x.owner) != e.owner {
                bad.push(format!(
                    "bag {name}: element {} is not owned by its last acknowledged owner {:?}",
                    id_str(*id),
                    e.owner
                ));
            }
        }
        for (id, _) in bag.iter() {
            if !elements.get(&id).is_some_and(|e| e.inserted) {
                bad.push(format!(
                    "bag {name}: unexpected element {} (never acknowledged)",
                    id_str(id)
                ));
            }
        }
    }
    bad
}
