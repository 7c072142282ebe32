//! atoll's layout on a backend: variables, their metadata and the delta log.
//!
//! About 955 lines, of which the last 270 are its tests, kept beside the
//! layout they pin down.

use crate::{Backend, BatchOp, Result, StoreError};
use atoll_crdt::codec::{self, DecodeError};
use atoll_crdt::variable::Kind;
use atoll_crdt::ReplicaId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The largest record decoded from storage: 256 MiB. A larger one is reported as corrupt.
pub const MAX_RECORD_LEN: usize = 256 << 20;

const NODE: &[u8] = b"n";
/// The incarnation history as stores before [`Opening::settled`] wrote it.
const HISTORY_V1: &[u8] = b"i";
const HISTORY: &[u8] = b"o";
const HOLDS: u8 = b'h';
const OWED: u8 = b'r';
const CHECKPOINT: &[u8] = b"c";
const DROPPED: &[u8] = b"q";
const META: u8 = b'm';
pub(crate) const STATE: u8 = b's';

/// The variables' states (`s` + name): a table of their own, so that a
/// backend can keep them apart from the log (sled: a tree of its own).
pub const STATES: crate::Table = crate::Table {
    prefix: STATE,
    name: "states",
};
const LOG: u8 = b'l';
const FORMAT: &[u8] = b"v";
const COALESCED: &[u8] = b"j";
const CHANGES: u8 = b'w';
const CHANGES_FROM: &[u8] = b"k";

/// The storage layout this version writes, recorded in the data on first
/// open (2: variable states in a sled tree of their own; 3: the index of
/// changes, which a version before it would not keep up to date). A version
/// that finds a newer one refuses to open the data, rather than misread it.
/// Data of format 2 is upgraded in place: its index of changes starts at its
/// checkpoint.
pub const STORAGE_FORMAT: u64 = 3;

/// What a store knows about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// The replica id its operations issue dots under.
    pub replica: ReplicaId,
    /// When the store was created (wall clock, ms since the Unix epoch).
    pub created_ms: u64,
}

/// One opening of a store: an entry of its incarnation history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opening {
    /// The incarnation the opening issued its updates under.
    pub incarnation: ReplicaId,
    /// The first log sequence number written under it.
    pub first_seq: u64,
    /// Where the log was settled when it opened (see [`Storage::settled`]):
    /// through there, every copy of this store numbers the same entries the
    /// same way. After it, the earlier opening, running on where this copy
    /// came from (a backup's source, or the process a crash stopped before
    /// its last join was flushed), may have joined runs of entries into later
    /// ones that this copy does not have.
    pub settled: u64,
}

/// A variable's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VarMeta {
    /// Its type, fixed at creation.
    pub kind: Kind,
    /// The replica that owns it, for owned variables (not yet used: ownerless).
    pub owner: Option<ReplicaId>,
    /// The ownership epoch (not yet used: 0).
    pub epoch: u64,
}

impl VarMeta {
    /// Metadata of a new ownerless variable.
    pub fn new(kind: Kind) -> Self {
        VarMeta {
            kind,
            owner: None,
            epoch: 0,
        }
    }
}

/// One delta-log entry: the delta one operation or merge joined into a variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The variable.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The replica the delta came from (this one, for local operations).
    pub origin: ReplicaId,
    /// The delta, encoded as an [`atoll_crdt::variable::State`].
    #[serde(with = "atoll_crdt::codec::bytes")]
    pub delta: Vec<u8>,
}

impl LogEntry {
    /// The entry's delta, decoded; `seq` names the entry in the error if the
    /// bytes are damaged.
    pub fn decode_delta(&self, seq: u64) -> Result<atoll_crdt::variable::State> {
        codec::decode(&self.delta, MAX_RECORD_LEN).map_err(|source| StoreError::Corrupt {
            key: format!("log entry {seq}"),
            source,
        })
    }
}

/// atoll's data laid out on a [`Backend`].
pub struct Storage<B> {
    backend: B,
    last_seq: u64,
    checkpoint: u64,
    /// The log holds every entry after this (some moved to later sequence
    /// numbers by [`Storage::rewrite_log`]); those up to it were truncated.
    dropped: u64,
    /// [`Storage::first_seq`], once read (`None`: not known). Replication
    /// asks for it on every message; reading it copies the first entry.
    first: std::cell::Cell<Option<Option<u64>>>,
    /// The index of changes holds every variable changed after this.
    changes_from: u64,
}

