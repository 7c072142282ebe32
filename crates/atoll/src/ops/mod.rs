//! The data operations, named once for every front end: the CLI on a data
//! directory, the node's HTTP API, and the CLI against a running node
//! (`--node URL`). Each runs on a [`Store`] and answers with the JSON the HTTP
//! API returns, and [`Request::request`] names the HTTP call that runs it on a
//! node; so the three front ends agree by construction.
//!
//! Values are strings, as on the command line.

use crate::{Namespace, Result, Store};
use serde_json::{json, Value};

mod access;
mod owned;

/// One data request: a read, or an operation (which the store turns into an
/// [`atoll_core::Op`] through its handles).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Adds `by` (negative to subtract) to a counter; answers its value.
    CounterAdd {
        /// The counter.
        name: String,
        /// How much.
        by: i64,
    },
    /// A counter's value.
    CounterGet {
        /// The counter.
        name: String,
    },
    /// Writes a register.
    RegisterSet {
        /// The register.
        name: String,
        /// The value.
        value: String,
    },
    /// A register's value (`null` if never written).
    RegisterGet {
        /// The register.
        name: String,
    },
    /// Adds, then removes, members of a set; answers which were removed.
    SetChange {
        /// The set.
        name: String,
        /// Members to add.
        add: Vec<String>,
        /// Members to remove.
        remove: Vec<String>,
    },
    /// A set's members.
    SetList {
        /// The set.
        name: String,
    },
    /// Inserts values into a bag; answers their element ids.
    BagInsert {
        /// The bag.
        name: String,
        /// The values.
        values: Vec<String>,
    },
    /// Takes one element this node owns out of a bag (`null` if none).
    BagTake {
        /// The bag.
        name: String,
    },
    /// Hands element `id` (`REPLICA.COUNTER`, as listed), which this node
    /// owns, to node `to` (16 hex digits).
    BagTransfer {
        /// The bag.
        name: String,
        /// The element.
        id: String,
        /// The new owner.
        to: String,
    },
    /// A bag's elements: id, owner, value.
    BagList {
        /// The bag.
        name: String,
    },
    /// Changes a map entry's counter, register and set fields; answers the entry.
    MapChange {
        /// The map.
        name: String,
        /// The entry.
        key: String,
        /// Added to its counter.
        incr: Option<i64>,
        /// Written to its register.
        set: Option<String>,
        /// Added to its set.
        add: Option<String>,
    },
    /// A map entry: its counter, register and set.
    MapGet {
        /// The map.
        name: String,
        /// The entry.
        key: String,
    },
    /// Removes a map entry; answers whether it was there.
    MapRemove {
        /// The map.
        name: String,
        /// The entry.
        key: String,
    },
    /// A map's keys.
    MapKeys {
        /// The map.
        name: String,
    },
    /// Who owns a variable: epoch, owner, an offer under way.
    OwnerGet {
        /// The variable.
        name: String,
    },
    /// Makes node `to` (16 hex digits; this node if `None`) the owner of a
    /// variable; answers its ownership record.
    Own {
        /// The variable.
        name: String,
        /// The new owner.
        to: Option<String>,
    },
    /// Makes a variable ownerless again; answers its ownership record.
    Release {
        /// The variable.
        name: String,
    },
    /// An operator's override for an owner gone for good: makes `to` the
    /// owner without asking anyone (breaks exclusivity if the old owner is
    /// alive).
    OwnForce {
        /// The variable.
        name: String,
        /// The new owner.
        to: String,
    },
    /// Strong: writes a register only if it holds `expected` (`None`: never
    /// written); answers whether it swapped.
    RegisterCas {
        /// The register.
        name: String,
        /// The value it must hold.
        expected: Option<String>,
        /// The value written.
        value: String,
    },
    /// Strong: subtracts `by` from a counter only if that leaves it at
    /// least `floor`; answers whether it did and the value.
    CounterDecrIf {
        /// The counter.
        name: String,
        /// How much.
        by: i64,
        /// The least value.
        floor: i64,
    },
    /// The escrow of a counter's decrement rights: enabled first with
    /// `floor` if given (strong, at the owner); answers the floor, the
    /// value, the pool and each node's balance and target, as seen here.
    CounterEscrow {
        /// The counter.
        name: String,
        /// Enables escrow with this floor.
        floor: Option<i64>,
    },
    /// Strong: adds a member to a set only if absent; answers whether this
    /// call claimed it.
    SetClaim {
        /// The set.
        name: String,
        /// The member.
        member: String,
    },
    /// Strong: writes the register of map entry `key` only if it holds
    /// `expected` (`None`: absent or never written); answers whether it
    /// swapped.
    MapCas {
        /// The map.
        name: String,
        /// The entry.
        key: String,
        /// The value its register must hold.
        expected: Option<String>,
        /// The value written.
        value: String,
    },
    /// A read (`CounterGet`, `RegisterGet`, `SetList` or `MapGet`) made
    /// once this node's copy holds every write the variable's owner had
    /// made, if it is owned (a round trip there); answers as the read does.
    Strong(Box<Request>),
    /// An operator's adoption of the share of node `from` (16 hex digits),
    /// gone for good; answers the ids adopted.
    BagAdopt {
        /// The bag.
        name: String,
        /// The node whose elements are adopted.
        from: String,
    },
    /// Every variable and its type (ownership records aside).
    Vars,
    /// Every type conflict: the name, the type that kept it, the type moved
    /// out and the conflict copy holding its data.
    Conflicts,
}

