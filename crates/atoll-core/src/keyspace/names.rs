//! Variable names: what a name may be, and why one is refused.

use crate::{conflict_of, is_reserved, Error, Result, CONFLICT_PREFIX};

/// The longest variable name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// The prefix of ownership records: `_atoll.owner/{name}` records who owns
/// the variable `name` (an [`atoll_crdt::Ownership`], of kind
/// [`atoll_crdt::variable::Kind::Owner`]). Only the replica writes them.
pub const OWNER_PREFIX: &str = "_atoll.owner/";

/// The name of the record of who owns `name`.
pub fn owner_record(name: &str) -> String {
    format!("{OWNER_PREFIX}{name}")
}

/// The variable an ownership record's name stands for; `None` for any
/// other name.
pub fn owned_by_record(name: &str) -> Option<&str> {
    name.strip_prefix(OWNER_PREFIX)
}

/// The prefix of escrow records: `_atoll.escrow/{name}` holds the escrow
/// of the counter `name`'s decrement rights (an [`atoll_crdt::Escrow`], of
/// kind [`atoll_crdt::variable::Kind::Escrow`]). Only the replica writes
/// them.
pub const ESCROW_PREFIX: &str = "_atoll.escrow/";

/// The name of the escrow record of the counter `name`.
pub fn escrow_record(name: &str) -> String {
    format!("{ESCROW_PREFIX}{name}")
}

/// The counter an escrow record's name stands for; `None` for any other
/// name.
pub fn escrowed_by_record(name: &str) -> Option<&str> {
    name.strip_prefix(ESCROW_PREFIX)
}

/// Where the variables of a namespace other than [`DEFAULT_NS`] live:
/// `_atoll.ns/{ns}/{name}`. The default namespace's variables keep their
/// bare names (so data written before namespaces is the default
/// namespace's). Replication, ownership and checks see one flat name
/// space; only the data API maps a namespace and a name to the name here.
pub const NS_PREFIX: &str = "_atoll.ns/";

/// The namespace of every variable not in another.
pub const DEFAULT_NS: &str = "default";

/// The longest namespace name, in bytes.
pub const MAX_NS_LEN: usize = 64;

/// Checks a namespace's name: 1 to 64 bytes of lowercase ASCII letters,
/// digits, `_` and `-`, starting with a letter or a digit.
pub fn validate_namespace(ns: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: ns.chars().take(80).collect(),
            reason,
        })
    };
    if ns.is_empty() || ns.len() > MAX_NS_LEN {
        return bad("a namespace's name is 1 to 64 bytes");
    }
    if !ns
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
    {
        return bad("a namespace's name uses only lowercase ASCII letters, digits, _ and -");
    }
    if !ns.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("a namespace's name starts with a letter or a digit");
    }
    Ok(())
}

/// The name of the variable `name` of namespace `ns` (both valid): `name`
/// itself in the default namespace.
pub fn namespaced(ns: &str, name: &str) -> String {
    if ns == DEFAULT_NS {
        name.to_string()
    } else {
        format!("{NS_PREFIX}{ns}/{name}")
    }
}

/// The namespace and the name within it of a namespaced variable's name;
/// `None` for a name of the default namespace (or a system name).
pub fn namespace_of(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix(NS_PREFIX)?.split_once('/')
}

/// The replicated set of peer addresses every node keeps connections to.
pub const PEERS_VAR: &str = "_atoll.peers";

/// The replicated set of node ids (16 hex digits) removed from the
/// cluster: every node refuses them in the handshake.
pub const REMOVED_VAR: &str = "_atoll.removed";

/// The replicated set of namespaces created (besides `default`).
pub const NAMESPACES_VAR: &str = "_atoll.namespaces";

/// The system's own variables of a fixed type, which no peer may send as
/// another (it would make them unwritable here): the sets of peers,
/// removed nodes and namespaces, and the maps of sites and mirroring.
pub(super) fn system_kind(name: &str) -> Option<atoll_crdt::variable::Kind> {
    use atoll_crdt::variable::Kind;
    match name {
        PEERS_VAR | REMOVED_VAR | NAMESPACES_VAR => Some(Kind::Set),
        MIRROR_VAR | crate::SITES_VAR => Some(Kind::Map),
        _ => None,
    }
}

/// The replicated map of which namespaces replicate, and between which
/// nodes (read by [`crate::Mirroring::read`]). Capitalised so that it sorts
/// before every other system variable, and before the namespaces' data: a
/// state transfer, which goes in name order, brings a new node the
/// mirroring before the data it governs.
pub const MIRROR_VAR: &str = "_atoll.Mirror";

/// The namespace whose data the variable `name` holds: a namespace's
/// variable's, and that of its ownership or escrow record and of its
/// conflict copies, is the namespace's; a bare name's is the default
/// namespace's. `None` for the system's own variables (peers, namespaces,
/// mirroring, sites), which every node holds whatever it mirrors.
pub fn data_namespace(name: &str) -> Option<&str> {
    if let Some(of) = record_of(name) {
        return data_namespace(of);
    }
    if let Some((of, _)) = conflict_of(name) {
        return data_namespace(of);
    }
    if let Some((ns, _)) = namespace_of(name) {
        return Some(ns);
    }
    if is_reserved(name) || name.starts_with(NS_PREFIX) {
        return None;
    }
    Some(DEFAULT_NS)
}

