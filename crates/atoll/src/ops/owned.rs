//! The requests on owned variables: who owns one, changes of owner, the
//! strong operations and strong reads, and an operator's overrides (of an
//! owner, of a bag's share), with the JSON they answer and the HTTP call
//! that runs each on a node.

use super::{body, parse_node, path_segment as seg, read, BodyRoute, Request};
use crate::{Namespace, Result};
use atoll_crdt::variable::Kind;
use atoll_crdt::Ownership;
use serde_json::{json, Value};

/// A variable's ownership record, as JSON: node ids in 16 hex digits.
pub(crate) fn owner_json(name: &str, r: &Ownership) -> Value {
    json!({
        "name": name,
        "epoch": r.epoch,
        "owner": r.owner().map(|o| o.to_string()),
        "forced": r.forced(),
        "custodian": r.custodian().map(|c| c.to_string()),
        "in_transfer": r.handoff().map(|h| json!({"to": h.to.to_string(), "since_ms": h.since_ms})),
    })
}

/// A counter's escrow as JSON (`"escrow": null` when not enabled).
fn escrow_json(name: &str, e: Option<crate::EscrowStatus>) -> Value {
    let Some(e) = e else {
        return json!({"name": name, "escrow": null});
    };
    let nodes: Vec<Value> = e
        .nodes
        .iter()
        .map(|r| {
            json!({
                "node": r.node.to_string(),
                "balance": super::counter_json(r.balance),
                "spent": r.spent,
                "target": r.target,
            })
        })
        .collect();
    json!({
        "name": name,
        "escrow": {
            "floor": e.floor,
            "value": super::counter_json(e.value),
            "pool": super::counter_json(e.pool),
            "nodes": nodes,
        }
    })
}

/// Runs one of the requests of this module in namespace `ns`.
pub(super) fn apply(req: &Request, ns: &Namespace) -> Result<Value> {
    Ok(match req {
        Request::OwnerGet { name } => owner_json(name, &ns.owner(name)?),
        Request::Own { name, to: None } => {
            ns.own(name)?;
            owner_json(name, &ns.owner(name)?)
        }
        Request::Own { name, to: Some(to) } => {
            ns.own_by(name, parse_node(to)?)?;
            owner_json(name, &ns.owner(name)?)
        }
        Request::Release { name } => {
            ns.release(name)?;
            owner_json(name, &ns.owner(name)?)
        }
        Request::OwnForce { name, to } => {
            let record = ns.force_owner(name, parse_node(to)?)?;
            owner_json(name, &record)
        }
        Request::RegisterCas {
            name,
            expected,
            value,
        } => {
            let swapped = ns
                .register::<String>(name)?
                .compare_and_set(expected.as_ref(), value)?;
            json!({"name": name, "swapped": swapped, "value": value})
        }
        Request::CounterDecrIf { name, by, floor } => {
            let (done, value) = ns.counter(name)?.decrement_if(*by, *floor)?;
            json!({"name": name, "done": done, "value": super::counter_json(value)})
        }
        Request::CounterEscrow { name, floor } => {
            let counter = ns.counter(name)?;
            if let Some(floor) = floor {
                counter.enable_escrow(*floor)?;
            }
            escrow_json(name, counter.escrow()?)
        }
        Request::SetClaim { name, member } => {
            let claimed = ns.set::<String>(name)?.add_if_absent(member)?;
            json!({"name": name, "member": member, "claimed": claimed})
        }
        Request::MapCas {
            name,
            key,
            expected,
            value,
        } => {
            let swapped = ns
                .map(name)?
                .compare_and_set(key, expected.as_ref(), value)?;
            json!({"name": name, "key": key, "swapped": swapped, "value": value})
        }
        Request::BagAdopt { name, from } => {
            let ids: Vec<String> = ns
                .bag::<String>(name)?
                .adopt(parse_node(from)?)?
                .into_iter()
                .map(super::element_str)
                .collect();
            json!({"name": name, "from": from, "adopted": ids})
        }
        Request::Strong(read) => {
            let (name, kind) = strong_read(read)?;
            ns.sync_with_owner(name, kind)?;
            read.apply_in(ns)?
        }
        other => {
            return Err(crate::Error::InvalidInput {
                what: format!("not a request on an owned variable: {other:?}"),
            })
        }
    })
}

impl Request {
    /// `read` ([`Request::Strong`] says which reads), made at the owner if
    /// `strong`.
    pub fn strong_if(strong: bool, read: Request) -> Request {
        match strong {
            true => Request::Strong(Box::new(read)),
            false => read,
        }
    }
}

