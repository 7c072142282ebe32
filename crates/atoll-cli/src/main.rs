//! `atoll`: the command-line tool for an atoll data directory.

use atoll::{Kind, Store};
use clap::{Parser, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// atoll: a partition-tolerant replicated store of CRDT variables.
#[derive(Parser)]
#[command(name = "atoll", version, about)]
struct Cli {
    /// The data directory (created if missing).
    #[arg(long, short = 'd', env = "ATOLL_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Print machine-readable JSON instead of plain text.
    #[arg(long, global = true)]
    json: bool,
    /// With --data-dir: this node is the last of its cluster (the others are
    /// gone for good), so bag takes and transfers need not wait for peers
    /// to bring it up to date. Only for a store no other copy of which will
    /// ever take from its bags.
    #[arg(long, global = true)]
    last_of_cluster: bool,
    /// Talk to a running node's HTTP API (e.g. http://127.0.0.1:7780) instead
    /// of opening a data directory.
    #[arg(long, env = "ATOLL_NODE", global = true, value_name = "URL")]
    node: Option<String>,
    /// The bearer token for `--node`.
    #[arg(long, env = "ATOLL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// The namespace of the data commands (`atoll ns create NAME` first);
    /// for `token create`, the namespaces the token reaches (comma
    /// separated, "*": all).
    #[arg(
        long = "ns",
        env = "ATOLL_NS",
        global = true,
        default_value = "default"
    )]
    ns: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Counters: increment, decrement, read.
    #[command(subcommand)]
    Counter(CounterCmd),
    /// Last-writer-wins registers of strings.
    #[command(subcommand)]
    Register(RegisterCmd),
    /// Add-wins sets of strings.
    #[command(subcommand)]
    Set(SetCmd),
    /// Owned bags of strings: insert, take (exactly once), list.
    #[command(subcommand)]
    Bag(BagCmd),
    /// Maps of string keys to a counter, a register and a set each.
    #[command(subcommand)]
    Map(MapCmd),
    /// Owned variables: `own NAME` makes this node (or the --node
    /// addressed) the owner, so that strong operations on NAME run there;
    /// `own move`, `own release` and `own force` change the owner.
    #[command(args_conflicts_with_subcommands = true)]
    Own {
        #[command(subcommand)]
        cmd: Option<OwnCmd>,
        /// The variable to own here.
        name: Option<String>,
    },
    /// Who owns a variable: its owner, the ownership epoch, a move under way.
    Owner { name: String },
    /// List variables and their types (of the namespace --ns names).
    Ls,
    /// Namespaces: list, create, drop.
    #[command(subcommand)]
    Ns(NsCmd),
    /// Mirroring per namespace: enable, disable, peer add|remove, status.
    /// It is replicated: a change on any node holds on every node.
    #[command(subcommand)]
    Mirror(MirrorCmd),
    /// Follow a running node's changes (needs --node): one line per change
    /// to a variable of the namespace --ns names, until interrupted.
    Watch {
        /// Only variables whose name begins with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Resume after this event id (as a `--json` line's `id` gives it).
        #[arg(long)]
        after: Option<String>,
    },
    /// HTTP API tokens: `token create` makes one and prints it once, with
    /// the `[[http_tokens]]` entry (its hash) for the node's config file.
    #[command(subcommand)]
    Token(TokenCmd),
    /// List type conflicts: names created with two types on two sides of a
    /// split, the type that kept each name and the copy holding the other's data.
    Conflicts,
    /// Show this store's replica id, variable count and log position.
    Info,
    /// A running node's peers (needs --node).
    #[command(subcommand)]
    Peer(PeerCmd),
    /// A running node's summary (needs --node).
    Status,
    /// A consistency check (needs --node): whether every reachable peer
    /// holds the same data as the node, per peer `ok`, `in_flight`,
    /// `divergent` or `unreachable`, and the variables that differ. A
    /// divergent variable is repaired. Exits 1 if any peer is divergent.
    Check,
    /// Make certificates: a new cluster (CA and first node), or another node's.
    Init {
        /// Make a new cluster in DIR: its CA, cluster id and the first node's certificate.
        #[arg(long, value_name = "DIR", conflicts_with = "join")]
        new_cluster: Option<PathBuf>,
        /// Issue a node certificate in DIR from the CA in CA_DIR.
        #[arg(long, num_args = 2, value_names = ["CA_DIR", "DIR"])]
        join: Option<Vec<PathBuf>>,
    },
    /// Run a replicating node as a TOML file configures it, until Ctrl-C or SIGTERM.
    Run {
        /// The node's configuration file.
        #[arg(long, short = 'c')]
        config: PathBuf,
        /// How the log on stderr is written: "text" (default) or "json"
        /// (one object a line, for log shippers). RUST_LOG filters it
        /// (default: info).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
}