/// The variable a system record's name (ownership or escrow) stands for.
fn record_of(name: &str) -> Option<&str> {
    owned_by_record(name).or_else(|| escrowed_by_record(name))
}

/// Checks a variable name: 1 to 255 bytes of ASCII letters, digits and `_ - . : / @`,
/// starting with a letter, digit or `_`. A conflict copy's name
/// (`_atoll.conflict/{kind}/{name}`) may be longer: its `name` is checked,
/// and must not itself be a system name; so may an ownership or escrow
/// record's (`_atoll.owner/{name}`, `_atoll.escrow/{name}`). A namespace's
/// variable (`_atoll.ns/{ns}/{name}`) is at most 255 bytes in all, and its
/// `ns` and `name` are checked.
pub fn validate_name(name: &str) -> Result<()> {
    if name.starts_with(NS_PREFIX) {
        let bad = |reason| {
            Err(Error::InvalidName {
                name: name.chars().take(80).collect(),
                reason,
            })
        };
        if name.len() > MAX_NAME_LEN {
            return bad("a namespace's variable is named _atoll.ns/{namespace}/{name}, at most 255 bytes in all");
        }
        return match namespace_of(name) {
            Some((ns, _)) if ns == DEFAULT_NS => {
                bad("the default namespace's variables have no _atoll.ns/ prefix")
            }
            Some((ns, of)) if !is_reserved(of) && namespace_of(of).is_none() => {
                validate_namespace(ns)?;
                validate_name(of)
            }
            _ => bad("a namespace's variable is named _atoll.ns/{namespace}/{name}, of a name outside _atoll."),
        };
    }
    if let Some(of) = record_of(name) {
        if is_reserved(of) {
            return Err(Error::InvalidName {
                name: name.chars().take(80).collect(),
                reason:
                    "a system record is named _atoll.owner/{name} or _atoll.escrow/{name}, of a name outside _atoll.",
            });
        }
        return validate_name(of);
    }
    if name.starts_with(CONFLICT_PREFIX) {
        return match conflict_of(name) {
            Some((of, _)) if !is_reserved(of) => validate_name(of),
            _ => Err(Error::InvalidName {
                name: name.chars().take(80).collect(),
                reason: "a conflict copy is named _atoll.conflict/{type}/{name}, of a name outside _atoll.",
            }),
        };
    }
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("a name must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("a name must be at most 255 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.:/@".contains(&b))
    {
        return bad("use only ASCII letters, digits and _ - . : / @");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() && name.as_bytes()[0] != b'_' {
        return bad("a name must start with a letter, a digit or _");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_with_a_reason() {
        for ok in ["hits", "a", "_x", "site1/cart:42", "u@host.example-1"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "-x", "/abs", "sp ace", "ünï", &"x".repeat(256)] {
            let e = validate_name(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidName { .. }), "{bad:?}");
        }
    }

    #[test]
    fn a_variable_s_records_and_copies_hold_its_namespace_s_data() {
        let full = namespaced("billing", "n");
        assert_eq!(data_namespace(&full), Some("billing"));
        assert_eq!(data_namespace(&crate::owner_record(&full)), Some("billing"));
        assert_eq!(
            data_namespace(&crate::escrow_record(&full)),
            Some("billing")
        );
        let copy = crate::conflict_name(&full, atoll_crdt::variable::Kind::Set);
        assert_eq!(data_namespace(&copy), Some("billing"));
        assert_eq!(data_namespace("hits"), Some(DEFAULT_NS));
        assert_eq!(
            data_namespace(&crate::owner_record("hits")),
            Some(DEFAULT_NS)
        );
        assert_eq!(data_namespace("_atoll.peers"), None);
        assert_eq!(data_namespace("_atoll.ns/"), None, "no namespace's");
    }

    #[test]
    fn a_namespace_maps_names_apart_and_is_checked() {
        assert_eq!(namespaced(DEFAULT_NS, "hits"), "hits");
        let full = namespaced("billing", "invoices/2026");
        assert_eq!(full, "_atoll.ns/billing/invoices/2026");
        assert_eq!(namespace_of(&full), Some(("billing", "invoices/2026")));
        assert_eq!(namespace_of("hits"), None);
        validate_name(&full).unwrap();
        assert!(!is_reserved(&full), "a namespace's variable is a user's");
        // Its ownership record and conflict copy are valid system names.
        validate_name(&crate::owner_record(&full)).unwrap();
        validate_name(&crate::conflict_name(
            &full,
            atoll_crdt::variable::Kind::Set,
        ))
        .unwrap();
        for ns in ["billing", "a", "site-1_x", &"n".repeat(64)] {
            validate_namespace(ns).unwrap();
        }
        for ns in ["", "Billing", "-x", "a/b", "a.b", &"n".repeat(65)] {
            assert!(validate_namespace(ns).is_err(), "{ns:?}");
        }
        for bad in [
            "_atoll.ns/billing",
            "_atoll.ns/default/x",
            "_atoll.ns/Billing/x",
            "_atoll.ns/billing/_atoll.peers",
            "_atoll.ns/billing/_atoll.ns/other/x",
            "_atoll.ns/billing/-x",
            &format!("_atoll.ns/billing/{}", "x".repeat(240)),
        ] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }
}