/// The data routes that take a JSON body, for [`Request::from_body`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyRoute {
    /// `POST /v1/counter/{name}`: `{"by": n}`.
    CounterAdd,
    /// `PUT /v1/register/{name}`: `{"value": "..."}`.
    RegisterSet,
    /// `POST /v1/set/{name}`: `{"add": [...], "remove": [...]}`.
    SetChange,
    /// `POST /v1/bag/{name}`: `{"insert": [...]}`.
    BagInsert,
    /// `POST /v1/bag/{name}/transfer`: `{"id": "...", "to": "..."}`.
    BagTransfer,
    /// `POST /v1/map/{name}/{key}`: `{"incr": n, "set": "...", "add": "..."}`.
    MapChange,
    /// `POST /v1/owner/{name}`: `{"to": "..."}` (optional).
    Own,
    /// `POST /v1/owner/{name}/force`: `{"to": "..."}`.
    OwnForce,
    /// `POST /v1/register/{name}/cas`: `{"expected": "..." or null, "value": "..."}`.
    RegisterCas,
    /// `POST /v1/counter/{name}/decr-if`: `{"by": n, "floor": f}`.
    CounterDecrIf,
    /// `POST /v1/counter/{name}/escrow`: `{"floor": f}`.
    CounterEscrow,
    /// `POST /v1/set/{name}/claim`: `{"member": "..."}`.
    SetClaim,
    /// `POST /v1/map/{name}/{key}/cas`: `{"expected": "..." or null, "value": "..."}`.
    MapCas,
    /// `POST /v1/bag/{name}/adopt`: `{"from": "..."}`.
    BagAdopt,
}

/// The JSON bodies of the data routes, as the HTTP API reads them.
pub(crate) mod body;

/// Percent-encodes one path segment (names may hold `/`, `:`, `@`, spaces).
pub fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A counter's value in JSON: a number while it fits 64 bits (signed, or
/// unsigned when positive), else its exact decimal digits as a string. A
/// counter's value is an `i128` (a sum of per-replica `u64` totals), which a
/// JSON number of 64 bits cannot always hold; every value stays readable.
pub fn counter_json(v: i128) -> Value {
    if let Ok(n) = i64::try_from(v) {
        Value::from(n)
    } else if let Ok(n) = u64::try_from(v) {
        Value::from(n)
    } else {
        Value::String(v.to_string())
    }
}

fn map_entry(ns: &Namespace, name: &str, key: &str) -> Result<Value> {
    let m = ns.map(name)?;
    let register: Option<String> = m.get(key)?;
    let set: Vec<String> = m.members(key)?;
    let counter = counter_json(m.counter(key)?);
    Ok(json!({"name": name, "key": key, "counter": counter, "register": register, "set": set}))
}

/// A bag element id as listed: `REPLICA.COUNTER` (16 hex digits, a dot,
/// a number), as [`parse_element`] reads it.
fn element_str(id: atoll_crdt::Dot) -> String {
    format!("{}.{}", id.replica, id.counter)
}

/// A bag element id as listed: `REPLICA.COUNTER` (16 hex digits, a dot, a number).
fn parse_element(id: &str) -> Result<atoll_crdt::Dot> {
    let bad = || crate::Error::InvalidInput {
        what: format!(
            "{id:?} is not a bag element id like 00000000075bcd15.3 (as `bag list` prints them)"
        ),
    };
    let (replica, counter) = id.split_once('.').ok_or_else(bad)?;
    let replica = u64::from_str_radix(replica, 16).map_err(|_| bad())?;
    let counter = counter.parse::<u64>().map_err(|_| bad())?;
    Ok(atoll_crdt::Dot {
        replica: crate::ReplicaId(replica),
        counter,
    })
}

/// A route's JSON body, read as the HTTP API reads it; the error is the
/// reader's message.
fn read<T: serde::de::DeserializeOwned>(b: &[u8]) -> std::result::Result<T, String> {
    serde_json::from_slice(b).map_err(|e| e.to_string())
}

