//! `atoll ns` (namespaces) and `atoll token` (the HTTP API's tokens, which
//! reach namespaces).

use crate::Output;
use atoll::Store;
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub(crate) enum NsCmd {
    /// Every namespace (`default` first).
    List,
    /// Creates a namespace (on every node this one replicates with).
    Create { name: String },
    /// Drops a namespace. One that holds variables is refused unless
    /// --force: atoll does not delete variables, so a forced drop only
    /// hides them until the namespace is created again.
    Drop {
        name: String,
        #[arg(long)]
        force: bool,
    },
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
