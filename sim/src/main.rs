//! `atoll-sim`: run one seed, sweep many, or run a scripted scenario.

use atoll_sim::options::{Durability, Options, Topology};
use atoll_sim::{report, scenario, RunResult};
use clap::Parser;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// atoll's deterministic partition simulator. Each seed draws a cluster, a
/// workload and every fault (delays, loss, duplication, partitions, one-way
/// links, flapping, clogging, crashes, restores from backup, clock skew and
/// jumps); then the network heals and the cluster must converge, and every
/// acknowledged write is checked.
#[derive(Parser, Debug)]
#[command(name = "atoll-sim", version)]
struct Args {
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Sweep a range of seeds, e.g. 1..500 (end exclusive) or 1..=500.
    #[arg(long)]
    seeds: Option<String>,
    /// Run a shipped scenario instead of random faults (see --list-scenarios).
    #[arg(long)]
    scenario: Option<String>,
    /// List the shipped scenarios.
    #[arg(long)]
    list_scenarios: bool,
    /// Measure migration by use against a static placement (three sites
    /// 40 ms apart, 50/70/90 % locality) and print the table; with
    /// --safety-ms, simulated time per run (default 20 min).
    #[arg(long)]
    bench_migration: bool,
    /// Nodes in the cluster (default: drawn from the seed, 2 to 6, and a
    /// drawn 2 runs without restores; a count given here keeps them).
    #[arg(long)]
    nodes: Option<usize>,
    /// Peers per node in a sparse mesh (default: every pair).
    #[arg(long)]
    degree: Option<usize>,
    /// Keep only these faults, comma-separated (latency, loss, duplicate,
    /// partitions, one-way, flapping, clogging, long-partitions, crashes,
    /// restores, clock); "none" for none. Default: all.
    #[arg(long)]
    faults: Option<String>,
    /// Length of the safety phase (simulated ms; default: drawn, 10-40 s).
    #[arg(long)]
    safety_ms: Option<u64>,
    /// Most simulated time the liveness phase may take to converge.
    #[arg(long)]
    liveness_ms: Option<u64>,
    /// Mean simulated time between client operations, cluster-wide (ms).
    #[arg(long)]
    op_every_ms: Option<u64>,
    /// Mean simulated time between strong operations on owned variables,
    /// cluster-wide (ms; 0: none).
    #[arg(long)]
    strong_every_ms: Option<u64>,
    /// Mean simulated time between injected faults (ms; default: drawn, 0.3-3 s).
    #[arg(long)]
    fault_every_ms: Option<u64>,
    /// How often each node's storage is backed up, for restores (simulated ms;
    /// default: drawn, 2-20 s).
    #[arg(long)]
    backup_every_ms: Option<u64>,
    /// durable, or buffered:MS (flush every MS).
    #[arg(long)]
    durability: Option<String>,
    /// Write the event trace to this file (one event per line).
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
    /// Write an HTML timeline of the run to this file.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    /// Stop a sweep once this many seeds have failed.
    #[arg(long)]
    max_failures: Option<usize>,
    /// With a sweep: write each seed's trace hash to this file, a line
    /// each (`SEED HASH`), in seed order. Two such files from two builds
    /// differ exactly where the runs did: what a refactor must keep.
    #[arg(long, value_name = "FILE")]
    hashes: Option<std::path::PathBuf>,
    /// Threads for a sweep (default: the machine's cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Mirroring under faults: namespace `pair` mirrored over n0-n1 only,
    /// `loc` never; a third of the operations go to them, and no variable
    /// may be held outside the nodes it is mirrored to.
    #[arg(long)]
    mirror: bool,
    /// Print the options of a single run.
    #[arg(long, short)]
    verbose: bool,
}

fn parse_seeds(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("--seeds takes A..B or A..=B, not {s:?}");
    if let Some((a, b)) = s.split_once("..=") {
        let (a, b) = (
            a.parse().map_err(|_| bad())?,
            b.parse::<u64>().map_err(|_| bad())?,
        );
        return Ok((a, b + 1));
    }
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (a, b) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if b <= a {
        return Err(format!("--seeds {s}: the range is empty"));
    }
    Ok((a, b))
}

