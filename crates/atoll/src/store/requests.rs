//! A store's requests: each operation runs where the replica routes it,
//! here or at the node that decides about its variable, whose answer this
//! waits for.

use super::{blocking, clock, Store};
use crate::{CoreError, Result};
use atoll_core::protocol::Body;
use atoll_core::{Answer, OwnershipError, Requested};

/// How often a request that met a transfer under way here is made again.
const TRANSFER_POLL: std::time::Duration = std::time::Duration::from_millis(5);

impl Store {
    /// Runs `body` on `name` where it must run ([`Replica::request`]): here,
    /// or at the node that decides about the variable (its owner), whose
    /// answer this waits for, at most the replica's `request_timeout_ms`
    /// (and a second). A variable this node is handing on (or, by a
    /// placement rule, just granted elsewhere) is waited for in the same
    /// time, as a forwarded request waits for a transfer, then the request
    /// goes to its new owner. `fenced_bag_op`: a bag take or transfer,
    /// refused while the store is fenced, with the store's own explanation.
    pub(crate) fn request(&self, name: &str, body: Body, fenced_bag_op: bool) -> Result<Answer> {
        let started = std::time::Instant::now();
        let mut body = body;
        loop {
            let (got, spare) = self.request_once(name, body, fenced_bag_op);
            match (got, spare) {
                (
                    Err(crate::Error::Core(CoreError::Ownership(OwnershipError::InTransfer {
                        ..
                    }))),
                    Some(b),
                ) if started.elapsed() < self.request_timeout() && self.node_runs() => {
                    blocking(|| std::thread::sleep(TRANSFER_POLL));
                    body = b;
                }
                (got, _) => return got,
            }
        }
    }

    fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.replica().config().request_timeout_ms)
    }

    /// Whether a node runs on this store (which can complete a transfer).
    fn node_runs(&self) -> bool {
        !self
            .inner
            .standalone
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One try of [`Store::request`]; with a copy of `body` if the variable
    /// may be in transfer here (so that the request can be made again).
    fn request_once(
        &self,
        name: &str,
        body: Body,
        fenced_bag_op: bool,
    ) -> (Result<Answer>, Option<Body>) {
        let now = clock();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (timeout, id, spare) = {
            let mut r = self.replica();
            if fenced_bag_op && r.fenced() {
                let e = CoreError::Fenced {
                    name: name.to_string(),
                    waiting: self.fence_waiting(&r),
                };
                return (Err(e.into()), None);
            }
            let spare = r.may_be_in_transfer(name).then(|| body.clone());
            // Durable: appended here, made durable by a shared flush once
            // the lock is let go (group commit), before the answer.
            let group = self.group_commit();
            let before = r.keyspace_ref().last_seq();
            r.keyspace().defer_flushes(group);
            let requested = r.request(now, name, body);
            r.keyspace().defer_flushes(false);
            let wrote = r.keyspace_ref().last_seq();
            let timeout = r.config().request_timeout_ms;
            // A request sent on is registered before the lock is let go:
            // the driver reads the answer under it, so it cannot come first.
            if let Ok(Requested::Sent(id)) = &requested {
                self.waiting().insert(*id, tx);
            }
            drop(r);
            if group && wrote > before {
                if let Err(e) = self.commit(wrote) {
                    if let Ok(Requested::Sent(id)) = &requested {
                        self.waiting().remove(id);
                    }
                    return (Err(e), None);
                }
            }
            match requested {
                Err(e) => return (Err(e.into()), spare),
                Ok(Requested::Done {
                    answer,
                    applied,
                    at_owner,
                }) => {
                    if at_owner {
                        self.inner.at_owner.note_local();
                    }
                    if let Some(a) = applied {
                        self.publish(a);
                        self.inner.wake.notify_one();
                    }
                    return (Ok(answer), None);
                }
                Ok(Requested::Sent(id)) => (timeout, id, spare),
            }
        };
        self.inner.wake.notify_one();
        let wait = std::time::Duration::from_millis(timeout.saturating_add(1_000));
        let started = std::time::Instant::now();
        let got = blocking(|| rx.recv_timeout(wait));
        self.inner.at_owner.note_wait(started.elapsed());
        self.waiting().remove(&id);
        self.inner.at_owner.note_forwarded(&got);
        let got = match got {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(CoreError::Ownership(e).into()),
            // The replica answers every request by its deadline: only a
            // stopped driver gets here.
            Err(_) => Err(CoreError::Ownership(OwnershipError::OwnerUnreachable {
                name: name.to_string(),
                owner: None,
                waited_ms: timeout.saturating_add(1_000),
                last: Some("no node runs on this store to send the request".into()),
            })
            .into()),
        };
        (got, spare)
    }
}
