//! The ordered key-value store atoll's storage is laid out on: the
//! [`Backend`] trait, and what every backend shares.

use crate::Result;

/// One write of an atomic batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Delete `key`.
    Delete(Vec<u8>),
}

/// An ordered key-value store with atomic batches.
///
/// A batch is applied entirely or not at all, also across a crash. What was
/// applied before a successful [`Backend::flush`] survives a crash; what was
/// applied after it may be lost, but only whole batches, newest first.
pub trait Backend: Send {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Up to `limit` entries with keys in `[from, to)`, in key order, ending
    /// with the one that brings their values' total size to `max_bytes` or
    /// more (so at least one, if there is any).
    fn range(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// The entry with the greatest key in `[from, to)`.
    fn last_in(&self, from: &[u8], to: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    /// Applies `ops` atomically.
    fn apply(&mut self, ops: Vec<BatchOp>) -> Result<()>;
    /// Makes everything applied so far survive a crash.
    fn flush(&self) -> Result<()>;
    /// A handle that does what [`Backend::flush`] does, callable from any
    /// thread while the backend is in use elsewhere: a store's group commit
    /// flushes without holding the store's lock, for every write applied
    /// before the call. `None`: the backend has none (then the store
    /// flushes under its lock).
    fn flusher(&self) -> Option<Flusher> {
        None
    }
}

/// See [`Backend::flusher`].
pub type Flusher = std::sync::Arc<dyn Fn() -> Result<()> + Send + Sync>;

/// Collects up to `limit` rows, ending with the one that brings the values'
/// total size to `max_bytes` or more: [`Backend::range`]'s budget, for every
/// backend alike.
pub(crate) fn collect_within(
    rows: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for row in rows.take(limit) {
        let (k, v) = row?;
        bytes = bytes.saturating_add(v.len());
        out.push((k, v));
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(out)
}

impl<B: Backend + ?Sized> Backend for Box<B> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        (**self).get(key)
    }
    fn range(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        (**self).range(from, to, limit, max_bytes)
    }
    fn last_in(&self, from: &[u8], to: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        (**self).last_in(from, to)
    }
    fn apply(&mut self, ops: Vec<BatchOp>) -> Result<()> {
        (**self).apply(ops)
    }
    fn flusher(&self) -> Option<Flusher> {
        (**self).flusher()
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
}

/// A key range kept apart: keys that start with `prefix` live in a table
/// of their own, `name` (a backend may ignore it; sled gives it its own
/// tree). The layout above the backend names it, so the backend needs to
/// know nothing of the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    /// The first byte of every key in the table.
    pub prefix: u8,
    /// The table's name (a sled tree's, say).
    pub name: &'static str,
}