fn init(new_cluster: Option<PathBuf>, join: Option<Vec<PathBuf>>) -> Result<Output, String> {
    use atoll::certs;
    match (new_cluster, join) {
        (Some(dir), None) => {
            let id = certs::new_cluster(&dir).map_err(|e| e.to_string())?;
            Ok(Output::new(
                format!("new cluster {id:032x} in {}: CA (keep ca.key secret) and this node's certificate", dir.display()),
                json!({"cluster": format!("{id:032x}"), "dir": dir.display().to_string()}),
            ))
        }
        (None, Some(dirs)) => {
            let id = certs::join(&dirs[0], &dirs[1]).map_err(|e| e.to_string())?;
            Ok(Output::new(
                format!(
                    "node certificate for cluster {id:032x} in {}",
                    dirs[1].display()
                ),
                json!({"cluster": format!("{id:032x}"), "dir": dirs[1].display().to_string()}),
            ))
        }
        _ => Err("say --new-cluster DIR, or --join CA_DIR DIR".into()),
    }
}

fn run_node(path: &Path, json: bool) -> Result<(), String> {
    let config = node_config(path)?;
    let data = config.store.path.clone().unwrap_or_default();
    let node = atoll::Node::start(config).map_err(|e| e.to_string())?;
    let http = node.http_addr().map(|a| format!("http://{a}"));
    // A node must not die because whoever read its stdout went away: ignore write errors.
    use std::io::Write;
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    // The signal handlers exist before the node says it is up, so that a
    // SIGTERM right after that line still stops it gracefully.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (mut term, mut int) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _in_runtime = rt.enter();
        (
            signal(SignalKind::terminate()).map_err(|e| e.to_string())?,
            signal(SignalKind::interrupt()).map_err(|e| e.to_string())?,
        )
    };
    if json {
        say(json!({"node": node.replica_id().to_string(), "listen": node.local_addr().to_string(), "http": http, "data_dir": data.display().to_string()}).to_string());
    } else {
        say(format!(
            "atoll node {} listening on {} (http {}, data {})",
            node.replica_id(),
            node.local_addr(),
            http.as_deref().unwrap_or("off"),
            data.display()
        ));
    }
    rt.block_on(async {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    });
    node.shutdown().map_err(|e| e.to_string())?;
    if !json {
        say("stopped; data flushed".to_string());
    }
    Ok(())
}

#[derive(Subcommand)]
enum PeerCmd {
    /// Connect to the node at ADDR (host:port), learn its id, keep the
    /// connection; the address joins the replicated peer set.
    Add { addr: String },
    /// Forget a peer: by its id, or by its address (host:port), which also
    /// forgets an address that never answered (bag takes stop waiting for it).
    Remove { id: String },
    /// Lift the removal of node ID: every node accepts it again (as the
    /// change replicates), and it reconnects by itself.
    Readmit { id: String },
    /// List peers: id, address, connected, last contact, acked, lag, bytes in/out.
    List,
}

#[derive(Subcommand)]
enum CounterCmd {
    /// Add N (default 1); prints the new value.
    Incr {
        name: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        n: i64,
    },
    /// Subtract N (default 1); prints the new value.
    Decr {
        name: String,
        #[arg(default_value_t = 1)]
        n: i64,
    },
    /// Print the value.
    Get {
        name: String,
        /// Read at the owner, if the counter is owned (a round trip).
        #[arg(long)]
        strong: bool,
    },
    /// Strong: subtract N (default 1) only if that leaves at least --floor
    /// (default 0), deciding at the counter's owner; prints the value and
    /// exits 1 if it did not subtract.
    DecrIf {
        name: String,
        #[arg(default_value_t = 1)]
        n: i64,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        floor: i64,
    },
    /// Print the escrow of the counter's decrement rights: its floor, the
    /// owner's pool and each node's balance and target. With --floor,
    /// enable it first (strong, at the owner): then nodes decrement locally
    /// out of rights granted ahead, through a split too, never below it.
    Escrow {
        name: String,
        #[arg(long, allow_negative_numbers = true)]
        floor: Option<i64>,
    },
}

