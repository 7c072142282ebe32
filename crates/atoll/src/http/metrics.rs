//! `GET /metrics`: the node's counters and each peer's, in Prometheus text.

use super::ErrorBody;
use super::{authorized, Api, ApiError};
use axum::extract::State;
use axum::http::HeaderMap;

#[utoipa::path(get, path = "/metrics", summary = "Prometheus text (admin)", responses((status = 200, description = "Prometheus text", body = String, content_type = "text/plain"), (status = "4XX", description = "an error", body = ErrorBody)))]
pub(super) async fn metrics(State(api): State<Api>, h: HeaderMap) -> Result<String, ApiError> {
    authorized(&api, &h)?;
    let s = api.control.status(&api.store);
    let m = api.control.metrics(&api.store);
    let mut out = String::new();
    let mut line = |name: &str, help: &str, kind: &str, rows: Vec<(String, u64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in rows {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    line(
        "atoll_local_ops_total",
        "Local write operations.",
        "counter",
        vec![(String::new(), m.local_ops)],
    );
    line(
        "atoll_merged_deltas_total",
        "Deltas from peers that changed state.",
        "counter",
        vec![(String::new(), m.merged)],
    );
    line(
        "atoll_log_seq",
        "Newest delta-log sequence number.",
        "gauge",
        vec![(String::new(), s.last_seq)],
    );
    line(
        "atoll_variables_loaded",
        "Variables held in memory.",
        "gauge",
        vec![(String::new(), s.variables_loaded as u64)],
    );
    line(
        "atoll_resident_bytes",
        "Encoded size of the variables held in memory (what counts against cache_bytes).",
        "gauge",
        vec![(String::new(), s.resident_bytes as u64)],
    );
    line(
        "atoll_conflicts_total",
        "Type conflicts resolved here (a name created with two types on two sides of a split).",
        "counter",
        vec![(String::new(), m.conflicts)],
    );
    line(
        "atoll_reconnects_total",
        "Peer connections established after the first.",
        "counter",
        vec![(String::new(), m.reconnects)],
    );
    let (owned, handing_off, in_flight) = api.store.ownership_summary()?;
    let c = api.store.owner_counters();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    line(
        "atoll_owned_variables",
        "Variables this node owns.",
        "gauge",
        vec![(String::new(), owned as u64)],
    );
    line(
        "atoll_handoffs_in_progress",
        "Owned variables this node is handing to another node.",
        "gauge",
        vec![(String::new(), handing_off as u64)],
    );
    line(
        "atoll_owner_requests_in_flight",
        "Operations sent to an owner and not yet answered.",
        "gauge",
        vec![(String::new(), in_flight as u64)],
    );
    line(
        "atoll_owner_ops_total",
        "Operations that ran at a variable's owner: here, or sent there and answered.",
        "counter",
        vec![
            ("{at=\"local\"}".to_string(), get(&c.local)),
            ("{at=\"forwarded\"}".to_string(), get(&c.forwarded)),
        ],
    );
    line(
        "atoll_owner_unreachable_total",
        "Operations that failed because their owner could not be reached in time.",
        "counter",
        vec![(String::new(), get(&c.unreachable))],
    );
    line(
        "atoll_owner_wait_microseconds_total",
        "Time callers waited for owners' answers, in total (divide by the forwarded and unreachable counts for the mean).",
        "counter",
        vec![(String::new(), get(&c.wait_us))],
    );
    let (last, runs, repaired) = api.store.last_check();
    line(
        "atoll_checks_total",
        "Consistency checks this node ran since it started.",
        "counter",
        vec![(String::new(), runs)],
    );
    line(
        "atoll_check_repaired_total",
        "Variables joined with a peer's state by a check's repair.",
        "counter",
        vec![(String::new(), repaired)],
    );
    let at_last = |r: atoll_core::CheckResult| {
        last.as_ref().map_or(0, |c| {
            c.nodes
                .iter()
                .filter(|n| n.result == r)
                .map(|n| n.differing)
                .sum::<u64>()
        })
    };
    line(
        "atoll_check_divergent_variables",
        "Variables found divergent at the last check, summed over peers.",
        "gauge",
        vec![(String::new(), at_last(atoll_core::CheckResult::Divergent))],
    );
    line(
        "atoll_check_in_flight_variables",
        "Variables found in flight at the last check, summed over peers.",
        "gauge",
        vec![(String::new(), at_last(atoll_core::CheckResult::InFlight))],
    );
    line(
        "atoll_check_last_started_ms",
        "When the last check began (wall ms; 0: none yet).",
        "gauge",
        vec![(String::new(), last.as_ref().map_or(0, |c| c.started_ms))],
    );
    line(
        "atoll_migrations_total",
        "Owned variables this node moved to the node that used them most.",
        "counter",
        vec![(String::new(), api.store.replica().migrations())],
    );
    line(
        "atoll_bag_elements_given_total",
        "Bag elements this node gave to connected nodes whose shares were low.",
        "counter",
        vec![(String::new(), api.store.replica().bag_elements_given())],
    );
    line(
        "atoll_escrow_rights_granted_total",
        "Decrement rights of counters with escrow this node granted as their owner.",
        "counter",
        vec![(String::new(), api.store.escrow_granted())],
    );
    let per = |f: &dyn Fn(&atoll_core::PeerStatus) -> u64| -> Vec<(String, u64)> {
        s.peers
            .iter()
            .map(|(p, _)| (format!("{{peer=\"{}\"}}", p.id), f(p)))
            .collect()
    };
    line(
        "atoll_peer_connected",
        "1 if connected to the peer.",
        "gauge",
        per(&|p| p.connected as u64),
    );
    line(
        "atoll_peer_lag",
        "Delta-log entries the peer has not acknowledged.",
        "gauge",
        per(&|p| p.lag),
    );
    line(
        "atoll_peer_lag_ms",
        "Age of the oldest delta-log entry the peer has not acknowledged (0: none).",
        "gauge",
        per(&|p| p.lag_ms.unwrap_or(0)),
    );
    line(
        "atoll_peer_holds",
        "Inbound progress: how far of the peer's delta log this node holds.",
        "gauge",
        per(&|p| p.holds.unwrap_or(0)),
    );
    line(
        "atoll_peer_stuck",
        "1 while the peer's deltas are refused here (see peer list for why).",
        "gauge",
        per(&|p| u64::from(p.stuck.is_some())),
    );
    line(
        "atoll_peer_address_unanswered",
        "1 for each configured or learned peer address no connected peer answers from.",
        "gauge",
        s.unanswered
            .iter()
            .map(|(a, _, _)| (format!("{{addr=\"{a}\"}}"), 1))
            .collect(),
    );
    line(
        "atoll_peer_bytes_sent_total",
        "Message bytes sent to the peer.",
        "counter",
        per(&|p| p.stats.bytes_sent),
    );
    line(
        "atoll_peer_bytes_received_total",
        "Message bytes received from the peer.",
        "counter",
        per(&|p| p.stats.bytes_received),
    );
    line(
        "atoll_peer_messages_sent_total",
        "Messages sent to the peer.",
        "counter",
        per(&|p| p.stats.messages_sent),
    );
    line(
        "atoll_peer_messages_received_total",
        "Messages received from the peer.",
        "counter",
        per(&|p| p.stats.messages_received),
    );
    line(
        "atoll_peer_retransmits_total",
        "Intervals re-sent to the peer after a timeout.",
        "counter",
        per(&|p| p.stats.retransmits),
    );
    line(
        "atoll_peer_state_transfers_total",
        "State transfers to the peer.",
        "counter",
        per(&|p| p.stats.state_transfers),
    );
    line(
        "atoll_peer_changed_transfers_total",
        "State transfers to the peer of only the variables changed since what it held.",
        "counter",
        per(&|p| p.stats.changed_transfers),
    );
    line(
        "atoll_peer_state_parts_sent_total",
        "Parts of large states sent to the peer in state transfers.",
        "counter",
        per(&|p| p.stats.state_parts_sent),
    );
    // Per namespace and peer (namespace names are [a-z0-9_-], or `*`).
    let per_ns = |f: &dyn Fn(&atoll_core::NsTraffic) -> u64| -> Vec<(String, u64)> {
        s.peers
            .iter()
            .flat_map(|(p, _)| {
                p.namespaces
                    .iter()
                    .map(move |(ns, t)| (format!("{{namespace=\"{ns}\",peer=\"{}\"}}", p.id), f(t)))
            })
            .collect()
    };
    line(
        "atoll_mirror_sent_bytes_total",
        "Bytes of a namespace's deltas and states sent to the peer.",
        "counter",
        per_ns(&|t| t.sent_bytes),
    );
    line(
        "atoll_mirror_refused_bytes_total",
        "Bytes of a namespace the peer sent that were refused (not mirrored with it).",
        "counter",
        per_ns(&|t| t.refused_bytes),
    );
    line(
        "atoll_peer_state_parts_received_total",
        "Parts of large states received from the peer.",
        "counter",
        per(&|p| p.stats.state_parts_received),
    );
    Ok(out)
}
