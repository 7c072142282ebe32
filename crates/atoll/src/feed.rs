//! The change feed: which variables changed, by local writes or merges.

use atoll_crdt::variable::Kind;
use atoll_crdt::ReplicaId;
use tokio::sync::broadcast;

/// One change to one variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The variable.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The delta-log sequence number of the change.
    pub seq: u64,
    /// The incarnation the change came from: `Store::incarnation()` of the store
    /// that wrote it, or of the peer that sent it.
    pub origin: ReplicaId,
    /// Whether it was a local write (false: a merge from elsewhere).
    pub local: bool,
}

/// Why a change could not be received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The subscriber fell behind and this many changes were dropped; later
    /// changes follow. Re-read the variables it watches.
    #[error("change feed lagged: {0} changes dropped")]
    Lagged(u64),
    /// The store was closed.
    #[error("the store was closed")]
    Closed,
}

/// A subscription to changes: every variable's, or one variable's ([`crate::Store::watch`]).
pub struct ChangeFeed {
    rx: broadcast::Receiver<Change>,
    only: Option<String>,
}

impl ChangeFeed {
    pub(crate) fn new(rx: broadcast::Receiver<Change>, only: Option<String>) -> Self {
        ChangeFeed { rx, only }
    }

    fn wanted(&self, c: &Change) -> bool {
        self.only.as_ref().is_none_or(|n| *n == c.name)
    }

    /// The next change, if one is waiting.
    pub fn try_recv(&mut self) -> Result<Option<Change>, FeedError> {
        loop {
            match self.rx.try_recv() {
                Ok(c) if self.wanted(&c) => return Ok(Some(c)),
                Ok(_) => continue,
                Err(broadcast::error::TryRecvError::Empty) => return Ok(None),
                Err(broadcast::error::TryRecvError::Lagged(n)) => return Err(FeedError::Lagged(n)),
                Err(broadcast::error::TryRecvError::Closed) => return Err(FeedError::Closed),
            }
        }
    }

    /// Waits for the next change.
    pub async fn recv(&mut self) -> Result<Change, FeedError> {
        loop {
            match self.rx.recv().await {
                Ok(c) if self.wanted(&c) => return Ok(c),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(FeedError::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return Err(FeedError::Closed),
            }
        }
    }

    /// Blocks the thread until the next change. Do not call from async code.
    pub fn blocking_recv(&mut self) -> Result<Change, FeedError> {
        loop {
            match self.rx.blocking_recv() {
                Ok(c) if self.wanted(&c) => return Ok(c),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(FeedError::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return Err(FeedError::Closed),
            }
        }
    }
}