/// The variable a strong read reads, and its kind; an error for a request
/// that is not one of the reads that can be made strong.
fn strong_read(read: &Request) -> Result<(&str, Kind)> {
    Ok(match read {
        Request::CounterGet { name } => (name, Kind::Counter),
        Request::RegisterGet { name } => (name, Kind::Register),
        Request::SetList { name } => (name, Kind::Set),
        Request::MapGet { name, .. } => (name, Kind::Map),
        other => {
            return Err(crate::Error::InvalidInput {
                what: format!(
                    "only a counter's, register's, set's or map entry's read can be strong, not {other:?}"
                ),
            })
        }
    })
}

/// The HTTP call that runs one of the requests of this module.
pub(super) fn request(req: &Request) -> (&'static str, String, Option<Value>) {
    match req {
        Request::OwnerGet { name } => ("GET", format!("/v1/owner/{}", seg(name)), None),
        Request::Own { name, to } => (
            "POST",
            format!("/v1/owner/{}", seg(name)),
            Some(json!({ "to": to })),
        ),
        Request::Release { name } => ("POST", format!("/v1/owner/{}/release", seg(name)), None),
        Request::OwnForce { name, to } => (
            "POST",
            format!("/v1/owner/{}/force", seg(name)),
            Some(json!({ "to": to })),
        ),
        Request::RegisterCas {
            name,
            expected,
            value,
        } => (
            "POST",
            format!("/v1/register/{}/cas", seg(name)),
            Some(json!({"expected": expected, "value": value})),
        ),
        Request::CounterDecrIf { name, by, floor } => (
            "POST",
            format!("/v1/counter/{}/decr-if", seg(name)),
            Some(json!({"by": by, "floor": floor})),
        ),
        Request::CounterEscrow {
            name,
            floor: Some(floor),
        } => (
            "POST",
            format!("/v1/counter/{}/escrow", seg(name)),
            Some(json!({ "floor": floor })),
        ),
        Request::CounterEscrow { name, floor: None } => {
            ("GET", format!("/v1/counter/{}/escrow", seg(name)), None)
        }
        Request::SetClaim { name, member } => (
            "POST",
            format!("/v1/set/{}/claim", seg(name)),
            Some(json!({ "member": member })),
        ),
        Request::MapCas {
            name,
            key,
            expected,
            value,
        } => (
            "POST",
            format!("/v1/map/{}/{}/cas", seg(name), seg(key)),
            Some(json!({"expected": expected, "value": value})),
        ),
        Request::BagAdopt { name, from } => (
            "POST",
            format!("/v1/bag/{}/adopt", seg(name)),
            Some(json!({ "from": from })),
        ),
        Request::Strong(read) => {
            let (method, path, body) = read.request();
            (method, format!("{path}?strong=true"), body)
        }
        // Every other request is mapped in `Request::request`.
        _ => ("GET", "/v1/status".to_string(), None),
    }
}

/// The request one of this module's routes' JSON `body` names.
pub(super) fn from_body(
    route: BodyRoute,
    name: String,
    key: &str,
    b: &[u8],
) -> std::result::Result<Request, String> {
    Ok(match route {
        BodyRoute::Own => Request::Own {
            name,
            to: read::<body::Own>(b)?.to,
        },
        BodyRoute::OwnForce => Request::OwnForce {
            name,
            to: read::<body::OwnForce>(b)?.to,
        },
        BodyRoute::RegisterCas => {
            let c: body::Cas = read(b)?;
            Request::RegisterCas {
                name,
                expected: c.expected,
                value: c.value,
            }
        }
        BodyRoute::CounterDecrIf => {
            let d: body::DecrIf = read(b)?;
            Request::CounterDecrIf {
                name,
                by: d.by,
                floor: d.floor,
            }
        }
        BodyRoute::CounterEscrow => Request::CounterEscrow {
            name,
            floor: Some(read::<body::Escrow>(b)?.floor),
        },
        BodyRoute::SetClaim => Request::SetClaim {
            name,
            member: read::<body::Claim>(b)?.member,
        },
        BodyRoute::BagAdopt => Request::BagAdopt {
            name,
            from: read::<body::Adopt>(b)?.from,
        },
        BodyRoute::MapCas => {
            let c: body::Cas = read(b)?;
            Request::MapCas {
                name,
                key: key.to_string(),
                expected: c.expected,
                value: c.value,
            }
        }
        other => return Err(format!("{other:?} is not a route on an owned variable")),
    })
}
