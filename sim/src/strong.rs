//! The history of strong operations on owned variables, and what it must
//! satisfy once the cluster converged: every answer explainable by one
//! sequential order consistent with real time (a checker specialised to
//! each variable's operations, not a general search), and nothing
//! acknowledged lost.
//!
//! An operation without an answer (its node crashed, or its owner could not
//! be reached or restarted) may or may not have taken effect: the checks
//! allow both.

use atoll_core::{Answer, OwnershipError};
use atoll_crdt::variable::State;
use std::collections::{BTreeMap, BTreeSet};

/// A strong client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StrongOp {
    /// Make node `n` the owner.
    Own(usize),
    /// Make the variable ownerless.
    Release,
    /// Compare-and-set the register: `new` is unique in the run.
    Cas {
        /// The value it must hold (`None`: never written).
        expected: Option<u64>,
        /// The value written.
        new: u64,
    },
    /// Claim a member of the set.
    Claim(u64),
    /// Add to the bounded counter (runs locally).
    Incr(i64),
    /// Subtract from the bounded counter if that leaves it at least 0.
    DecrIf(i64),
    /// Enable escrow of the bounded counter's rights, floor 0.
    Escrow,
}

/// One strong operation, from its call to its answer.
#[derive(Clone, Debug)]
pub struct StrongRecord {
    /// The node it was called at.
    pub node: usize,
    /// The variable.
    pub var: String,
    /// What it asked.
    pub op: StrongOp,
    /// When it was called (simulated ms).
    pub start: u64,
    /// When it was answered (`None`: never).
    pub end: Option<u64>,
    /// Its answer (`None`: never answered).
    pub result: Option<Result<Answer, OwnershipError>>,
}

impl StrongRecord {
    /// It took effect, as its answer says (a change of owner: once asked).
    pub fn took_effect(&self) -> bool {
        if matches!(self.op, StrongOp::Own(_) | StrongOp::Release) {
            return matches!(self.result, Some(Ok(_)));
        }
        matches!(
            self.result,
            Some(Ok(Answer::Swapped(true)
                | Answer::Claimed(true)
                | Answer::Decremented { done: true, .. }
                | Answer::Value(_)))
        )
    }

    /// It may have taken effect without anyone being told: no answer, or
    /// an answer that says the outcome is unknown.
    fn maybe(&self) -> bool {
        matches!(
            self.result,
            None | Some(Err(
                OwnershipError::OwnerUnreachable { .. } | OwnershipError::OutcomeUnknown { .. }
            ))
        )
    }

    /// When it ended, for real-time order (never: the end of time).
    fn ended(&self) -> u64 {
        self.end.unwrap_or(u64::MAX)
    }
}

/// Checks the strong history against the converged `final_view` (of one
/// node; convergence is checked apart).
pub fn check(history: &[StrongRecord], final_view: &BTreeMap<String, State>) -> Vec<String> {
    let mut bad = Vec::new();
    check_claims(history, final_view, &mut bad);
    check_register(history, final_view, &mut bad);
    check_counter(history, final_view, &mut bad);
    bad
}

/// Claims: at most one caller wins each member, a refused claim met a
/// claim that began before it ended, and every won member is present.
fn check_claims(history: &[StrongRecord], view: &BTreeMap<String, State>, bad: &mut Vec<String>) {
    let claims: Vec<(u64, &StrongRecord)> = history
        .iter()
        .filter_map(|r| match r.op {
            StrongOp::Claim(m) => Some((m, r)),
            _ => None,
        })
        .collect();
    let mut winners: BTreeMap<u64, usize> = BTreeMap::new();
    for (m, r) in &claims {
        if r.took_effect() {
            *winners.entry(*m).or_default() += 1;
        }
    }
    for (m, n) in &winners {
        if *n > 1 {
            bad.push(format!("o-claim: member {m} was won by {n} callers"));
        }
    }
    for (m, r) in &claims {
        if r.result == Some(Ok(Answer::Claimed(false))) {
            let explained = claims.iter().any(|(m2, r2)| {
                m2 == m
                    && !std::ptr::eq(*r2, *r)
                    && (r2.took_effect() || r2.maybe())
                    && r2.start <= r.ended()
            });
            if !explained {
                bad.push(format!(
                    "o-claim: a claim of {m} at n{} was refused though no claim of it began before {} ms",
                    r.node,
                    r.ended()
                ));
            }
        }
    }
    let present: BTreeSet<u64> = match view.get("o-claim") {
        Some(State::Set(s)) => s
            .iter()
            .filter_map(|b| Some(u64::from_le_bytes(b.as_slice().try_into().ok()?)))
            .collect(),
        _ => BTreeSet::new(),
    };
    for m in winners.keys() {
        if !present.contains(m) {
            bad.push(format!("o-claim: won member {m} is lost"));
        }
    }
}

