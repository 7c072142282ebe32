//! atoll's layout on a backend: variables, their metadata and the delta log.

use crate::{Backend, BatchOp, Result, StoreError};
use atoll_crdt::codec::{self, DecodeError};
use atoll_crdt::variable::Kind;
use atoll_crdt::ReplicaId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The largest record decoded from storage: 256 MiB. A larger one is reported as corrupt.
pub const MAX_RECORD_LEN: usize = 256 << 20;

const NODE: &[u8] = b"n";
const SEQ: &[u8] = b"q";
const META: u8 = b'm';
const STATE: u8 = b's';
const LOG: u8 = b'l';

/// What a store knows about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// The replica id its operations issue dots under.
    pub replica: ReplicaId,
    /// When the store was created (wall clock, ms since the Unix epoch).
    pub created_ms: u64,
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
    pub delta: Vec<u8>,
}

/// One operation's writes, committed atomically by [`Storage::commit`].
#[derive(Debug)]
pub struct Commit<'a> {
    /// The variable.
    pub name: &'a str,
    /// Its metadata, when it changed (on creation).
    pub meta: Option<&'a VarMeta>,
    /// Its new encoded state.
    pub state: &'a [u8],
    /// The log entry of the delta.
    pub entry: &'a LogEntry,
}

/// atoll's data laid out on a [`Backend`].
pub struct Storage<B> {
    backend: B,
    last_seq: u64,
}

fn key(prefix: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(prefix);
    k.extend_from_slice(name.as_bytes());
    k
}

fn log_key(seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(LOG);
    k.extend_from_slice(&seq.to_be_bytes());
    k
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
    /// Lays atoll's data out on `backend`, recovering the log sequence.
    pub fn open(backend: B) -> Result<Self> {
        let last_seq = match backend.get(SEQ)? {
            Some(v) => {
                let arr: [u8; 8] = v.as_slice().try_into().map_err(|_| StoreError::Corrupt {
                    key: "q".into(),
                    source: DecodeError::TrailingBytes(v.len().saturating_sub(8)),
                })?;
                u64::from_be_bytes(arr)
            }
            None => 0,
        };
        Ok(Storage { backend, last_seq })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
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
        let rows = self.backend.range(&[META], &[META + 1], usize::MAX)?;
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

    /// Writes an operation's state, metadata and log entry in one atomic batch;
    /// returns the entry's sequence number. Does not flush.
    pub fn commit(&mut self, c: Commit<'_>) -> Result<u64> {
        let seq = self.last_seq + 1;
        let mut ops = Vec::with_capacity(4);
        if let Some(meta) = c.meta {
            ops.push(BatchOp::Put(key(META, c.name), codec::encode(meta)));
        }
        ops.push(BatchOp::Put(key(STATE, c.name), c.state.to_vec()));
        ops.push(BatchOp::Put(log_key(seq), codec::encode(c.entry)));
        ops.push(BatchOp::Put(SEQ.to_vec(), seq.to_be_bytes().to_vec()));
        self.backend.apply(ops)?;
        self.last_seq = seq;
        Ok(seq)
    }

    /// The sequence number of the newest log entry ever written (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Up to `limit` log entries with sequence numbers greater than `after`.
    pub fn log_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, LogEntry)>> {
        let from = log_key(after.saturating_add(1));
        let rows = self.backend.range(&from, &[LOG + 1], limit)?;
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

    /// The sequence number of the oldest log entry still held.
    pub fn first_seq(&self) -> Result<Option<u64>> {
        Ok(self.log_after(0, 1)?.first().map(|(s, _)| *s))
    }

    /// Drops log entries with sequence numbers up to `through`; returns how many.
    pub fn truncate_log(&mut self, through: u64) -> Result<usize> {
        let mut dropped = 0;
        loop {
            let rows =
                self.backend
                    .range(&log_key(0), &log_key(through.saturating_add(1)), 1024)?;
            if rows.is_empty() {
                return Ok(dropped);
            }
            dropped += rows.len();
            self.backend
                .apply(rows.into_iter().map(|(k, _)| BatchOp::Delete(k)).collect())?;
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
    fn commit_is_recovered_with_its_sequence() {
        let mem = MemoryBackend::new();
        let mut s = Storage::open(mem.clone()).unwrap();
        let entry = LogEntry {
            name: "x".into(),
            kind: Kind::Counter,
            origin: ReplicaId(1),
            delta: vec![1, 2],
        };
        let meta = VarMeta::new(Kind::Counter);
        let c = Commit {
            name: "x",
            meta: Some(&meta),
            state: b"st",
            entry: &entry,
        };
        assert_eq!(s.commit(c).unwrap(), 1);
        s.flush().unwrap();
        let c = Commit {
            name: "x",
            meta: None,
            state: b"st2",
            entry: &entry,
        };
        assert_eq!(s.commit(c).unwrap(), 2);
        mem.crash(0);
        let s = Storage::open(mem.clone()).unwrap();
        assert_eq!(s.last_seq(), 1);
        assert_eq!(s.state("x").unwrap().unwrap(), b"st");
        assert_eq!(s.variables().unwrap(), vec![("x".to_string(), meta)]);
        assert_eq!(s.log_after(0, 10).unwrap(), vec![(1, entry)]);
    }

    #[test]
    fn truncation_keeps_the_sequence() {
        let mut s = Storage::open(MemoryBackend::new()).unwrap();
        let entry = LogEntry {
            name: "x".into(),
            kind: Kind::Set,
            origin: ReplicaId(1),
            delta: vec![],
        };
        for _ in 0..5 {
            s.commit(Commit {
                name: "x",
                meta: None,
                state: b"",
                entry: &entry,
            })
            .unwrap();
        }
        assert_eq!(s.truncate_log(3).unwrap(), 3);
        assert_eq!(s.first_seq().unwrap(), Some(4));
        let s2 = Storage::open(s.backend().clone()).unwrap();
        assert_eq!(s2.last_seq(), 5);
    }
}
