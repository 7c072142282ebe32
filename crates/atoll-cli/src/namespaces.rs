//! `atoll ns` (namespaces), `atoll mirror` (which namespaces replicate, and
//! to which peers) and `atoll token` (the HTTP API's tokens, which reach
//! namespaces).

use crate::Output;
use atoll::Store;
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub(crate) enum NsCmd {
    /// Every namespace (`default` first).
    List,
    /// Creates a namespace (on every node this one replicates with). Its
    /// variables stay on the node they are written on until `atoll mirror
    /// enable` mirrors it.
    Create { name: String },
    /// Drops a namespace. One that is mirrored, or holds variables, is
    /// refused unless --force: atoll does not delete variables, so a
    /// forced drop only hides them until the namespace is created again.
    Drop {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum MirrorCmd {
    /// Mirrors a namespace: it replicates to every peer, or to those
    /// `mirror peer add` linked it with. What was written while it was
    /// local is sent too.
    Enable {
        #[arg(value_name = "NS")]
        namespace: String,
    },
    /// Keeps a namespace local: nothing more of it leaves the node it is
    /// written on, and what peers send of it is refused.
    Disable {
        #[arg(value_name = "NS")]
        namespace: String,
    },
    /// Links this node and a peer for a namespace: once it has links, a
    /// namespace replicates only over them.
    #[command(subcommand)]
    Peer(MirrorPeerCmd),
    /// Every namespace's mirroring (or NS's): mirrored or local, its links,
    /// and per peer whether it is shared and the bytes sent and refused.
    Status {
        #[arg(value_name = "NS")]
        namespace: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum MirrorPeerCmd {
    /// Adds the link between this node and PEER (a node id, as `atoll peer
    /// list` shows it) for NS.
    Add {
        #[arg(value_name = "NS")]
        namespace: String,
        peer: String,
    },
    /// Removes the link between this node and PEER for NS.
    Remove {
        #[arg(value_name = "NS")]
        namespace: String,
        peer: String,
    },
}

impl MirrorCmd {
    /// The HTTP method and path of the command on a running node.
    pub(crate) fn route(&self) -> (&'static str, String) {
        let seg = atoll::ops::path_segment;
        match self {
            MirrorCmd::Enable { namespace: ns } => ("PUT", format!("/v1/mirror/{}", seg(ns))),
            MirrorCmd::Disable { namespace: ns } => ("DELETE", format!("/v1/mirror/{}", seg(ns))),
            MirrorCmd::Peer(MirrorPeerCmd::Add {
                namespace: ns,
                peer,
            }) => ("PUT", format!("/v1/mirror/{}/peers/{}", seg(ns), seg(peer))),
            MirrorCmd::Peer(MirrorPeerCmd::Remove {
                namespace: ns,
                peer,
            }) => (
                "DELETE",
                format!("/v1/mirror/{}/peers/{}", seg(ns), seg(peer)),
            ),
            MirrorCmd::Status {
                namespace: Some(ns),
            } => ("GET", format!("/v1/mirror/{}", seg(ns))),
            MirrorCmd::Status { namespace: None } => ("GET", "/v1/mirror".to_string()),
        }
    }
}

/// `atoll mirror ...` on a data directory: the answer as the HTTP API gives it.
pub(crate) fn mirror_local(store: &Store, cmd: &MirrorCmd) -> atoll::Result<serde_json::Value> {
    Ok(match cmd {
        MirrorCmd::Enable { namespace: ns } | MirrorCmd::Disable { namespace: ns } => {
            let on = matches!(cmd, MirrorCmd::Enable { .. });
            store.set_mirrored(ns, on)?;
            json!({"namespace": ns, "mirrored": on})
        }
        MirrorCmd::Peer(
            MirrorPeerCmd::Add {
                namespace: ns,
                peer,
            }
            | MirrorPeerCmd::Remove {
                namespace: ns,
                peer,
            },
        ) => {
            let linked = matches!(cmd, MirrorCmd::Peer(MirrorPeerCmd::Add { .. }));
            let id = atoll::ops::parse_node(peer)?;
            store.set_mirror_peer(ns, id, linked)?;
            json!({"namespace": ns, "peer": id.to_string(), "linked": linked})
        }
        MirrorCmd::Status {
            namespace: Some(ns),
        } => store
            .mirror_status(Some(ns))?
            .first()
            .map(atoll::NamespaceMirror::to_json)
            .unwrap_or_default(),
        MirrorCmd::Status { namespace: None } => {
            let all = store.mirror_status(None)?;
            json!({"namespaces": all.iter().map(atoll::NamespaceMirror::to_json).collect::<Vec<_>>()})
        }
    })
}

/// The text lines of `atoll mirror ...`'s answer `v`.
pub(crate) fn mirror_text(cmd: &MirrorCmd, v: &serde_json::Value) -> Vec<String> {
    match cmd {
        MirrorCmd::Enable { namespace: ns } => vec![format!("namespace {ns} mirrored")],
        MirrorCmd::Disable { namespace: ns } => vec![format!("namespace {ns} local")],
        MirrorCmd::Peer(MirrorPeerCmd::Add { namespace: ns, .. }) => {
            vec![format!(
                "{ns}: linked with {}",
                v["peer"].as_str().unwrap_or("?")
            )]
        }
        MirrorCmd::Peer(MirrorPeerCmd::Remove { namespace: ns, .. }) => {
            vec![format!(
                "{ns}: unlinked from {}",
                v["peer"].as_str().unwrap_or("?")
            )]
        }
        MirrorCmd::Status { namespace: ns } => {
            let one = [v.clone()];
            let all = match ns {
                Some(_) => &one[..],
                None => v["namespaces"].as_array().map_or(&[][..], Vec::as_slice),
            };
            let mut text = Vec::new();
            for m in all {
                let links: Vec<String> = m["links"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| {
                        format!(
                            "{}-{}",
                            l[0].as_str().unwrap_or("?"),
                            l[1].as_str().unwrap_or("?")
                        )
                    })
                    .collect();
                let how = match (m["mirrored"].as_bool(), links.is_empty()) {
                    (Some(true), true) => "mirrored to every peer".to_string(),
                    (Some(true), false) => format!("mirrored over {}", links.join(", ")),
                    _ => "local".to_string(),
                };
                text.push(format!("{}\t{how}", m["namespace"].as_str().unwrap_or("?")));
                for p in m["peers"].as_array().into_iter().flatten() {
                    text.push(format!(
                        "  {}\t{}\tsent {} bytes ({} variables)\trefused {} bytes ({} variables)",
                        p["peer"].as_str().unwrap_or("?"),
                        if p["shared"].as_bool() == Some(true) {
                            "shared"
                        } else {
                            "not shared"
                        },
                        p["sent_bytes"],
                        p["sent_vars"],
                        p["refused_bytes"],
                        p["refused_vars"],
                    ));
                }
            }
            text
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum TokenCmd {
    /// A new random token reaching the namespaces --ns names (several
    /// separated by commas; "*": all).
    Create {
        /// It reads only.
        #[arg(long, conflicts_with_all = ["write", "admin"])]
        read: bool,
        /// It reads and writes.
        #[arg(long, conflicts_with = "admin")]
        write: bool,
        /// It reads, writes and uses the admin routes (peers, namespaces, check, status).
        #[arg(long)]
        admin: bool,
    },
}

pub(crate) fn token(cmd: TokenCmd, ns: &str) -> Result<Output, String> {
    let TokenCmd::Create { read, write, admin } = cmd;
    let namespaces: Vec<String> = ns.split(',').map(|n| n.trim().to_string()).collect();
    let access = match (read, write, admin) {
        (_, _, true) => atoll::Access::Admin,
        (_, true, _) => atoll::Access::Write,
        (true, _, _) => atoll::Access::Read,
        _ => return Err("say --read, --write or --admin".into()),
    };
    for ns in namespaces.iter().filter(|n| *n != "*") {
        atoll::validate_namespace(ns).map_err(|e| e.to_string())?;
    }
    let (secret, t) = atoll::HttpToken::generate(namespaces, access);
    let list: Vec<String> = t.namespaces.iter().map(|n| format!("{n:?}")).collect();
    let entry = format!(
        "[[http_tokens]]\nsha256 = \"{}\"\nnamespaces = [{}]\naccess = \"{}\"",
        t.sha256_hex(),
        list.join(", "),
        access.name()
    );
    Ok(Output {
        text: vec![
            format!("token\t{secret}"),
            "(shown once: the node keeps only its hash; add this to its config file)".into(),
            entry.clone(),
        ],
        json: json!({"token": secret, "sha256": t.sha256_hex(), "namespaces": t.namespaces, "access": access.name(), "config": entry}),
        ok: true,
    })
}

/// `atoll ns ...` on a data directory.
pub(crate) fn namespaces(store: &Store, cmd: NsCmd) -> atoll::Result<Output> {
    Ok(match cmd {
        NsCmd::List => {
            let all = store.namespaces()?;
            Output {
                text: all.clone(),
                json: json!({ "namespaces": all }),
                ok: true,
            }
        }
        NsCmd::Create { name } => {
            store.create_namespace(&name)?;
            Output::new(
                format!("namespace {name} created"),
                json!({"namespace": name, "created": true}),
            )
        }
        NsCmd::Drop { name, force } => {
            let existed = store.drop_namespace(&name, force)?;
            let text = match existed {
                true => format!("namespace {name} dropped"),
                false => format!("no namespace {name}"),
            };
            Output::new(text, json!({"namespace": name, "dropped": existed}))
        }
    })
}
