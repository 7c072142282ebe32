//! The sled backend: atoll's data on disk (sled 0.34.7), with the
//! durability sled's own flush lacks. Behind the `sled` feature, so that
//! the sans-IO core builds without it.

use crate::backend::{collect_within, Backend, BatchOp, Table};
use crate::Result;
use sled::Transactional;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The sled backend: one sled database; variable states (keys beginning
/// with the byte `s`) in a tree of their own, everything else in
/// its default tree.
///
/// sled keeps up to 16 keys in a leaf page and rewrites the whole page when
/// it consolidates the page's updates. In one tree, the newest log keys sort
/// right next to the variables' states, so a large state (a set's checkpoint
/// of megabytes) shared the leaf that every appended log entry updates: each
/// few appends rewrote it, and writes slowed in proportion to the largest
/// state (about 1 250 set adds a second at 200 000 members, against 12 500 at
/// 20 000). States now live in their own tree. A database written before is
/// moved over when it is opened, in one transaction.
///
/// sled 0.34's `flush` writes its log with `sync_file_range` on Linux, which
/// neither flushes the drive's write cache nor the file's size, and writes
/// large pages to blob files without syncing them (sled #1452). A flush here
/// therefore also `fdatasync`s sled's data file and fsyncs every blob file (and
/// the blob directory) not synced before, so that a flushed write survives
/// power loss, not only a process crash.
pub struct SledBackend {
    db: sled::Db,
    /// The table kept apart, and its tree.
    table: Table,
    states: sled::Tree,
    /// What a flush syncs: shared with [`Backend::flusher`]'s handles.
    sync: Arc<Syncer>,
}

/// Everything a flush of a sled database syncs (see [`SledBackend`]).
struct Syncer {
    db: sled::Db,
    data_file: Option<std::fs::File>,
    dir: std::path::PathBuf,
    synced_blobs: Mutex<std::collections::BTreeSet<std::ffi::OsString>>,
}

impl SledBackend {
    /// Opens (creating if needed) the database in `dir`. With `flush_every_ms`,
    /// sled also flushes in the background at that interval.
    ///
    /// sled's background threads can hold a just-closed database's file lock for
    /// a moment, so a reopen in the same process retries for up to two seconds
    /// before reporting that the directory is in use.
    ///
    /// Keys of `table` live in a sled tree of their own (atoll's storage
    /// keeps the variables' states there, [`crate::STATES`]), so that the
    /// log's tree stays small.
    pub fn open(dir: &Path, flush_every_ms: Option<u64>, table: Table) -> Result<Self> {
        let config = sled::Config::new().path(dir).flush_every_ms(flush_every_ms);
        let mut tries = 0;
        loop {
            match config.open() {
                Ok(db) => {
                    let states = db.open_tree(table.name)?;
                    let sync = Arc::new(Syncer {
                        db: db.clone(),
                        data_file: std::fs::File::open(dir.join("db")).ok(),
                        dir: dir.to_path_buf(),
                        synced_blobs: Mutex::default(),
                    });
                    let backend = SledBackend {
                        db,
                        table,
                        states,
                        sync,
                    };
                    backend.move_states()?;
                    return Ok(backend);
                }
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::Other
                        && e.to_string().contains("could not acquire lock")
                        && tries < 100 =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The sled database (for benchmarks that compare against raw sled).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The tree a key lives in.
    fn tree_of(&self, key: &[u8]) -> &sled::Tree {
        if key.first() == Some(&self.table.prefix) {
            &self.states
        } else {
            &self.db
        }
    }

    /// Moves the states a database written before kept in its default tree
    /// into their own, atomically, and flushes.
    fn move_states(&self) -> Result<()> {
        let old: Vec<(sled::IVec, sled::IVec)> = self
            .db
            .range(&[self.table.prefix][..]..&[self.table.prefix + 1][..])
            .collect::<std::result::Result<_, _>>()?;
        if old.is_empty() {
            return Ok(());
        }
        self.in_both(|db, states| {
            for (k, v) in &old {
                states.insert(k, v)?;
                db.remove(k)?;
            }
            Ok(())
        })?;
        self.flush()
    }

    /// Runs `f` on the default tree and the states tree as one sled
    /// transaction (retried by sled on conflict; it never aborts).
    fn in_both(
        &self,
        f: impl Fn(
            &sled::transaction::TransactionalTree,
            &sled::transaction::TransactionalTree,
        ) -> sled::transaction::ConflictableTransactionResult<(), ()>,
    ) -> Result<()> {
        (&*self.db, &self.states)
            .transaction(|(db, states)| f(db, states))
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => e.into(),
                sled::transaction::TransactionError::Abort(()) => {
                    unreachable!("the transaction never aborts")
                }
            })
    }

    /// The rows of `[from, to)` of one tree.
    fn rows<'a>(
        tree: &'a sled::Tree,
        from: &[u8],
        to: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 'a {
        tree.range(from.to_vec()..to.to_vec()).map(|kv| {
            let (k, v) = kv?;
            Ok((k.to_vec(), v.to_vec()))
        })
    }

    /// The tree holding every key of `[from, to)`, if one does.
    fn tree_for_range(&self, from: &[u8], to: &[u8]) -> Option<&sled::Tree> {
        let (lo, hi): (&[u8], &[u8]) = (&[self.table.prefix], &[self.table.prefix + 1]);
        if from >= lo && to <= hi {
            Some(&self.states)
        } else if to <= lo || from >= hi {
            Some(&self.db)
        } else {
            None
        }
    }

    /// Every row of `[from, to)` in both trees, in key order.
    fn merged_rows(&self, from: &[u8], to: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> = Self::rows(&self.db, from, to)
            .chain(Self::rows(&self.states, from, to))
            .collect::<Result<_>>()?;
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rows)
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree_of(key).get(key)?.map(|v| v.to_vec()))
    }

    fn range(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if from >= to {
            return Ok(Vec::new());
        }
        match self.tree_for_range(from, to) {
            Some(tree) => collect_within(Self::rows(tree, from, to), limit, max_bytes),
            None => collect_within(
                self.merged_rows(from, to)?.into_iter().map(Ok),
                limit,
                max_bytes,
            ),
        }
    }

    fn last_in(&self, from: &[u8], to: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if from >= to {
            return Ok(None);
        }
        match self.tree_for_range(from, to) {
            Some(tree) => Self::rows(tree, from, to).next_back().transpose(),
            None => Ok(self.merged_rows(from, to)?.pop()),
        }
    }

    fn apply(&mut self, mut ops: Vec<BatchOp>) -> Result<()> {
        let is_state = |op: &BatchOp| match op {
            BatchOp::Put(k, _) | BatchOp::Delete(k) => k.first() == Some(&self.table.prefix),
        };
        let states = ops.iter().filter(|op| is_state(op)).count();
        if states > 0 && states < ops.len() {
            // Both trees (a checkpoint: states and the sequence they
            // include): one transaction.
            return self.in_both(|db, st| {
                for op in &ops {
                    let tree = if is_state(op) { st } else { db };
                    match op {
                        BatchOp::Put(k, v) => tree.insert(k.as_slice(), v.as_slice())?,
                        BatchOp::Delete(k) => tree.remove(k.as_slice())?,
                    };
                }
                Ok(())
            });
        }
        let tree = if states > 0 { &self.states } else { &*self.db };
        // A single-key write is atomic in sled by itself, and much cheaper than a batch.
        if ops.len() == 1 {
            match ops.pop().expect("one op") {
                BatchOp::Put(k, v) => tree.insert(k, v)?,
                BatchOp::Delete(k) => tree.remove(k)?,
            };
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                BatchOp::Put(k, v) => batch.insert(k, v),
                BatchOp::Delete(k) => batch.remove(k),
            }
        }
        tree.apply_batch(batch)?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.sync.flush()
    }

    fn flusher(&self) -> Option<crate::Flusher> {
        let sync = Arc::clone(&self.sync);
        Some(Arc::new(move || sync.flush()))
    }
}