fn change_key(seq: u64, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + name.len());
    k.push(CHANGES);
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

fn key(prefix: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(prefix);
    k.extend_from_slice(name.as_bytes());
    k
}

fn holds_key(node: ReplicaId) -> Vec<u8> {
    let mut k = vec![HOLDS];
    k.extend_from_slice(&node.0.to_be_bytes());
    k
}

fn owed_key(node: ReplicaId) -> Vec<u8> {
    let mut k = vec![OWED];
    k.extend_from_slice(&node.0.to_be_bytes());
    k
}

fn log_key(seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(LOG);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn read_u64<B: Backend>(backend: &B, key: &[u8]) -> Result<u64> {
    match backend.get(key)? {
        Some(v) => {
            let arr: [u8; 8] = v.as_slice().try_into().map_err(|_| StoreError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                source: DecodeError::TrailingBytes(v.len().saturating_sub(8)),
            })?;
            Ok(u64::from_be_bytes(arr))
        }
        None => Ok(0),
    }
}

fn seq_of(key: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = key
        .get(1..9)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            source: DecodeError::TrailingBytes(0),
        })?;
    Ok(u64::from_be_bytes(arr))
}

fn decode_record<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T> {
    codec::decode_unvalidated(bytes, MAX_RECORD_LEN).map_err(|source| corrupt(key, source))
}

fn corrupt(key: &[u8], source: DecodeError) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    }
}