#[derive(Subcommand)]
enum OwnCmd {
    /// Move NAME's ownership to node --to (16 hex digits, as `peer list`
    /// prints them), with its state.
    Move {
        name: String,
        #[arg(long)]
        to: String,
    },
    /// Make NAME ownerless again.
    Release { name: String },
    /// Operator's override for an owner gone for good: make --to the owner
    /// without asking anyone. If the old owner is alive, both may accept
    /// strong operations until they hear of each other.
    Force {
        name: String,
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum RegisterCmd {
    /// Write a value.
    Set { name: String, value: String },
    /// Strong: write VALUE only if the register holds --expected (absent:
    /// never written), deciding at its owner; exits 1 if it did not write.
    Cas {
        name: String,
        value: String,
        #[arg(long)]
        expected: Option<String>,
    },
    /// Print the value (nothing, and exit 0, if never written).
    Get {
        name: String,
        /// Read at the owner, if the register is owned (a round trip).
        #[arg(long)]
        strong: bool,
    },
}

#[derive(Subcommand)]
enum SetCmd {
    /// Add members.
    Add {
        name: String,
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Remove members.
    Remove {
        name: String,
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Strong: add MEMBER only if absent, deciding at the set's owner (a
    /// unique claim); exits 1 if it was there already.
    Claim { name: String, member: String },
    /// Print the members, one per line.
    List {
        name: String,
        /// Read at the owner, if the set is owned (a round trip).
        #[arg(long)]
        strong: bool,
    },
    /// Exit 0 if the member is present, 1 if not.
    Contains { name: String, member: String },
}

#[derive(Subcommand)]
enum BagCmd {
    /// Insert values, owned by this store.
    Insert {
        name: String,
        #[arg(required = true)]
        values: Vec<String>,
    },
    /// Take one value this store owns and print it; exit 1 if it owns none.
    Take { name: String },
    /// Print every element: id, owner, value.
    List { name: String },
    /// Hand element ID (as `bag list` prints it), which this store owns, to
    /// node TO (16 hex digits): only TO can take it then.
    Transfer {
        name: String,
        id: String,
        to: String,
    },
    /// Operator's override for a node gone for good: make every element
    /// node --from owns this node's; prints their ids. If --from is alive,
    /// both may take the same element.
    Adopt {
        name: String,
        #[arg(long)]
        from: String,
    },
}

#[derive(Subcommand)]
enum MapCmd {
    /// Add N (default 1) to the counter at KEY.
    Incr {
        name: String,
        key: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        n: i64,
    },
    /// Write the register at KEY.
    Set {
        name: String,
        key: String,
        value: String,
    },
    /// Add a member to the set at KEY.
    Add {
        name: String,
        key: String,
        member: String,
    },
    /// Remove KEY.
    Remove { name: String, key: String },
    /// Strong: write the register at KEY only if it holds --expected
    /// (absent: never written), deciding at the map's owner; exits 1 if it
    /// did not write.
    Cas {
        name: String,
        key: String,
        value: String,
        #[arg(long)]
        expected: Option<String>,
    },
    /// Print KEY's counter, register and set.
    Get {
        name: String,
        key: String,
        /// Read at the owner, if the map is owned (a round trip).
        #[arg(long)]
        strong: bool,
    },
    /// Print the keys.
    Keys { name: String },
}

mod data;
mod namespaces;
mod remote;
use namespaces::{MirrorCmd, NsCmd, TokenCmd};
mod run_config;
use run_config::node_config;

/// What a command produced: plain text lines and the JSON equivalent.
struct Output {
    text: Vec<String>,
    json: serde_json::Value,
    ok: bool,
}

impl Output {
    fn new(text: impl Into<String>, json: serde_json::Value) -> Self {
        Output {
            text: vec![text.into()],
            json,
            ok: true,
        }
    }
}

/// Sends the library's log events to stderr, filtered by `RUST_LOG`
/// (`default` when it is unset or unreadable).
fn init_logging(default: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second subscriber (in a test harness, say) is not an error here.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
}

fn run(cli: Cli) -> Result<Output, String> {
    let cli = match cli.command {
        Cmd::Init { new_cluster, join } => return init(new_cluster, join),
        Cmd::Token(cmd) => return namespaces::token(cmd, &cli.ns),
        Cmd::Run { config, log_format } => {
            init_logging("info", log_format == "json");
            run_node(&config, cli.json)?;
            return Ok(Output {
                text: vec![],
                json: serde_json::Value::Null,
                ok: true,
            });
        }
        _ => cli,
    };
    // The other commands are short: only what went wrong, unless RUST_LOG asks.
    init_logging("warn", false);
    if let Some(op) = data::op(&cli.command)? {
        let answer = match &cli.node {
            Some(url) => {
                remote::Remote::new(url.clone(), cli.token.clone()).run_op(&op, &cli.ns)?
            }
            None => {
                let (store, _) = open_store(cli.data_dir, cli.last_of_cluster)?;
                let ns = store.namespace(&cli.ns).map_err(|e| e.to_string())?;
                op.apply_in(&ns).map_err(|e| e.to_string())?
            }
        };
        return Ok(data::render(&cli.command, answer));
    }
    if let Some(url) = cli.node.clone() {
        let remote = remote::Remote::new(url, cli.token.clone());
        if let Cmd::Watch { prefix, after } = &cli.command {
            return remote.watch(&cli.ns, prefix, after.as_deref(), cli.json);
        }
        return remote::run(&remote, cli.command);
    }
    if let Cmd::Ns(cmd) = cli.command {
        let (store, _) = open_store(cli.data_dir, cli.last_of_cluster)?;
        return namespaces::namespaces(&store, cmd).map_err(|e| e.to_string());
    }
    if let Cmd::Mirror(cmd) = &cli.command {
        let (store, _) = open_store(cli.data_dir, cli.last_of_cluster)?;
        let v = namespaces::mirror_local(&store, cmd).map_err(|e| e.to_string())?;
        return Ok(Output {
            text: namespaces::mirror_text(cmd, &v),
            json: v,
            ok: true,
        });
    }
    if matches!(
        cli.command,
        Cmd::Peer(_) | Cmd::Status | Cmd::Check | Cmd::Watch { .. }
    ) {
        return Err(
            "this command talks to a running node: pass --node URL (its HTTP API, e.g. http://127.0.0.1:7780)"
                .into(),
        );
    }
    // What is left is `info`, on a data directory.
    debug_assert!(matches!(cli.command, Cmd::Info));
    let (store, dir) = open_store(cli.data_dir, cli.last_of_cluster)?;
    let e = |e: atoll::Error| e.to_string();
    let vars = store.variables().map_err(e)?;
    let mut by_kind = serde_json::Map::new();
    for k in Kind::ALL {
        by_kind.insert(
            k.name().into(),
            json!(vars.iter().filter(|(_, v)| *v == k).count()),
        );
    }
    let j = json!({
        "data_dir": dir.display().to_string(),
        "replica": store.replica_id().to_string(),
        "variables": vars.len(),
        "by_type": by_kind,
        "last_seq": store.last_seq(),
    });
    Ok(Output {
        text: vec![
            format!("data dir\t{}", dir.display()),
            format!("replica\t{}", store.replica_id()),
            format!("variables\t{}", vars.len()),
            format!("log seq\t{}", store.last_seq()),
        ],
        json: j,
        ok: true,
    })
}

/// Opens the data directory the command names.
fn open_store(dir: Option<PathBuf>, last_of_cluster: bool) -> Result<(Store, PathBuf), String> {
    let dir = dir.ok_or("no data directory: pass --data-dir DIR or set ATOLL_DATA_DIR")?;
    let config = atoll::Config {
        last_of_cluster,
        ..atoll::Config::new(&dir)
    };
    let store = Store::open_with(config)
        .map_err(|e| format!("cannot open data directory {}: {e}", dir.display()))?;
    Ok((store, dir))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(out) => {
            if json {
                if !out.json.is_null() {
                    println!("{}", out.json);
                }
            } else {
                for line in out.text {
                    println!("{line}");
                }
            }
            if out.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(msg) => {
            eprintln!("error: {}", msg.lines().next().unwrap_or("unknown error"));
            ExitCode::from(1)
        }
    }
}
