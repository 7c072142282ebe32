//! Digests of the variables, for consistency checks: each variable's state
//! hashes to 128 bits (its canonical encoding, so that equal states hash
//! equal on every node), and the digests are summed into a tree whose
//! leaves are [`DIGEST_BUCKETS`] buckets of names (by a hash of the name),
//! each the XOR of its variables' digests, under one root. Two replicas
//! compare roots, then buckets, then the names of the buckets that differ.
//!
//! The index is built on first use (a pass over every variable, once per
//! opening), then kept up to date: a variable written or merged since the
//! last use is hashed again, and its bucket changed by the XOR of its old
//! and new digests; nothing else is read again.
//!
//! The buckets are also kept per namespace ([`data_namespace`]), so that a
//! check with a peer compares only the namespaces the two share
//! ([`Keyspace::digest_tree_of`]).

use super::*;
use atoll_crdt::digest::digest128;
use std::collections::HashMap;

/// Buckets of the digest tree.
pub const DIGEST_BUCKETS: usize = 4096;

/// How many variables are read at a time when the index is built.
const BUILD_BATCH: usize = 1024;

/// What the keyspace keeps of its digests.
#[derive(Default)]
pub(crate) struct DigestIndex {
    /// Built (every variable hashed once since opening).
    ready: bool,
    /// Each variable's digest.
    leaves: HashMap<String, u128>,
    /// Each bucket's XOR of its variables' digests.
    buckets: Vec<u128>,
    /// The same, per namespace ("": the system's own variables), with
    /// how many variables each holds.
    by_ns: HashMap<String, (Vec<u128>, u64)>,
    /// Variables changed since the last use.
    pub(super) changed: BTreeSet<String>,
}

impl DigestIndex {
    pub(super) fn note_changed(&mut self, name: &str) {
        if self.ready && !self.changed.contains(name) {
            self.changed.insert(name.to_string());
        }
    }
}

/// The bucket of name `name`.
pub fn bucket_of(name: &str) -> u16 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // The top 12 bits: DIGEST_BUCKETS is 2^12.
    (h >> 52) as u16
}

/// A variable's digest: its name and its state's canonical encoding.
pub fn digest_of(name: &str, state: &State) -> u128 {
    digest128(&[name.as_bytes(), &codec::encode(state)])
}

/// This replica's digest tree, as of one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestTree {
    /// The digest of every bucket, in order.
    pub root: u128,
    /// Each bucket's digest.
    pub buckets: Vec<u128>,
    /// How many variables it covers.
    pub variables: u64,
}

impl DigestTree {
    fn of(buckets: Vec<u128>, variables: u64) -> DigestTree {
        let bytes: Vec<u8> = buckets.iter().flat_map(|b| b.to_le_bytes()).collect();
        DigestTree {
            root: digest128(&[&bytes]),
            buckets,
            variables,
        }
    }
}

impl<B: Backend> Keyspace<B> {
    /// The digest tree of every variable, brought up to date.
    pub fn digest_tree(&mut self) -> Result<DigestTree> {
        self.update_digests()?;
        let d = &self.digests;
        Ok(DigestTree::of(d.buckets.clone(), d.leaves.len() as u64))
    }

    /// The digest tree of the variables of the namespaces `keep` keeps
    /// (given `None` for the system's own variables): equal to
    /// [`Keyspace::digest_tree`] when it keeps every one.
    pub fn digest_tree_of(&mut self, keep: impl Fn(Option<&str>) -> bool) -> Result<DigestTree> {
        self.update_digests()?;
        let d = &self.digests;
        let kept = |ns: &String| keep((!ns.is_empty()).then_some(ns.as_str()));
        if d.by_ns.keys().all(kept) {
            return Ok(DigestTree::of(d.buckets.clone(), d.leaves.len() as u64));
        }
        let mut buckets = vec![0; DIGEST_BUCKETS];
        let mut variables = 0;
        for (_, (ns_buckets, count)) in d.by_ns.iter().filter(|(ns, _)| kept(ns)) {
            for (b, x) in buckets.iter_mut().zip(ns_buckets) {
                *b ^= x;
            }
            variables += count;
        }
        Ok(DigestTree::of(buckets, variables))
    }

    /// The variables of `buckets` and their digests, in name order: one
    /// pass over the index, whatever the number of buckets.
    pub fn digests_in(&mut self, buckets: &[u16]) -> Result<Vec<(String, u128)>> {
        self.digests_in_of(buckets, |_| true)
    }

    /// [`Keyspace::digests_in`], of the namespaces `keep` keeps (as
    /// [`Keyspace::digest_tree_of`]).
    pub fn digests_in_of(
        &mut self,
        buckets: &[u16],
        keep: impl Fn(Option<&str>) -> bool,
    ) -> Result<Vec<(String, u128)>> {
        self.update_digests()?;
        let mut wanted = vec![false; DIGEST_BUCKETS];
        for &b in buckets {
            if let Some(w) = wanted.get_mut(usize::from(b)) {
                *w = true;
            }
        }
        let mut names: Vec<(String, u128)> = self
            .digests
            .leaves
            .iter()
            .filter(|(n, _)| wanted[usize::from(bucket_of(n))] && keep(data_namespace(n)))
            .map(|(n, d)| (n.clone(), *d))
            .collect();
        names.sort();
        Ok(names)
    }

    fn update_digests(&mut self) -> Result<()> {
        if !self.digests.ready {
            self.digests = DigestIndex {
                buckets: vec![0; DIGEST_BUCKETS],
                ..DigestIndex::default()
            };
            let mut after = String::new();
            loop {
                let batch = self.variables_after(&after, BUILD_BATCH)?;
                let done = batch.len() < BUILD_BATCH;
                for (name, _) in batch {
                    self.digests.changed.insert(name.clone());
                    after = name;
                }
                if done {
                    break;
                }
            }
            self.digests.ready = true;
        }
        let changed = std::mem::take(&mut self.digests.changed);
        for name in changed {
            let new = self.state(&name)?.map(|s| digest_of(&name, s));
            let d = &mut self.digests;
            let bucket = usize::from(bucket_of(&name));
            let old = d.leaves.get(&name).copied();
            let x = old.unwrap_or(0) ^ new.unwrap_or(0);
            d.buckets[bucket] ^= x;
            let ns = data_namespace(&name).unwrap_or("");
            // (Only the variables changed since the last check get here.)
            let (ns_buckets, count) = d
                .by_ns
                .entry(ns.to_string())
                .or_insert_with(|| (vec![0; DIGEST_BUCKETS], 0));
            ns_buckets[bucket] ^= x;
            match (old.is_some(), new.is_some()) {
                (false, true) => *count += 1,
                (true, false) => *count = count.saturating_sub(1),
                _ => {}
            }
            match new {
                Some(new) => d.leaves.insert(name, new),
                None => d.leaves.remove(&name),
            };
        }
        Ok(())
    }
}