impl<B: Backend> Storage<B> {
    /// Lays atoll's data out on `backend`, recovering the log sequence and the
    /// checkpoint.
    pub fn open(mut backend: B) -> Result<Self> {
        let checkpoint = read_u64(&backend, CHECKPOINT)?;
        match read_u64(&backend, FORMAT)? {
            found if found > STORAGE_FORMAT => {
                return Err(StoreError::NewerFormat {
                    found,
                    supported: STORAGE_FORMAT,
                })
            }
            found if found < STORAGE_FORMAT => {
                // New data (0), or data written before the index of changes
                // (2): the variables changed after the checkpoint are
                // replayed and written to the index at the next one; those
                // changed before are not known.
                backend.apply(vec![
                    BatchOp::Put(CHANGES_FROM.to_vec(), checkpoint.to_be_bytes().to_vec()),
                    BatchOp::Put(FORMAT.to_vec(), STORAGE_FORMAT.to_be_bytes().to_vec()),
                ])?;
                backend.flush()?;
            }
            _ => {}
        }
        let changes_from = read_u64(&backend, CHANGES_FROM)?;
        let dropped = read_u64(&backend, DROPPED)?;
        let newest = match backend.last_in(&[LOG], &[LOG + 1])? {
            Some((k, _)) => seq_of(&k)?,
            None => 0,
        };
        Ok(Storage {
            backend,
            last_seq: dropped.max(newest).max(checkpoint),
            checkpoint,
            dropped,
            first: std::cell::Cell::new(None),
            changes_from,
        })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The log sequence through which entries are never rewritten again
    /// (runs of them are joined into one at a later sequence; see
    /// [`Storage::rewrite_log`]), as last recorded; `None` if never (a store
    /// written before it was recorded).
    pub fn settled(&self) -> Result<Option<u64>> {
        match self.backend.get(COALESCED)? {
            Some(_) => read_u64(&self.backend, COALESCED).map(Some),
            None => Ok(None),
        }
    }

    /// The openings of this store, oldest first (the newest ones; see
    /// [`Storage::put_incarnations`]). A history written before openings
    /// recorded where the log was settled reads as settled at 0, which only
    /// costs a peer of theirs some entries sent again.
    pub fn incarnations(&self) -> Result<Vec<Opening>> {
        if let Some(v) = self.backend.get(HISTORY)? {
            return decode_record(HISTORY, &v);
        }
        let old: Vec<(ReplicaId, u64)> = self
            .backend
            .get(HISTORY_V1)?
            .map(|v| decode_record(HISTORY_V1, &v))
            .transpose()?
            .unwrap_or_default();
        Ok(old
            .into_iter()
            .map(|(incarnation, first_seq)| Opening {
                incarnation,
                first_seq,
                settled: 0,
            })
            .collect())
    }

    /// Writes the incarnation history and flushes it.
    pub fn put_incarnations(&mut self, history: &[Opening]) -> Result<()> {
        self.backend.apply(vec![
            BatchOp::Put(HISTORY.to_vec(), codec::encode(&history.to_vec())),
            BatchOp::Delete(HISTORY_V1.to_vec()),
        ])?;
        self.backend.flush()
    }

    /// What this store holds of peer `node`'s delta log: every entry through
    /// the sequence number, as the peer's incarnation named here numbered them.
    pub fn peer_holds(&self, node: ReplicaId) -> Result<Option<(ReplicaId, u64)>> {
        let k = holds_key(node);
        self.backend
            .get(&k)?
            .map(|v| decode_record(&k, &v))
            .transpose()
    }

    /// Whether this store ever recorded holding any peer's log: it merged
    /// from a peer, so it belongs to a cluster.
    pub fn has_peer_holds(&self) -> Result<bool> {
        Ok(!self.backend.range(&[HOLDS], &[HOLDS + 1], 1, 1)?.is_empty())
    }

    /// Records what this store holds of peer `node`'s log. Written after the
    /// entries it covers, so that a crash never keeps it without them. Does
    /// not flush.
    pub fn put_peer_holds(&mut self, node: ReplicaId, holds: (ReplicaId, u64)) -> Result<()> {
        self.backend
            .apply(vec![BatchOp::Put(holds_key(node), codec::encode(&holds))])
    }

    /// A state transfer this store owes peer `node`, once the peer holds
    /// its log through the sequence number (namespaces became shared with
    /// it; see atoll-core's mirroring), if one is owed.
    pub fn owed_transfer(&self, node: ReplicaId) -> Result<Option<u64>> {
        let k = owed_key(node);
        self.backend
            .get(&k)?
            .map(|v| decode_record(&k, &v))
            .transpose()
    }

    /// Records (`Some`) or forgets (`None`) a state transfer owed to peer
    /// `node`, and flushes: it is rare, and must outlive a crash.
    pub fn put_owed_transfer(&mut self, node: ReplicaId, from: Option<u64>) -> Result<()> {
        let k = owed_key(node);
        let op = match from {
            Some(seq) => BatchOp::Put(k, codec::encode(&seq)),
            None => BatchOp::Delete(k),
        };
        self.backend.apply(vec![op])?;
        self.backend.flush()
    }

    /// The store's own metadata, if it was ever written.
    pub fn node_meta(&self) -> Result<Option<NodeMeta>> {
        self.backend
            .get(NODE)?
            .map(|v| decode_record(NODE, &v))
            .transpose()
    }

    /// Writes the store's own metadata and flushes it.
    pub fn put_node_meta(&mut self, meta: &NodeMeta) -> Result<()> {
        self.backend
            .apply(vec![BatchOp::Put(NODE.to_vec(), codec::encode(meta))])?;
        self.backend.flush()
    }

    /// A variable's metadata, if it exists.
    pub fn meta(&self, name: &str) -> Result<Option<VarMeta>> {
        let k = key(META, name);
        self.backend
            .get(&k)?
            .map(|v| decode_record(&k, &v))
            .transpose()
    }

    /// A variable's encoded state, if it exists.
    pub fn state(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.backend.get(&key(STATE, name))
    }

    /// Every variable and its metadata, in name order.
    pub fn variables(&self) -> Result<Vec<(String, VarMeta)>> {
        self.variables_from(&[META], usize::MAX)
    }

    /// Up to `limit` variables named after `after`, in name order: a state
    /// transfer reads the keyspace a page at a time.
    pub fn variables_after(&self, after: &str, limit: usize) -> Result<Vec<(String, VarMeta)>> {
        // The least key after `after`'s: its bytes, then a zero byte.
        let mut from = key(META, after);
        from.push(0);
        self.variables_from(&from, limit)
    }

    fn variables_from(&self, from: &[u8], limit: usize) -> Result<Vec<(String, VarMeta)>> {
        let rows = self.backend.range(from, &[META + 1], limit, usize::MAX)?;
        rows.into_iter()
            .map(|(k, v)| {
                let name = String::from_utf8(k[1..].to_vec()).map_err(|_| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    source: DecodeError::Invalid(atoll_crdt::InvalidState(
                        "variable name is not UTF-8",
                    )),
                })?;
                Ok((name, decode_record(&k, &v)?))
            })
            .collect()
    }