/// A node id: 16 hex digits.
pub fn parse_node(id: &str) -> Result<crate::ReplicaId> {
    u64::from_str_radix(id, 16)
        .map(crate::ReplicaId)
        .map_err(|_| crate::Error::InvalidInput {
            what: format!("{id:?} is not a node id (16 hex digits, as `peer list` prints them)"),
        })
}

impl Request {
    /// The operation a data route's JSON `body` names, for variable `name`
    /// (and map entry `key`), read as the HTTP API reads it; the error is
    /// the reader's message. (The fuzz target `http_bodies` drives this and
    /// [`Request::apply`] with arbitrary bodies.)
    pub fn from_body(
        route: BodyRoute,
        name: &str,
        key: &str,
        body: &[u8],
    ) -> std::result::Result<Request, String> {
        let name = name.to_string();
        Ok(match route {
            BodyRoute::CounterAdd => Request::CounterAdd {
                name,
                by: read::<body::Incr>(body)?.by,
            },
            BodyRoute::RegisterSet => Request::RegisterSet {
                name,
                value: read::<body::SetValue>(body)?.value,
            },
            BodyRoute::SetChange => {
                let b: body::SetChange = read(body)?;
                Request::SetChange {
                    name,
                    add: b.add,
                    remove: b.remove,
                }
            }
            BodyRoute::BagInsert => Request::BagInsert {
                name,
                values: read::<body::BagInsert>(body)?.insert,
            },
            BodyRoute::BagTransfer => {
                let b: body::BagTransfer = read(body)?;
                Request::BagTransfer {
                    name,
                    id: b.id,
                    to: b.to,
                }
            }
            BodyRoute::MapChange => {
                let b: body::MapChange = read(body)?;
                Request::MapChange {
                    name,
                    key: key.to_string(),
                    incr: b.incr,
                    set: b.set,
                    add: b.add,
                }
            }
            other => owned::from_body(other, name, key, body)?,
        })
    }

    /// Runs the operation on `store`'s default namespace; the answer is
    /// the HTTP API's JSON body.
    pub fn apply(&self, store: &Store) -> Result<Value> {
        self.apply_in(&store.default_namespace())
    }

    /// Runs the operation in namespace `ns`; the answer is the HTTP API's
    /// JSON body (names in it are names within the namespace).
    pub fn apply_in(&self, ns: &Namespace) -> Result<Value> {
        Ok(match self {
            Request::CounterAdd { name, by } => {
                json!({"name": name, "value": counter_json(ns.counter_add(name, *by)?)})
            }
            Request::CounterGet { name } => {
                json!({"name": name, "value": counter_json(ns.counter(name)?.value()?)})
            }
            Request::RegisterSet { name, value } => {
                ns.register::<String>(name)?.set(value)?;
                json!({"name": name, "value": value})
            }
            Request::RegisterGet { name } => {
                json!({"name": name, "value": ns.register::<String>(name)?.get()?})
            }
            Request::SetChange { name, add, remove } => {
                let present = ns.set::<String>(name)?.change(add, remove)?;
                let removed: Vec<&String> = remove
                    .iter()
                    .zip(present)
                    .filter_map(|(m, had)| had.then_some(m))
                    .collect();
                json!({"name": name, "added": add, "removed": removed})
            }
            Request::SetList { name } => {
                json!({"name": name, "members": ns.set::<String>(name)?.members()?})
            }
            Request::BagInsert { name, values } => {
                let ids: Vec<String> = ns
                    .bag::<String>(name)?
                    .insert_all(values)?
                    .into_iter()
                    .map(element_str)
                    .collect();
                json!({"name": name, "ids": ids})
            }
            Request::BagTake { name } => {
                json!({"name": name, "taken": ns.bag::<String>(name)?.take()?})
            }
            Request::BagTransfer { name, id, to } => {
                let element = parse_element(id)?;
                let owner = parse_node(to)?;
                ns.bag::<String>(name)?.transfer(element, owner)?;
                json!({"name": name, "id": id, "to": owner.to_string()})
            }
            Request::BagList { name } => {
                let els: Vec<Value> = ns
                    .bag::<String>(name)?
                    .elements()?
                    .into_iter()
                    .map(|e| json!({"id": element_str(e.id), "owner": e.owner.to_string(), "value": e.value}))
                    .collect();
                json!({"name": name, "elements": els})
            }
            Request::MapChange {
                name,
                key,
                incr,
                set,
                add,
            } => {
                ns.map(name)?
                    .change(key, *incr, set.as_ref(), add.as_ref())?;
                map_entry(ns, name, key)?
            }
            Request::MapGet { name, key } => map_entry(ns, name, key)?,
            Request::MapRemove { name, key } => {
                json!({"name": name, "key": key, "removed": ns.map(name)?.remove(key)?})
            }
            Request::MapKeys { name } => json!({"name": name, "keys": ns.map(name)?.keys()?}),
            Request::OwnerGet { .. }
            | Request::Own { .. }
            | Request::Release { .. }
            | Request::OwnForce { .. }
            | Request::RegisterCas { .. }
            | Request::CounterDecrIf { .. }
            | Request::CounterEscrow { .. }
            | Request::SetClaim { .. }
            | Request::MapCas { .. }
            | Request::BagAdopt { .. }
            | Request::Strong(_) => owned::apply(self, ns)?,
            Request::Vars => {
                // Ownership and escrow records are shown by `owner` and
                // `counter escrow`, not as variables (nor are they the
                // namespace's).
                let rows: Vec<Value> = ns
                    .variables()?
                    .into_iter()
                    .map(|(n, k)| json!({"name": n, "type": k.name()}))
                    .collect();
                json!({ "variables": rows })
            }
            Request::Conflicts => {
                let rows: Vec<Value> = ns
                    .conflicts()?
                    .into_iter()
                    .map(|(name, kept, moved, copy)| {
                        json!({"name": name, "kept": kept.name(), "moved": moved.name(), "copy": copy})
                    })
                    .collect();
                json!({ "conflicts": rows })
            }
        })
    }