impl Args {
    /// The options for `seed`, with this command line's overrides.
    fn options(&self, seed: u64) -> Result<Options, String> {
        let mut o = match &self.scenario {
            Some(name) => {
                scenario::find(name)
                    .ok_or_else(|| format!("no scenario {name:?}; see --list-scenarios"))?
                    .options
            }
            None => match self.nodes {
                Some(n) => Options::for_seed_with_nodes(seed, n),
                None => Options::for_seed(seed),
            },
        };
        if let Some(n) = self.nodes {
            if n == 0 {
                return Err("--nodes must be at least 1".into());
            }
            o.nodes = n;
        }
        if let Some(d) = self.degree {
            o.topology = Topology::Sparse { degree: d.max(2) };
        }
        if let Some(f) = &self.faults {
            let names: Vec<String> = if f == "none" {
                Vec::new()
            } else {
                f.split(',').map(|s| s.trim().to_string()).collect()
            };
            o.faults.keep_only(&names)?;
        }
        if let Some(v) = self.safety_ms {
            o.safety_ms = v;
        }
        if let Some(v) = self.liveness_ms {
            o.liveness_ms = v;
        }
        if let Some(v) = self.fault_every_ms {
            o.faults.every_ms = v.max(1);
        }
        if let Some(v) = self.backup_every_ms {
            o.faults.backup_every_ms = v;
        }
        if let Some(v) = self.op_every_ms {
            o.workload.op_every_ms = v.max(1);
        }
        if let Some(v) = self.strong_every_ms {
            o.workload.strong_every_ms = v;
        }
        if let Some(d) = &self.durability {
            o.durability = match d.as_str() {
                "durable" => Durability::Durable,
                b => match b.strip_prefix("buffered:").map(str::parse) {
                    Some(Ok(ms)) => Durability::Buffered { flush_every_ms: ms },
                    _ => {
                        return Err(format!(
                            "--durability takes durable or buffered:MS, not {d:?}"
                        ))
                    }
                },
            };
        }
        o.workload.mirror |= self.mirror;
        if self.report.is_some() && o.sample_every_ms == 0 {
            o.sample_every_ms = ((o.safety_ms + o.liveness_ms / 4) / 400).max(10);
        }
        Ok(o)
    }

    /// This command line for one seed, as a command that reproduces it.
    fn repro(&self, seed: u64) -> String {
        let mut cmd = format!("cargo run -p atoll-sim --release -- --seed {seed}");
        let mut push = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                cmd.push_str(&format!(" --{flag} {v}"));
            }
        };
        push("scenario", self.scenario.clone());
        push("nodes", self.nodes.map(|v| v.to_string()));
        push("degree", self.degree.map(|v| v.to_string()));
        push("faults", self.faults.clone());
        push("safety-ms", self.safety_ms.map(|v| v.to_string()));
        push("liveness-ms", self.liveness_ms.map(|v| v.to_string()));
        push("op-every-ms", self.op_every_ms.map(|v| v.to_string()));
        push(
            "strong-every-ms",
            self.strong_every_ms.map(|v| v.to_string()),
        );
        push("fault-every-ms", self.fault_every_ms.map(|v| v.to_string()));
        push(
            "backup-every-ms",
            self.backup_every_ms.map(|v| v.to_string()),
        );
        push("durability", self.durability.clone());
        if self.mirror {
            cmd.push_str(" --mirror");
        }
        format!("{cmd}   # at git {}", git_revision())
    }

    fn run_one(&self, seed: u64, keep_trace: bool) -> Result<RunResult, String> {
        let opts = self.options(seed)?;
        let steps = match &self.scenario {
            Some(name) => scenario::find(name).map(|s| s.steps).unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(atoll_sim::run(seed, opts, steps, keep_trace))
    }
}

fn git_revision() -> String {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "unknown".into(),
    }
}