    /// Appends an operation's delta to the log, with the variable's metadata in
    /// the same atomic batch when `meta` is given (on creation); returns the
    /// entry's sequence number. Does not flush.
    pub fn append(&mut self, meta: Option<&VarMeta>, entry: &LogEntry) -> Result<u64> {
        let seq = self.last_seq + 1;
        let mut ops = Vec::with_capacity(2);
        if let Some(meta) = meta {
            ops.push(BatchOp::Put(key(META, &entry.name), codec::encode(meta)));
        }
        ops.push(BatchOp::Put(log_key(seq), codec::encode(entry)));
        self.backend.apply(ops)?;
        self.last_seq = seq;
        if self.first.get() == Some(None) {
            // The log was empty: it now starts after the last truncation.
            self.first.set(Some(Some(self.dropped + 1)));
        }
        Ok(seq)
    }

    /// Appends the first entry of a variable that starts over as another
    /// kind (a type conflict its old kind lost): its new metadata, the
    /// removal of its stored state and the entry, in one atomic batch.
    /// Does not flush.
    pub fn append_restarting(&mut self, meta: &VarMeta, entry: &LogEntry) -> Result<u64> {
        let seq = self.last_seq + 1;
        let ops = vec![
            BatchOp::Put(key(META, &entry.name), codec::encode(meta)),
            BatchOp::Delete(key(STATE, &entry.name)),
            BatchOp::Put(log_key(seq), codec::encode(entry)),
        ];
        self.backend.apply(ops)?;
        self.last_seq = seq;
        if self.first.get() == Some(None) {
            self.first.set(Some(Some(self.dropped + 1)));
        }
        Ok(seq)
    }

    /// Writes the given variables' states and records that every state now
    /// includes the log through `through`, in one atomic batch. Does not flush.
    ///
    /// The same batch records each of them in the index of changes as
    /// changed at `through`, with the one incarnation its changes since the
    /// last checkpoint came from, if one (see [`Storage::changed_after`]);
    /// `replaced` names earlier entries of the index to drop, as
    /// (sequence, name).
    pub fn checkpoint<N: AsRef<str>>(
        &mut self,
        states: impl IntoIterator<Item = (N, Vec<u8>, Option<ReplicaId>)>,
        replaced: impl IntoIterator<Item = (u64, N)>,
        through: u64,
    ) -> Result<()> {
        let mut ops: Vec<BatchOp> = replaced
            .into_iter()
            .filter(|(seq, _)| *seq != through)
            .map(|(seq, name)| BatchOp::Delete(change_key(seq, name.as_ref())))
            .collect();
        for (name, state, origin) in states {
            let origin = origin.map_or_else(Vec::new, |o| o.0.to_be_bytes().to_vec());
            ops.push(BatchOp::Put(change_key(through, name.as_ref()), origin));
            ops.push(BatchOp::Put(key(STATE, name.as_ref()), state));
        }
        ops.push(BatchOp::Put(
            CHECKPOINT.to_vec(),
            through.to_be_bytes().to_vec(),
        ));
        self.backend.apply(ops)?;
        self.checkpoint = through;
        Ok(())
    }