/// Compare-and-set: the swaps that took effect form one chain from the
/// unwritten register (each expects what the one before wrote), in an
/// order real time allows, ending at the final value (operations without
/// an answer may sit in the chain).
fn check_register(history: &[StrongRecord], view: &BTreeMap<String, State>, bad: &mut Vec<String>) {
    let cas: Vec<(Option<u64>, u64, &StrongRecord)> = history
        .iter()
        .filter_map(|r| match r.op {
            StrongOp::Cas { expected, new } => Some((expected, new, r)),
            _ => None,
        })
        .collect();
    let mut next: BTreeMap<Option<u64>, (u64, &StrongRecord)> = BTreeMap::new();
    for (expected, new, r) in cas.iter().filter(|c| c.2.took_effect()) {
        if let Some((other, _)) = next.insert(*expected, (*new, r)) {
            bad.push(format!(
                "o-reg: two swaps from {expected:?} took effect (to {other} and to {new})"
            ));
        }
    }
    let maybe: BTreeMap<Option<u64>, Vec<(u64, &StrongRecord)>> = cas
        .iter()
        .filter(|c| c.2.maybe())
        .fold(BTreeMap::new(), |mut m, (e, n, r)| {
            m.entry(*e).or_default().push((*n, *r));
            m
        });
    let final_value = match view.get("o-reg") {
        Some(State::Register(r)) => r
            .get()
            .and_then(|b| Some(u64::from_le_bytes(b.as_slice().try_into().ok()?))),
        _ => None,
    };
    // The chain from the unwritten register to the final value: each step
    // is the swap that took effect from the value before (one at most,
    // checked above), or if none did, one without an answer (found by a
    // search: several may chain).
    fn walk<'a>(
        cur: Option<u64>,
        to: Option<u64>,
        next: &BTreeMap<Option<u64>, (u64, &'a StrongRecord)>,
        maybe: &BTreeMap<Option<u64>, Vec<(u64, &'a StrongRecord)>>,
        depth: usize,
    ) -> Option<Vec<(u64, &'a StrongRecord)>> {
        if cur == to {
            return Some(Vec::new());
        }
        if depth == 0 {
            return None;
        }
        let steps: Vec<(u64, &StrongRecord)> = match next.get(&cur) {
            Some(step) => vec![*step],
            None => maybe.get(&cur).cloned().unwrap_or_default(),
        };
        steps.into_iter().find_map(|(new, r)| {
            let mut rest = walk(Some(new), to, next, maybe, depth - 1)?;
            rest.insert(0, (new, r));
            Some(rest)
        })
    }
    let Some(chain) = walk(None, final_value, &next, &maybe, cas.len() + 1) else {
        bad.push(format!(
            "o-reg: no chain of swaps from the unwritten register ends at the value it holds ({final_value:?})"
        ));
        return;
    };
    let mut on_chain = BTreeSet::new();
    // Real time: a swap cannot come after one that began after it ended.
    for pair in chain.windows(2) {
        let ((_, a), (new, b)) = (pair[0], pair[1]);
        if b.ended() < a.start {
            bad.push(format!(
                "o-reg: the swap to {new} ended at {} ms, before the swap it follows began ({} ms)",
                b.ended(),
                a.start
            ));
        }
    }
    on_chain.extend(chain.iter().map(|(new, _)| *new));
    for (_, new, r) in cas.iter().filter(|c| c.2.took_effect()) {
        if !on_chain.contains(new) {
            bad.push(format!(
                "o-reg: the swap to {new} at n{} took effect but is not on the chain",
                r.node
            ));
        }
    }
}

/// The bounded counter: its final value is the acknowledged increments
/// less the decrements made, give or take the operations without answer.
fn check_counter(history: &[StrongRecord], view: &BTreeMap<String, State>, bad: &mut Vec<String>) {
    let value = match view.get("o-stock") {
        Some(State::Counter(c)) => c.value(),
        _ => 0,
    };
    let (mut low, mut high) = (0i128, 0i128);
    for r in history.iter().filter(|r| r.var == "o-stock") {
        let by = match r.op {
            StrongOp::Incr(by) => i128::from(by),
            StrongOp::DecrIf(by) => -i128::from(by),
            _ => continue,
        };
        if r.took_effect() {
            low += by;
            high += by;
        } else if r.maybe() {
            if by > 0 {
                high += by;
            } else {
                low += by;
            }
        }
    }
    if value < low || value > high {
        bad.push(format!(
            "o-stock is {value}, outside what its operations allow ({low}..={high})"
        ));
    }
    if value < 0 {
        bad.push(format!("o-stock is {value}, below its floor of 0"));
    }
}
