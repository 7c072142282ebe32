//! The atoll demo: three islands split, keep writing, heal and converge.
//!
//! Three stores (each its own sled database in a temporary directory) stand for
//! three sites. Until the QUIC transport lands, this example does replication's
//! job by hand: every round, each store ships the delta-log entries its peers have
//! not acknowledged yet, and the peers merge them (`Store::merge`). Entries
//! travel on through the receivers' own logs, so a line of links is enough.
//!
//! Run: `cargo run --release --example quickstart`

use atoll::{Result, Store};
use std::collections::BTreeMap;
use std::time::Instant;

/// One direction of a link: what the receiver has acknowledged of the sender's log.
struct Link {
    from: usize,
    to: usize,
    acked: u64,
    up: bool,
}

/// One anti-entropy round over the links that are up; returns how many deltas
/// were new to their receivers.
fn gossip(nodes: &[Store], links: &mut [Link]) -> Result<usize> {
    let mut applied = 0;
    for link in links.iter_mut().filter(|l| l.up) {
        let to_id = nodes[link.to].replica_id();
        for (seq, entry) in nodes[link.from].deltas_since(link.acked, 256)? {
            // Do not send a peer back what came from it.
            if entry.origin != to_id
                && nodes[link.to]
                    .merge(entry.origin, &entry.name, entry.kind, &entry.delta)?
                    .is_some()
            {
                applied += 1;
            }
            link.acked = seq;
        }
    }
    Ok(applied)
}

fn converge(nodes: &[Store], links: &mut [Link]) -> Result<usize> {
    let mut rounds = 0;
    while gossip(nodes, links)? > 0 {
        rounds += 1;
    }
    Ok(rounds)
}

fn snapshot(s: &Store) -> Result<BTreeMap<&'static str, String>> {
    let mut set = s.set::<String>("visitors")?.members()?;
    set.sort();
    let mut bag: Vec<String> = s
        .bag::<String>("tickets")?
        .elements()?
        .into_iter()
        .map(|e| e.value)
        .collect();
    bag.sort();
    Ok(BTreeMap::from([
        ("hits (counter)", s.counter("hits")?.value()?.to_string()),
        ("visitors (set)", format!("{set:?}")),
        (
            "motd (register)",
            format!("{:?}", s.register::<String>("motd")?.get()?),
        ),
        ("tickets (bag)", format!("{bag:?}")),
    ]))
}

fn main() -> Result<()> {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let nodes: Vec<Store> = dirs
        .iter()
        .map(|d| Store::open(d.path()))
        .collect::<Result<_>>()?;
    let names = ["lagoon", "reef", "islet"];
    for (n, s) in names.iter().zip(&nodes) {
        println!("{n:>6}: replica {}", s.replica_id());
    }
    // A line: lagoon <-> reef <-> islet.
    let mut links: Vec<Link> = [(0, 1), (1, 0), (1, 2), (2, 1)]
        .into_iter()
        .map(|(from, to)| Link {
            from,
            to,
            acked: 0,
            up: true,
        })
        .collect();

    println!("\n== connected: everyone writes");
    for (i, s) in nodes.iter().enumerate() {
        s.counter("hits")?.incr(10)?;
        s.set::<String>("visitors")?
            .add(&format!("{}-first", names[i]))?;
        s.bag::<String>("tickets")?
            .insert(&format!("ticket-{}", names[i]))?;
    }
    nodes[0]
        .register::<String>("motd")?
        .set(&"welcome".to_string())?;
    converge(&nodes, &mut links)?;

    println!("== split: islet is cut off; both sides keep writing");
    for l in links.iter_mut().filter(|l| l.from == 2 || l.to == 2) {
        l.up = false;
    }
    nodes[0].counter("hits")?.incr(5)?;
    nodes[1].counter("hits")?.decr(2)?;
    nodes[2].counter("hits")?.incr(100)?;
    nodes[0]
        .set::<String>("visitors")?
        .remove(&"islet-first".to_string())?;
    nodes[2]
        .set::<String>("visitors")?
        .add(&"islet-first".to_string())?; // re-add: add wins
    nodes[2]
        .set::<String>("visitors")?
        .add(&"islet-alone".to_string())?;
    nodes[1]
        .register::<String>("motd")?
        .set(&"reef says hi".to_string())?;
    nodes[2]
        .register::<String>("motd")?
        .set(&"islet was here".to_string())?;
    let t0 = nodes[0].bag::<String>("tickets")?.take()?;
    let t2 = nodes[2].bag::<String>("tickets")?.take()?;
    nodes[2]
        .bag::<String>("tickets")?
        .insert(&"ticket-islet-2".to_string())?;
    println!("   lagoon took {t0:?}, islet took {t2:?} (each only what it owns)");
    converge(&nodes, &mut links)?;
    for (n, s) in names.iter().zip(&nodes) {
        println!("   {n:>6} sees hits = {}", s.counter("hits")?.value()?);
    }

    println!("== heal");
    for l in &mut links {
        l.up = true;
    }
    let start = Instant::now();
    let rounds = converge(&nodes, &mut links)?;
    let took = start.elapsed();

    let snaps: Vec<_> = nodes.iter().map(snapshot).collect::<Result<_>>()?;
    for (n, snap) in names.iter().zip(&snaps) {
        println!("\n{n}:");
        for (k, v) in snap {
            println!("  {k:<16} {v}");
        }
    }
    let same = snaps.windows(2).all(|w| w[0] == w[1]);
    println!(
        "\nconverged: {} in {rounds} gossip rounds, {:.1} ms (manual delta exchange; \
         the QUIC transport comes with replication)",
        if same {
            "yes, all three identical"
        } else {
            "NO"
        },
        took.as_secs_f64() * 1e3
    );
    assert!(same, "the islands did not converge");
    Ok(())
}