    /// The variables changed after log sequence `after`, as the index of
    /// changes recorded them at checkpoints (those changed since the last
    /// checkpoint are not in it), each with the one incarnation its changes
    /// came from, if one; in the order of the checkpoints that recorded
    /// them, a variable perhaps more than once. `None` if the index does not
    /// reach back to `after` (see [`Storage::changes_from`]), or names more
    /// than `limit`.
    #[allow(clippy::type_complexity)]
    pub fn changed_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<(String, Option<ReplicaId>)>>> {
        if after < self.changes_from {
            return Ok(None);
        }
        let from = change_key(after.saturating_add(1), "");
        let rows =
            self.backend
                .range(&from, &[CHANGES + 1], limit.saturating_add(1), usize::MAX)?;
        if rows.len() > limit {
            return Ok(None);
        }
        rows.into_iter()
            .map(|(k, v)| {
                let invalid =
                    |what| corrupt(&k, DecodeError::Invalid(atoll_crdt::InvalidState(what)));
                let name = k.get(9..).unwrap_or_default();
                let name = String::from_utf8(name.to_vec())
                    .map_err(|_| invalid("variable name is not UTF-8"))?;
                let origin = match <[u8; 8]>::try_from(v.as_slice()) {
                    Ok(id) => Some(ReplicaId(u64::from_be_bytes(id))),
                    Err(_) if v.is_empty() => None,
                    Err(_) => return Err(invalid("an origin is 8 bytes")),
                };
                Ok((name, origin))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// The index of changes names every variable changed after this log
    /// sequence.
    pub fn changes_from(&self) -> u64 {
        self.changes_from
    }

    /// Drops the index's entries through log sequence `through`: it then
    /// knows only the changes after it. Does not flush.
    pub fn forget_changes_through(&mut self, through: u64) -> Result<()> {
        if through <= self.changes_from {
            return Ok(());
        }
        loop {
            let rows = self.backend.range(
                &[CHANGES],
                &change_key(through.saturating_add(1), ""),
                1024,
                usize::MAX,
            )?;
            let done = rows.len() < 1024;
            let mut ops: Vec<BatchOp> = rows.into_iter().map(|(k, _)| BatchOp::Delete(k)).collect();
            // In the same batch: the index never claims to reach back
            // further than the entries it holds.
            ops.push(BatchOp::Put(
                CHANGES_FROM.to_vec(),
                through.to_be_bytes().to_vec(),
            ));
            self.backend.apply(ops)?;
            self.changes_from = through;
            if done {
                return Ok(());
            }
        }
    }

    /// The log sequence the stored states include: later entries must be
    /// replayed into them.
    pub fn checkpoint_seq(&self) -> u64 {
        self.checkpoint
    }

    /// The sequence number of the newest log entry ever written (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Up to `limit` log entries with sequence numbers greater than `after`.
    pub fn log_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, LogEntry)>> {
        self.log_within(after, limit, usize::MAX)
    }

    /// Like [`Storage::log_after`], but stops after the entry that brings the
    /// entries' stored size to `max_bytes` or more: a reader with a byte
    /// budget does not read (and copy) what it would not use.
    pub fn log_within(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, LogEntry)>> {
        let from = log_key(after.saturating_add(1));
        let rows = self.backend.range(&from, &[LOG + 1], limit, max_bytes)?;
        rows.into_iter()
            .map(|(k, v)| {
                let seq =
                    u64::from_be_bytes(k[1..9].try_into().map_err(|_| StoreError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        source: DecodeError::TrailingBytes(0),
                    })?);
                Ok((seq, decode_record(&k, &v)?))
            })
            .collect()
    }

    /// The sequence number from which the log holds every entry, if it holds
    /// any: one past the last truncation. An entry there may have been moved
    /// to a later sequence number, joined with others ([`Storage::rewrite_log`]).
    pub fn first_seq(&self) -> Result<Option<u64>> {
        if let Some(known) = self.first.get() {
            return Ok(known);
        }
        let first = self
            .log_after(self.dropped, 1)?
            .first()
            .map(|_| self.dropped + 1);
        self.first.set(Some(first));
        Ok(first)
    }

    /// Replaces log entries, in one atomic batch: deletes those at `remove`,
    /// then writes `put`. Used to join runs of small entries into one; the
    /// caller keeps every entry at or after its original sequence number, so
    /// that a peer is never skipped past something it lacks. Does not flush.
    ///
    /// Records, in the same batch, that no entry through `settled` will be
    /// rewritten again ([`Storage::settled`]).
    pub fn rewrite_log(
        &mut self,
        remove: &[u64],
        put: &[(u64, LogEntry)],
        settled: u64,
    ) -> Result<()> {
        if let Some(seq) = remove
            .iter()
            .chain(put.iter().map(|(s, _)| s))
            .find(|s| **s <= self.dropped || **s > self.last_seq)
        {
            return Err(StoreError::Invalid(format!(
                "log rewrite at {seq}, outside the log ({}, {}]",
                self.dropped, self.last_seq
            )));
        }
        let mut ops: Vec<BatchOp> = remove
            .iter()
            .map(|s| BatchOp::Delete(log_key(*s)))
            .collect();
        ops.extend(
            put.iter()
                .map(|(s, e)| BatchOp::Put(log_key(*s), codec::encode(e))),
        );
        ops.push(BatchOp::Put(
            COALESCED.to_vec(),
            settled.to_be_bytes().to_vec(),
        ));
        // Entries only move later, but a rewrite that removes more than it
        // puts could empty the log: read the start again when asked.
        self.first.set(None);
        self.backend.apply(ops)
    }

    /// Drops log entries with sequence numbers up to `through`, which must not
    /// pass the checkpoint; returns how many.
    pub fn truncate_log(&mut self, through: u64) -> Result<usize> {
        self.first.set(None);
        let through = through.min(self.checkpoint);
        let mut dropped = 0;
        loop {
            let rows = self.backend.range(
                &log_key(0),
                &log_key(through.saturating_add(1)),
                1024,
                usize::MAX,
            )?;
            if rows.is_empty() {
                if through > self.dropped {
                    // Nothing left to delete (entries may have moved past
                    // `through`); the log now starts after it all the same.
                    self.backend.apply(vec![BatchOp::Put(
                        DROPPED.to_vec(),
                        through.to_be_bytes().to_vec(),
                    )])?;
                    self.dropped = through;
                }
                return Ok(dropped);
            }
            dropped += rows.len();
            let mut ops: Vec<BatchOp> = rows.into_iter().map(|(k, _)| BatchOp::Delete(k)).collect();
            // Remember how far the log went, in case it is now empty.
            ops.push(BatchOp::Put(
                DROPPED.to_vec(),
                through.to_be_bytes().to_vec(),
            ));
            self.backend.apply(ops)?;
            self.dropped = self.dropped.max(through);
        }
    }

    /// Makes everything committed so far durable.
    pub fn flush(&self) -> Result<()> {
        self.backend.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;

    #[test]
    fn a_history_written_before_openings_recorded_the_settled_point_reads_as_settled_at_0() {
        let mut disk = MemoryBackend::new();
        let old = vec![(ReplicaId(7), 1u64), (ReplicaId(8), 40)];
        disk.apply(vec![BatchOp::Put(HISTORY_V1.to_vec(), codec::encode(&old))])
            .unwrap();
        let mut storage = Storage::open(disk.clone()).unwrap();
        let history = storage.incarnations().unwrap();
        assert_eq!(
            history,
            [
                Opening {
                    incarnation: ReplicaId(7),
                    first_seq: 1,
                    settled: 0
                },
                Opening {
                    incarnation: ReplicaId(8),
                    first_seq: 40,
                    settled: 0
                },
            ]
        );
        let mut next = history.clone();
        next.push(Opening {
            incarnation: ReplicaId(9),
            first_seq: 90,
            settled: 60,
        });
        storage.put_incarnations(&next).unwrap();
        assert_eq!(disk.get(HISTORY_V1).unwrap(), None, "the old record goes");
        assert_eq!(storage.incarnations().unwrap(), next);
    }

    #[test]
    fn the_storage_format_is_recorded_and_a_newer_one_refused() {
        let disk = MemoryBackend::new();
        drop(Storage::open(disk.clone()).unwrap());
        assert_eq!(
            disk.get(FORMAT).unwrap(),
            Some(STORAGE_FORMAT.to_be_bytes().to_vec()),
            "recorded, and flushed"
        );
        disk.crash(0);
        assert!(disk.get(FORMAT).unwrap().is_some(), "survives a crash");
        let mut newer = disk.clone();
        newer
            .apply(vec![BatchOp::Put(
                FORMAT.to_vec(),
                (STORAGE_FORMAT + 1).to_be_bytes().to_vec(),
            )])
            .unwrap();
        let e = Storage::open(newer).err().expect("refused");
        assert!(matches!(e, StoreError::NewerFormat { .. }), "{e}");
        assert!(e.to_string().contains("newer atoll"), "{e}");
    }

    #[test]
    fn the_index_of_changes_names_what_changed_after_a_sequence_and_no_more() {
        let mem = MemoryBackend::new();
        let mut s = Storage::open(mem.clone()).unwrap();
        assert_eq!(s.changes_from(), 0, "a new store indexes every change");
        let (p, q) = (Some(ReplicaId(5)), Some(ReplicaId(6)));
        s.checkpoint([("a", vec![1], p), ("b", vec![2], None)], [], 3)
            .unwrap();
        s.checkpoint([("c", vec![3], q), ("a", vec![4], p)], [(3, "a")], 7)
            .unwrap();
        let names = |s: &Storage<MemoryBackend>, after| {
            s.changed_after(after, 10)
                .unwrap()
                .map(|v| v.into_iter().map(|(n, _)| n).collect::<Vec<String>>())
        };
        assert_eq!(names(&s, 0), Some(vec!["b".into(), "a".into(), "c".into()]));
        assert_eq!(names(&s, 3), Some(vec!["a".into(), "c".into()]));
        assert_eq!(names(&s, 7), Some(vec![]));
        assert_eq!(
            s.changed_after(0, 10).unwrap(),
            Some(vec![("b".into(), None), ("a".into(), p), ("c".into(), q)]),
            "with their origins"
        );
        assert_eq!(s.changed_after(0, 2).unwrap(), None, "over the limit");
        // Reopened: the index is on disk.
        let mut s = Storage::open(mem.clone()).unwrap();
        assert_eq!(names(&s, 3), Some(vec!["a".into(), "c".into()]));
        s.forget_changes_through(5).unwrap();
        assert_eq!(s.changes_from(), 5);
        assert_eq!(names(&s, 3), None, "no longer reaches back to 3");
        assert_eq!(names(&s, 5), Some(vec!["a".into(), "c".into()]));
        let s = Storage::open(mem).unwrap();
        assert_eq!(s.changes_from(), 5, "kept");
        assert_eq!(names(&s, 6), Some(vec!["a".into(), "c".into()]));
    }

    #[test]
    fn data_of_format_2_is_upgraded_with_an_index_from_its_checkpoint() {
        let mut mem = MemoryBackend::new();
        mem.apply(vec![
            BatchOp::Put(FORMAT.to_vec(), 2u64.to_be_bytes().to_vec()),
            BatchOp::Put(CHECKPOINT.to_vec(), 40u64.to_be_bytes().to_vec()),
        ])
        .unwrap();
        let s = Storage::open(mem.clone()).unwrap();
        assert_eq!(s.changes_from(), 40, "what changed before 40 is not known");
        assert_eq!(s.changed_after(39, 10).unwrap(), None);
        assert_eq!(s.changed_after(40, 10).unwrap(), Some(vec![]));
        assert_eq!(
            mem.get(FORMAT).unwrap(),
            Some(STORAGE_FORMAT.to_be_bytes().to_vec())
        );
    }

    fn entry(name: &str) -> LogEntry {
        LogEntry {
            name: name.into(),
            kind: Kind::Counter,
            origin: ReplicaId(1),
            delta: vec![1, 2],
        }
    }

    #[test]
    fn appends_and_checkpoints_are_recovered() {
        let mem = MemoryBackend::new();
        let mut s = Storage::open(mem.clone()).unwrap();
        let meta = VarMeta::new(Kind::Counter);
        assert_eq!(s.append(Some(&meta), &entry("x")).unwrap(), 1);
        s.checkpoint([("x", b"st".to_vec(), None)], [], 1).unwrap();
        s.flush().unwrap();
        assert_eq!(s.append(None, &entry("x")).unwrap(), 2);
        mem.crash(0);
        let s = Storage::open(mem.clone()).unwrap();
        assert_eq!(s.last_seq(), 1);
        assert_eq!(s.checkpoint_seq(), 1);
        assert_eq!(s.state("x").unwrap().unwrap(), b"st");
        assert_eq!(s.variables().unwrap(), vec![("x".to_string(), meta)]);
        assert_eq!(s.log_after(0, 10).unwrap(), vec![(1, entry("x"))]);
    }

    #[test]
    fn truncation_stops_at_the_checkpoint_and_keeps_the_sequence() {
        let mut s = Storage::open(MemoryBackend::new()).unwrap();
        assert_eq!(s.first_seq().unwrap(), None);
        for _ in 0..5 {
            s.append(None, &entry("x")).unwrap();
        }
        assert_eq!(s.first_seq().unwrap(), Some(1));
        s.checkpoint(Vec::<(&str, Vec<u8>, _)>::new(), [], 3)
            .unwrap();
        assert_eq!(s.truncate_log(10).unwrap(), 3);
        assert_eq!(s.first_seq().unwrap(), Some(4));
        s.checkpoint(Vec::<(&str, Vec<u8>, _)>::new(), [], 5)
            .unwrap();
        assert_eq!(s.truncate_log(5).unwrap(), 2);
        assert_eq!(s.first_seq().unwrap(), None);
        let s2 = Storage::open(s.backend().clone()).unwrap();
        assert_eq!(s2.last_seq(), 5);
        assert_eq!(s2.first_seq().unwrap(), None);
        // An append to an emptied log: it starts after the truncation.
        s.append(None, &entry("x")).unwrap();
        assert_eq!(s.first_seq().unwrap(), Some(6));
        assert_eq!(
            Storage::open(s.backend().clone())
                .unwrap()
                .first_seq()
                .unwrap(),
            Some(6),
            "remembered as read"
        );
    }

    #[test]
    fn variables_are_read_a_page_at_a_time_in_name_order() {
        let mut s = Storage::open(MemoryBackend::new()).unwrap();
        let meta = VarMeta::new(atoll_crdt::variable::Kind::Counter);
        for name in ["b", "a", "ab", "c", "a\u{e9}"] {
            s.append(Some(&meta), &entry(name)).unwrap();
        }
        let names = |after: &str, limit| -> Vec<String> {
            s.variables_after(after, limit)
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        assert_eq!(names("", 10), ["a", "ab", "a\u{e9}", "b", "c"]);
        assert_eq!(names("", 2), ["a", "ab"]);
        assert_eq!(names("ab", 2), ["a\u{e9}", "b"]);
        assert_eq!(names("a\u{e9}", 10), ["b", "c"]);
        assert_eq!(names("bb", 10), ["c"]);
        assert!(names("c", 10).is_empty());
        let all: Vec<String> = s.variables().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(all, names("", 10));
    }

    #[test]
    fn a_byte_budget_ends_the_read_at_the_entry_that_reaches_it() {
        let dir = tempfile::tempdir().unwrap();
        for backend in [
            Box::new(MemoryBackend::new()) as Box<dyn Backend>,
            Box::new(crate::SledBackend::open(dir.path(), None, STATES).unwrap()),
        ] {
            let mut s = Storage::open(backend).unwrap();
            for size in [10, 1000, 10, 10] {
                let e = LogEntry {
                    delta: vec![7; size],
                    ..entry("x")
                };
                s.append(None, &e).unwrap();
            }
            let seqs = |after, max| -> Vec<u64> {
                s.log_within(after, 10, max)
                    .unwrap()
                    .iter()
                    .map(|(q, _)| *q)
                    .collect()
            };
            // The second entry alone passes 100 bytes: the read ends with it.
            assert_eq!(seqs(0, 100), vec![1, 2]);
            // A budget smaller than the first entry still returns that entry.
            assert_eq!(seqs(0, 1), vec![1]);
            assert_eq!(seqs(1, 1), vec![2]);
            assert_eq!(seqs(2, 100), vec![3, 4]);
            assert_eq!(seqs(0, usize::MAX), vec![1, 2, 3, 4]);
        }
    }

    #[test]
    fn a_rewritten_log_still_starts_where_it_did() {
        let mut s = Storage::open(MemoryBackend::new()).unwrap();
        for _ in 0..5 {
            s.append(None, &entry("x")).unwrap();
        }
        let joined = LogEntry {
            delta: vec![9],
            ..entry("x")
        };
        assert_eq!(s.settled().unwrap(), None);
        s.rewrite_log(&[1, 2], &[(3, joined.clone())], 3).unwrap();
        assert_eq!(s.settled().unwrap(), Some(3));
        // Entries 1 and 2 moved into 3: the log still covers everything after 0.
        assert_eq!(s.first_seq().unwrap(), Some(1));
        let seqs: Vec<u64> = s
            .log_after(0, 10)
            .unwrap()
            .iter()
            .map(|(q, _)| *q)
            .collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(s.log_after(0, 1).unwrap(), vec![(3, joined)]);
        // Truncating through 2 finds nothing to delete, and moves the start.
        s.checkpoint(Vec::<(&str, Vec<u8>, _)>::new(), [], 5)
            .unwrap();
        assert_eq!(s.truncate_log(2).unwrap(), 0);
        assert_eq!(s.first_seq().unwrap(), Some(3));
        let reopened = Storage::open(s.backend().clone()).unwrap();
        assert_eq!(reopened.first_seq().unwrap(), Some(3));
        assert_eq!(reopened.settled().unwrap(), Some(3));
        // Nothing may be written outside the log.
        for bad in [2, 6] {
            let e = s.rewrite_log(&[], &[(bad, entry("x"))], 5).unwrap_err();
            assert!(matches!(e, StoreError::Invalid(_)), "{e}");
        }
        let e = s.rewrite_log(&[1], &[], 5).unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e}");
        // A refused rewrite records nothing.
        assert_eq!(s.settled().unwrap(), Some(3));
    }
}
