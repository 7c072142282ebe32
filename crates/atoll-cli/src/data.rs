//! The data commands. Each names one [`Request`], which runs on a data directory
//! or, with `--node`, on a running node through its HTTP API; its answer is
//! the same JSON either way, and is printed here, once.

use crate::{BagCmd, Cmd, CounterCmd, MapCmd, Output, OwnCmd, RegisterCmd, SetCmd};
use atoll::ops::Request;
use serde_json::{json, Value};

/// The operation a data command names; `None` for the other commands.
pub(crate) fn op(cmd: &Cmd) -> Result<Option<Request>, String> {
    let name = |n: &String| n.clone();
    Ok(Some(match cmd {
        Cmd::Counter(c) => match c {
            CounterCmd::Incr { name: n, n: by } => Request::CounterAdd {
                name: name(n),
                by: *by,
            },
            CounterCmd::Decr { name: n, n: by } => Request::CounterAdd {
                name: name(n),
                by: by.checked_neg().ok_or("decrement too large")?,
            },
            CounterCmd::Get { name: n, strong } => {
                Request::strong_if(*strong, Request::CounterGet { name: name(n) })
            }
            CounterCmd::DecrIf {
                name: n,
                n: by,
                floor,
            } => Request::CounterDecrIf {
                name: name(n),
                by: *by,
                floor: *floor,
            },
            CounterCmd::Escrow { name: n, floor } => Request::CounterEscrow {
                name: name(n),
                floor: *floor,
            },
        },
        Cmd::Register(c) => match c {
            RegisterCmd::Set { name: n, value } => Request::RegisterSet {
                name: name(n),
                value: value.clone(),
            },
            RegisterCmd::Get { name: n, strong } => {
                Request::strong_if(*strong, Request::RegisterGet { name: name(n) })
            }
            RegisterCmd::Cas {
                name: n,
                value,
                expected,
            } => Request::RegisterCas {
                name: name(n),
                expected: expected.clone(),
                value: value.clone(),
            },
        },
        Cmd::Set(c) => match c {
            SetCmd::Add { name: n, members } => Request::SetChange {
                name: name(n),
                add: members.clone(),
                remove: Vec::new(),
            },
            SetCmd::Remove { name: n, members } => Request::SetChange {
                name: name(n),
                add: Vec::new(),
                remove: members.clone(),
            },
            SetCmd::List { name: n, strong } => {
                Request::strong_if(*strong, Request::SetList { name: name(n) })
            }
            SetCmd::Contains { name: n, .. } => Request::SetList { name: name(n) },
            SetCmd::Claim { name: n, member } => Request::SetClaim {
                name: name(n),
                member: member.clone(),
            },
        },
        Cmd::Own {
            cmd: None,
            name: Some(n),
        } => Request::Own {
            name: name(n),
            to: None,
        },
        Cmd::Own {
            cmd: None,
            name: None,
        } => return Err("say which variable: atoll own NAME (or own move|release|force)".into()),
        Cmd::Own { cmd: Some(c), .. } => match c {
            OwnCmd::Move { name: n, to } => Request::Own {
                name: name(n),
                to: Some(to.clone()),
            },
            OwnCmd::Release { name: n } => Request::Release { name: name(n) },
            OwnCmd::Force { name: n, to } => Request::OwnForce {
                name: name(n),
                to: to.clone(),
            },
        },
        Cmd::Owner { name: n } => Request::OwnerGet { name: name(n) },
        Cmd::Bag(c) => match c {
            BagCmd::Insert { name: n, values } => Request::BagInsert {
                name: name(n),
                values: values.clone(),
            },
            BagCmd::Take { name: n } => Request::BagTake { name: name(n) },
            BagCmd::List { name: n } => Request::BagList { name: name(n) },
            BagCmd::Adopt { name: n, from } => Request::BagAdopt {
                name: name(n),
                from: from.clone(),
            },
            BagCmd::Transfer { name: n, id, to } => Request::BagTransfer {
                name: name(n),
                id: id.clone(),
                to: to.clone(),
            },
        },
        Cmd::Map(c) => match c {
            MapCmd::Incr {
                name: n,
                key,
                n: by,
            } => Request::MapChange {
                name: name(n),
                key: key.clone(),
                incr: Some(*by),
                set: None,
                add: None,
            },
            MapCmd::Set {
                name: n,
                key,
                value,
            } => Request::MapChange {
                name: name(n),
                key: key.clone(),
                incr: None,
                set: Some(value.clone()),
                add: None,
            },
            MapCmd::Add {
                name: n,
                key,
                member,
            } => Request::MapChange {
                name: name(n),
                key: key.clone(),
                incr: None,
                set: None,
                add: Some(member.clone()),
            },
            MapCmd::Remove { name: n, key } => Request::MapRemove {
                name: name(n),
                key: key.clone(),
            },
            MapCmd::Get {
                name: n,
                key,
                strong,
            } => Request::strong_if(
                *strong,
                Request::MapGet {
                    name: name(n),
                    key: key.clone(),
                },
            ),
            MapCmd::Cas {
                name: n,
                key,
                value,
                expected,
            } => Request::MapCas {
                name: name(n),
                key: key.clone(),
                expected: expected.clone(),
                value: value.clone(),
            },
            MapCmd::Keys { name: n } => Request::MapKeys { name: name(n) },
        },
        Cmd::Ls => Request::Vars,
        Cmd::Conflicts => Request::Conflicts,
        _ => return Ok(None),
    }))
}