fn summary_line(r: &RunResult) -> String {
    let s = &r.stats;
    format!(
        "seed {}: {} | {} nodes, {} ops acked, {} strong ({} took effect, {} moved by use), {} bag elements rebalanced, {} checks ({} damages to find), {} crashes, {} restores, {} cuts, {} clock jumps, {} state transfers, {} msgs ({} dropped) | converged {} | {} events in {:.1} s, {:.0} events/s | trace {:016x}",
        r.seed,
        if r.passed() { "ok" } else { "FAILED" },
        r.opts.nodes,
        s.acked,
        s.strong_ops,
        s.strong_effects,
        s.migrations,
        s.bag_given,
        s.checks,
        s.damage_found,
        s.crashes,
        s.restores,
        s.cuts,
        s.jumps,
        s.state_transfers,
        s.sent,
        s.dropped,
        r.converged_at.map_or("never".into(), |t| format!("at {}", report::human_ms(t))),
        s.events,
        r.wall_secs,
        s.events as f64 / r.wall_secs.max(1e-9),
        r.trace_hash,
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    match real_main(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("atoll-sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main(args: &Args) -> Result<ExitCode, String> {
    if args.bench_migration {
        let minutes = args.safety_ms.map_or(20, |ms| (ms / 60_000).max(1));
        print!(
            "{}",
            atoll_sim::bench::table(args.seed.unwrap_or(1), minutes)
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.list_scenarios {
        for s in scenario::shipped() {
            println!("{:16} {}", s.name, s.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    match &args.seeds {
        Some(range) => sweep(args, parse_seeds(range)?),
        None => single(args, args.seed.unwrap_or(1)),
    }
}

fn single(args: &Args, seed: u64) -> Result<ExitCode, String> {
    let keep = args.trace.is_some();
    let r = args.run_one(seed, keep)?;
    if args.verbose {
        println!("{:#?}", r.opts);
    }
    println!("{}", summary_line(&r));
    if let (Some(path), Some(lines)) = (&args.trace, &r.trace) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("trace: {} events in {}", lines.len(), path.display());
    }
    if let Some(path) = &args.report {
        std::fs::write(path, report::html(&r))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("report: {}", path.display());
    }
    if r.passed() {
        return Ok(ExitCode::SUCCESS);
    }
    for f in &r.failures {
        println!("  violation: {f}");
    }
    println!("reproduce: {}", args.repro(seed));
    Ok(ExitCode::FAILURE)
}

fn sweep(args: &Args, (from, to): (u64, u64)) -> Result<ExitCode, String> {
    // Check the options once, so that a bad flag is reported before any run.
    args.options(from)?;
    let total = (to - from) as usize;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, total.max(1));
    let next = AtomicU64::new(from);
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let results: Mutex<Vec<RunResult>> = Mutex::new(Vec::with_capacity(total));
    let started = Instant::now();
    let progress = |done: usize, failed: usize| {
        let width = 40;
        let filled = width * done / total.max(1);
        let elapsed = started.elapsed().as_secs_f64();
        let eta = if done > 0 {
            elapsed / done as f64 * (total - done) as f64
        } else {
            0.0
        };
        eprint!(
            "\r[{}{}] {done}/{total} seeds, {failed} failed, {elapsed:.0}s elapsed, eta {eta:.0}s ",
            "#".repeat(filled),
            " ".repeat(width - filled)
        );
        let _ = std::io::stderr().flush();
    };
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                if args
                    .max_failures
                    .is_some_and(|m| failed.load(Ordering::Relaxed) >= m)
                {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= to {
                    return;
                }
                let r = args.run_one(seed, false).expect("options checked above");
                if !r.passed() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(d, failed.load(Ordering::Relaxed));
                results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            });
        }
    });
    eprintln!();
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|r| r.seed);
    if let Some(path) = &args.hashes {
        let lines: String = results
            .iter()
            .map(|r| format!("{} {:016x}\n", r.seed, r.trace_hash))
            .collect();
        std::fs::write(path, lines).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let wall = started.elapsed().as_secs_f64();
    let sum = |f: fn(&RunResult) -> u64| results.iter().map(f).sum::<u64>();
    let failures: Vec<&RunResult> = results.iter().filter(|r| !r.passed()).collect();
    if results.len() < total {
        println!(
            "\nstopped after {} failed seeds (--max-failures)",
            failures.len()
        );
    }
    println!(
        "\n{:<24} {:>12}\n{:<24} {:>12}\n{:<24} {:>12}",
        "seeds",
        results.len(),
        "passed",
        results.len() - failures.len(),
        "failed",
        failures.len()
    );
    for (name, v) in [
        ("operations acked", sum(|r| r.stats.acked)),
        ("bag ops fenced", sum(|r| r.stats.fenced)),
        ("type conflicts resolved", sum(|r| r.stats.conflicts)),
        ("ops on a name of another type", sum(|r| r.stats.mismatched)),
        ("crashes", sum(|r| r.stats.crashes)),
        ("restores from backup", sum(|r| r.stats.restores)),
        ("link cuts", sum(|r| r.stats.cuts)),
        ("clock jumps", sum(|r| r.stats.jumps)),
        ("state transfers", sum(|r| r.stats.state_transfers)),
        ("messages sent", sum(|r| r.stats.sent)),
        ("messages dropped", sum(|r| r.stats.dropped)),
        ("allowed losses", sum(|r| r.stats.allowed_losses)),
        ("simulated events", sum(|r| r.stats.events)),
    ] {
        println!("{name:<30} {v:>12}");
    }
    let sim_secs: u64 = sum(|r| r.end_ms) / 1000;
    println!("{:<30} {:>12}", "simulated seconds", sim_secs);
    println!("{:<30} {:>12.1}", "wall seconds", wall);
    println!(
        "{:<24} {:>12.0}",
        "events per second",
        sum(|r| r.stats.events) as f64 / wall.max(1e-9)
    );
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!("\nfailed seeds:");
    for r in &failures {
        println!("  seed {}: {}", r.seed, r.failures[0]);
        println!("    reproduce: {}", args.repro(r.seed));
    }
    Ok(ExitCode::FAILURE)
}