impl Syncer {
    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        if let Some(f) = &self.data_file {
            f.sync_data()?;
        }
        let blobs = self.dir.join("blobs");
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut new_files = false;
        let mut present = std::collections::BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(&blobs) {
            for entry in entries {
                let name = entry?.file_name();
                if !synced.contains(&name) {
                    match std::fs::File::open(blobs.join(&name)) {
                        Ok(f) => f.sync_all()?,
                        // sled collected it meanwhile: nothing to sync.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e.into()),
                    }
                    new_files = true;
                }
                present.insert(name);
            }
        }
        *synced = present;
        if new_files {
            std::fs::File::open(&blobs)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: Table = Table {
        prefix: b's',
        name: "states",
    };

    /// States live in a tree of their own (and a database with them in the
    /// default tree is moved over when opened); reads, ranges and batches
    /// across both trees behave as over one ordered map.
    #[test]
    fn sled_keeps_states_apart_and_moves_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let put = |k: &[u8], v: &[u8]| BatchOp::Put(k.to_vec(), v.to_vec());
        {
            // Written as before: a state in the default tree.
            let b = SledBackend::open(dir.path(), None, STATES).unwrap();
            b.db().insert(b"sold", b"old state".to_vec()).unwrap();
            b.db().insert(b"l1", b"log".to_vec()).unwrap();
            b.flush().unwrap();
        }
        let mut b = SledBackend::open(dir.path(), None, STATES).unwrap();
        assert!(b.db().get(b"sold").unwrap().is_none(), "moved out");
        assert_eq!(b.get(b"sold").unwrap(), Some(b"old state".to_vec()));
        // A checkpoint: states and a default-tree key in one batch.
        b.apply(vec![put(b"snew", b"new state"), put(b"c", b"9")])
            .unwrap();
        b.apply(vec![put(b"l2", b"log 2")]).unwrap();
        b.apply(vec![put(b"mx", b"meta"), put(b"l3", b"log 3")])
            .unwrap();
        assert_eq!(b.get(b"snew").unwrap(), Some(b"new state".to_vec()));
        assert_eq!(b.get(b"c").unwrap(), Some(b"9".to_vec()));
        assert!(b.db().get(b"snew").unwrap().is_none());
        let keys = |rows: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<Vec<u8>> {
            rows.into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(
            keys(b.range(b"l", b"m", 10, usize::MAX).unwrap()),
            vec![b"l1".to_vec(), b"l2".to_vec(), b"l3".to_vec()]
        );
        assert_eq!(
            keys(b.range(b"s", b"t", 10, usize::MAX).unwrap()),
            vec![b"snew".to_vec(), b"sold".to_vec()]
        );
        // A range across both trees is merged in key order.
        assert_eq!(
            keys(b.range(b"m", b"z", 10, usize::MAX).unwrap()),
            vec![b"mx".to_vec(), b"snew".to_vec(), b"sold".to_vec()]
        );
        assert_eq!(
            b.last_in(b"a", b"z").unwrap().map(|(k, _)| k),
            Some(b"sold".to_vec())
        );
        assert_eq!(
            b.last_in(b"l", b"m").unwrap().map(|(k, _)| k),
            Some(b"l3".to_vec())
        );
        b.apply(vec![BatchOp::Delete(b"sold".to_vec()), put(b"c", b"10")])
            .unwrap();
        b.flush().unwrap();
        drop(b);
        let b = SledBackend::open(dir.path(), None, STATES).unwrap();
        assert_eq!(b.get(b"sold").unwrap(), None);
        assert_eq!(b.get(b"c").unwrap(), Some(b"10".to_vec()));
        assert_eq!(b.get(b"snew").unwrap(), Some(b"new state".to_vec()));
    }
}