/// A JSON array of strings as lines.
fn lines(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().map_or(x.to_string(), String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Each object of the JSON array `v` as one line.
fn rows(v: &Value, line: impl Fn(&Value) -> String) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(line).collect())
        .unwrap_or_default()
}

/// A number as it reads: a counter past 64 bits is a string of digits.
fn number_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), String::from)
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// An ownership record as a line: `owner ID (epoch E)`, `ownerless
/// (epoch E)`, then a move under way, if any.
fn owner_line(v: &Value) -> String {
    let mut line = match v["owner"].as_str() {
        Some(o) => format!("owner {o} (epoch {})", v["epoch"]),
        None => format!("ownerless (epoch {})", v["epoch"]),
    };
    if v["forced"].as_bool() == Some(true) {
        line.push_str(", forced by an operator");
    }
    if let Some(t) = v["in_transfer"].as_object() {
        line.push_str(&format!(
            ", in transfer to {} since {} (wall ms)",
            t.get("to").and_then(Value::as_str).unwrap_or("?"),
            t.get("since_ms").map_or(String::new(), Value::to_string)
        ));
    }
    line
}

/// What a data command prints of its operation's answer `v`.
pub(crate) fn render(cmd: &Cmd, v: Value) -> Output {
    let out = |text: Vec<String>, json: Value| Output {
        text,
        json,
        ok: true,
    };
    let ok = || vec!["ok".to_string()];
    match cmd {
        Cmd::Counter(CounterCmd::DecrIf { .. }) => Output {
            ok: v["done"].as_bool().unwrap_or(false),
            text: vec![number_of(&v["value"])],
            json: v,
        },
        Cmd::Counter(CounterCmd::Escrow { .. }) => out(escrow_lines(&v), v),
        Cmd::Counter(_) => out(vec![number_of(&v["value"])], v),
        Cmd::Register(RegisterCmd::Cas { .. }) | Cmd::Map(MapCmd::Cas { .. }) => {
            let swapped = v["swapped"].as_bool().unwrap_or(false);
            Output {
                ok: swapped,
                text: vec![if swapped { "swapped" } else { "not swapped" }.into()],
                json: v,
            }
        }
        Cmd::Set(SetCmd::Claim { .. }) => {
            let claimed = v["claimed"].as_bool().unwrap_or(false);
            Output {
                ok: claimed,
                text: vec![if claimed { "claimed" } else { "already there" }.into()],
                json: v,
            }
        }
        Cmd::Own { .. } | Cmd::Owner { .. } => out(vec![owner_line(&v)], v),
        Cmd::Register(RegisterCmd::Set { .. }) => out(ok(), v),
        Cmd::Register(RegisterCmd::Get { .. }) => out(
            v["value"].as_str().map(String::from).into_iter().collect(),
            v,
        ),
        Cmd::Set(SetCmd::Add { .. }) => out(ok(), v),
        Cmd::Set(SetCmd::Remove { .. }) => {
            out(vec![format!("removed {}", lines(&v["removed"]).len())], v)
        }
        Cmd::Set(SetCmd::List { .. }) => out(lines(&v["members"]), v),
        Cmd::Set(SetCmd::Contains { name, member }) => {
            let has = lines(&v["members"]).contains(member);
            Output {
                text: vec![has.to_string()],
                json: json!({"name": name, "member": member, "present": has}),
                ok: has,
            }
        }
        Cmd::Bag(BagCmd::Insert { .. }) => out(lines(&v["ids"]), v),
        Cmd::Bag(BagCmd::Take { .. }) => {
            let taken = v["taken"].as_str().map(String::from);
            Output {
                ok: taken.is_some(),
                text: taken.into_iter().collect(),
                json: v,
            }
        }
        Cmd::Bag(BagCmd::Transfer { .. }) => out(ok(), v),
        Cmd::Bag(BagCmd::Adopt { .. }) => out(lines(&v["adopted"]), v),
        Cmd::Bag(BagCmd::List { .. }) => {
            let text = rows(&v["elements"], |e| {
                format!(
                    "{}\t{}\t{}",
                    str_of(&e["id"]),
                    str_of(&e["owner"]),
                    str_of(&e["value"])
                )
            });
            out(text, v)
        }
        Cmd::Map(MapCmd::Incr { .. }) => out(vec![number_of(&v["counter"])], v),
        Cmd::Map(MapCmd::Set { .. } | MapCmd::Add { .. }) => out(ok(), v),
        Cmd::Map(MapCmd::Remove { .. }) => {
            let was = v["removed"].as_bool().unwrap_or(false);
            out(vec![if was { "removed" } else { "absent" }.into()], v)
        }
        Cmd::Map(MapCmd::Get { .. }) => {
            let text = vec![
                format!("counter\t{}", number_of(&v["counter"])),
                format!("register\t{}", str_of(&v["register"])),
                format!("set\t{}", lines(&v["set"]).join(",")),
            ];
            out(text, v)
        }
        Cmd::Map(MapCmd::Keys { .. }) => out(lines(&v["keys"]), v),
        Cmd::Ls => {
            let text = rows(&v["variables"], |x| {
                format!("{}\t{}", str_of(&x["name"]), str_of(&x["type"]))
            });
            out(text, v)
        }
        Cmd::Conflicts => {
            let text = rows(&v["conflicts"], |x| {
                format!(
                    "{}\tkept {}\t{} moved to {}",
                    str_of(&x["name"]),
                    str_of(&x["kept"]),
                    str_of(&x["moved"]),
                    str_of(&x["copy"])
                )
            });
            out(text, v)
        }
        _ => out(Vec::new(), v),
    }
}

/// A counter's escrow, one line for the counter and one per node.
fn escrow_lines(v: &Value) -> Vec<String> {
    let e = &v["escrow"];
    if e.is_null() {
        return vec!["escrow not enabled".to_string()];
    }
    let mut lines = vec![format!(
        "floor {}  value {}  pool {}",
        e["floor"],
        number_of(&e["value"]),
        number_of(&e["pool"])
    )];
    for n in e["nodes"].as_array().into_iter().flatten() {
        let target = match &n["target"] {
            Value::Null => "-".to_string(),
            t => t.to_string(),
        };
        lines.push(format!(
            "{}  balance {}  spent {}  target {}",
            n["node"].as_str().unwrap_or("?"),
            number_of(&n["balance"]),
            n["spent"],
            target
        ));
    }
    lines
}