    /// [`Request::request`] in namespace `ns`: the same route under
    /// `/v1/ns/{ns}` (the default namespace's routes have no prefix).
    pub fn request_in(&self, ns: &str) -> (&'static str, String, Option<Value>) {
        let (method, path, body) = self.request();
        if ns == crate::DEFAULT_NS {
            return (method, path, body);
        }
        let tail = path.strip_prefix("/v1").unwrap_or(&path);
        (method, format!("/v1/ns/{}{tail}", path_segment(ns)), body)
    }

    /// The HTTP call that runs this operation on a node: method, path
    /// (segments percent-encoded) and JSON body.
    pub fn request(&self) -> (&'static str, String, Option<Value>) {
        let seg = path_segment;
        match self {
            Request::CounterAdd { name, by } => (
                "POST",
                format!("/v1/counter/{}", seg(name)),
                Some(json!({"by": by})),
            ),
            Request::CounterGet { name } => ("GET", format!("/v1/counter/{}", seg(name)), None),
            Request::RegisterSet { name, value } => (
                "PUT",
                format!("/v1/register/{}", seg(name)),
                Some(json!({"value": value})),
            ),
            Request::RegisterGet { name } => ("GET", format!("/v1/register/{}", seg(name)), None),
            Request::SetChange { name, add, remove } => (
                "POST",
                format!("/v1/set/{}", seg(name)),
                Some(json!({"add": add, "remove": remove})),
            ),
            Request::SetList { name } => ("GET", format!("/v1/set/{}", seg(name)), None),
            Request::BagInsert { name, values } => (
                "POST",
                format!("/v1/bag/{}", seg(name)),
                Some(json!({"insert": values})),
            ),
            Request::BagTake { name } => ("POST", format!("/v1/bag/{}/take", seg(name)), None),
            Request::BagList { name } => ("GET", format!("/v1/bag/{}", seg(name)), None),
            Request::BagTransfer { name, id, to } => (
                "POST",
                format!("/v1/bag/{}/transfer", seg(name)),
                Some(json!({"id": id, "to": to})),
            ),
            Request::MapChange {
                name,
                key,
                incr,
                set,
                add,
            } => (
                "POST",
                format!("/v1/map/{}/{}", seg(name), seg(key)),
                Some(json!({"incr": incr, "set": set, "add": add})),
            ),
            Request::MapGet { name, key } => {
                ("GET", format!("/v1/map/{}/{}", seg(name), seg(key)), None)
            }
            Request::MapRemove { name, key } => (
                "DELETE",
                format!("/v1/map/{}/{}", seg(name), seg(key)),
                None,
            ),
            Request::MapKeys { name } => ("GET", format!("/v1/map/{}", seg(name)), None),
            Request::OwnerGet { .. }
            | Request::Own { .. }
            | Request::Release { .. }
            | Request::OwnForce { .. }
            | Request::RegisterCas { .. }
            | Request::CounterDecrIf { .. }
            | Request::CounterEscrow { .. }
            | Request::SetClaim { .. }
            | Request::MapCas { .. }
            | Request::BagAdopt { .. }
            | Request::Strong(_) => owned::request(self),
            Request::Vars => ("GET", "/v1/vars".to_string(), None),
            Request::Conflicts => ("GET", "/v1/conflicts".to_string(), None),
        }
    }
}

#[cfg(test)]
mod tests;
