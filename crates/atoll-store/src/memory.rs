//! A crashable in-memory backend: what a simulator runs on. A crash keeps
//! what was flushed and loses whole batches after it, newest first.

use crate::backend::{collect_within, Backend, BatchOp};
use crate::Result;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

/// The maps are shared with snapshots and copied only when written
/// (`Arc::make_mut`): a snapshot costs nothing until one side changes.
#[derive(Default)]
struct MemoryState {
    /// What a crash keeps.
    disk: Arc<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// What readers see: `disk` plus the batches applied since the last flush.
    live: Arc<BTreeMap<Vec<u8>, Vec<u8>>>,
    pending: Vec<Vec<BatchOp>>,
}

fn apply_ops(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, ops: &[BatchOp]) {
    for op in ops {
        match op {
            BatchOp::Put(k, v) => {
                map.insert(k.clone(), v.clone());
            }
            BatchOp::Delete(k) => {
                map.remove(k);
            }
        }
    }
}

/// An in-memory backend that can crash. Clones share the same data, so a
/// simulator can keep a handle to crash or snapshot a store it handed away.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<MemoryState>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loses every batch applied since the last flush, as a power cut would.
    /// `keep` of the newest unflushed batches survive (a crash that came after
    /// some of them reached the disk).
    pub fn crash(&self, keep: usize) {
        let mut s = self.lock();
        let pending = std::mem::take(&mut s.pending);
        for ops in pending.iter().take(keep) {
            apply_ops(Arc::make_mut(&mut s.disk), ops);
        }
        s.live = s.disk.clone();
    }

    /// A copy of what is flushed, as a backup of the disk would hold.
    pub fn snapshot(&self) -> MemoryBackend {
        let s = self.lock();
        MemoryBackend {
            state: Arc::new(Mutex::new(MemoryState {
                disk: Arc::clone(&s.disk),
                live: Arc::clone(&s.disk),
                pending: Vec::new(),
            })),
        }
    }

    /// How many applied batches a crash would lose now.
    pub fn unflushed(&self) -> usize {
        self.lock().pending.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding the lock leaves consistent maps: recover them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().live.get(key).cloned())
    }

    fn range(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let s = self.lock();
        let rows = s
            .live
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
            .map(|(k, v)| Ok((k.clone(), v.clone())));
        collect_within(rows, limit, max_bytes)
    }

    fn last_in(&self, from: &[u8], to: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let s = self.lock();
        let r = s
            .live
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone()));
        Ok(r)
    }

    fn apply(&mut self, ops: Vec<BatchOp>) -> Result<()> {
        let mut s = self.lock();
        apply_ops(Arc::make_mut(&mut s.live), &ops);
        s.pending.push(ops);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let mut s = self.lock();
        let pending = std::mem::take(&mut s.pending);
        if !pending.is_empty() {
            let disk = Arc::make_mut(&mut s.disk);
            for ops in &pending {
                apply_ops(disk, ops);
            }
        }
        Ok(())
    }

    fn flusher(&self) -> Option<crate::Flusher> {
        let shared = self.clone();
        Some(Arc::new(move || shared.flush()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_crash_loses_only_unflushed_batches() {
        let mut m = MemoryBackend::new();
        m.apply(vec![BatchOp::Put(b"a".to_vec(), b"1".to_vec())])
            .unwrap();
        m.flush().unwrap();
        m.apply(vec![BatchOp::Put(b"b".to_vec(), b"2".to_vec())])
            .unwrap();
        m.apply(vec![
            BatchOp::Put(b"c".to_vec(), b"3".to_vec()),
            BatchOp::Delete(b"a".to_vec()),
        ])
        .unwrap();
        assert_eq!(m.unflushed(), 2);
        let snap = m.snapshot();
        m.crash(1);
        assert_eq!(m.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(m.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(m.get(b"c").unwrap(), None);
        assert_eq!(snap.get(b"b").unwrap(), None);
        assert_eq!(snap.get(b"a").unwrap(), Some(b"1".to_vec()));
    }
}
