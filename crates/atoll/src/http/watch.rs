//! `GET /v1/watch?prefix=P` (and `/v1/ns/{ns}/watch`): a namespace's
//! changes as server-sent events, one `change` event per change to a
//! variable whose name (within the namespace) begins with `prefix`:
//!
//! ```text
//! id: 5aa1b2c3d4e5f607:42
//! event: change
//! data: {"name":"hits","type":"counter","local":true,"seq":42,"origin":"..."}
//! ```
//!
//! The id is the node's id and the change's sequence in its log. A client
//! that reconnects with `Last-Event-ID` gets the changes after it, replayed
//! from the log, then the live ones. A `lagged` event says changes were
//! lost to this subscriber (it fell behind, or the log no longer reaches
//! back to its resume point, or the point is another node's): re-read
//! what it watches. A replay sees each variable changed at least once,
//! not each change: the log joins runs of one variable's changes.

use super::ErrorBody;
use super::{grant, namespaces, Api, ApiError};
use crate::feed::FeedError;
use crate::{Access, ChangeFeed, Kind, Namespace, ReplicaId};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::collections::VecDeque;
use std::convert::Infallible;

/// Log entries read per step of a replay.
const REPLAY_PAGE: usize = 256;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct WatchQuery {
    #[serde(default)]
    prefix: String,
}

/// Where a subscriber is.
struct Watch {
    ns: Namespace,
    prefix: String,
    feed: ChangeFeed,
    node: ReplicaId,
    /// Replaying the log after this sequence, through `through`; then live.
    replay_after: Option<u64>,
    /// The log's end when the subscription began: live changes through it
    /// were replayed (or came before the resume point).
    through: u64,
    ready: VecDeque<Event>,
}

#[utoipa::path(get, path = "/v1/watch", summary = "Changes as server-sent events", params(WatchQuery), responses((status = 200, description = "server-sent events", content_type = "text/event-stream"), (status = "4XX", description = "an error", body = ErrorBody)))]
pub(super) async fn watch(
    State(api): State<Api>,
    h: HeaderMap,
    Query(q): Query<WatchQuery>,
) -> Result<Response, ApiError> {
    let grant = grant(&api, &h)?;
    let ns = namespaces::requested(&h)?;
    grant
        .allows(&ns, Access::Read)
        .map_err(|why| ApiError(StatusCode::FORBIDDEN, why))?;
    let ns = api.store.namespace(&ns)?;
    // Subscribed before the log's end is read: nothing falls between.
    let feed = api.store.changes();
    let through = api.store.last_seq();
    let node = api.store.replica_id();
    let mut ready = VecDeque::new();
    let resume = h
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| resume_point(v, node));
    let replay_after = match resume {
        None => None,
        Some(Err(why)) => {
            ready.push_back(lagged(&why));
            None
        }
        Some(Ok(seq)) if seq >= through => None,
        Some(Ok(seq)) => {
            let from = api.store.log_from()?;
            // Every change after `seq` is in the log from `from` on.
            if from.is_none_or(|f| f > seq + 1) {
                ready.push_back(lagged(&format!(
                    "the log no longer reaches back to {seq}; the changes after it are not all replayed"
                )));
            }
            Some(seq)
        }
    };
    let state = Watch {
        ns,
        prefix: q.prefix,
        feed,
        node,
        replay_after,
        through,
        ready,
    };
    let stream = futures_util::stream::unfold(state, |mut w| async move {
        loop {
            if let Some(e) = w.ready.pop_front() {
                return Some((Ok::<_, Infallible>(e), w));
            }
            if let Some(after) = w.replay_after {
                w.replay(after);
                continue;
            }
            match w.feed.recv().await {
                Ok(c) if c.seq <= w.through => {}
                Ok(c) => {
                    if let Some(e) = w.event(&c.name, c.kind, c.seq, c.origin, c.local) {
                        w.ready.push_back(e);
                    }
                }
                Err(FeedError::Lagged(n)) => w.ready.push_back(lagged(&format!(
                    "this subscriber fell behind: {n} changes were dropped"
                ))),
                Err(FeedError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

impl Watch {
    /// One page of the replay after `after`.
    fn replay(&mut self, after: u64) {
        let store = self.ns.store().clone();
        let page = match store.deltas_since(after, REPLAY_PAGE) {
            Ok(page) => page,
            Err(e) => {
                self.ready
                    .push_back(lagged(&format!("the log could not be read: {e}")));
                self.replay_after = None;
                return;
            }
        };
        let mut last = after;
        for (seq, entry) in page.iter().filter(|(seq, _)| *seq <= self.through) {
            let local = store.written_here(entry.origin);
            if let Some(e) = self.event(&entry.name, entry.kind, *seq, entry.origin, local) {
                self.ready.push_back(e);
            }
            last = *seq;
        }
        let done = page.len() < REPLAY_PAGE || last >= self.through || last == after;
        self.replay_after = (!done).then_some(last);
    }

    /// The event of a change, if its variable is one this subscriber watches.
    fn event(
        &self,
        full: &str,
        kind: Kind,
        seq: u64,
        origin: ReplicaId,
        local: bool,
    ) -> Option<Event> {
        let name = self.ns.own_name(full)?;
        if !name.starts_with(&self.prefix) {
            return None;
        }
        let data = json!({
            "name": name,
            "type": kind.name(),
            "local": local,
            "seq": seq,
            "origin": origin.to_string(),
        });
        Some(
            Event::default()
                .id(format!("{}:{seq}", self.node))
                .event("change")
                .data(data.to_string()),
        )
    }
}

/// A `lagged` event: changes were lost to this subscriber, and why.
fn lagged(why: &str) -> Event {
    Event::default()
        .event("lagged")
        .data(json!({ "why": why }).to_string())
}

/// The sequence after which to resume, from a `Last-Event-ID` this node
/// gave (`NODE:SEQ`); why not, if it is another node's or not one.
fn resume_point(id: &str, node: ReplicaId) -> Result<u64, String> {
    let (of, seq) = id
        .split_once(':')
        .ok_or_else(|| format!("Last-Event-ID {id:?} is not NODE:SEQ; not resumed"))?;
    if of != node.to_string() {
        return Err(format!(
            "Last-Event-ID {id:?} is another node's ({of}); this node's log numbers changes its own way: not resumed"
        ));
    }
    seq.parse()
        .map_err(|_| format!("Last-Event-ID {id:?} has no sequence number; not resumed"))
}
