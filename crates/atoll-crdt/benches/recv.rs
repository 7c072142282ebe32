//! What a receiver pays per element to catch up on a set: the cost of each
//! step of merging a delta, split out, for the workload of the replication
//! benchmark (`cargo bench -p atoll --bench replication`) without the network
//! or the disk.
//!
//! A sender adds N distinct members to a set; its log joins them into runs of
//! `RUN` adds each (as coalescing at checkpoints does). A fresh receiver then
//! merges the runs in order: decode and validate, strip what it has (nothing),
//! encode the remainder for its own log, join. The figures are the sum over all
//! runs, median of `ROUNDS`, in nanoseconds per element. Then the same for
//! the sender's whole state, as a state transfer to a new peer ships it.
//!
//! Run: `cargo bench -p atoll-crdt --bench recv`

use atoll_crdt::variable::{splice_parts, Bytes, DecodedPart, State};
use atoll_crdt::{codec, Lattice, OrSet, ReplicaId};
use std::time::{Duration, Instant};

const N: u32 = 20_000;
const RUN: u32 = 1_300;
const ROUNDS: usize = 7;

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let mut sender = OrSet::<Bytes>::new();
    let mut runs = Vec::new();
    let mut run: Option<OrSet<Bytes>> = None;
    for i in 0..N {
        let member = Bytes::from(codec::encode(&format!("member-{i:06}")));
        let d = sender.add(ReplicaId(7), member);
        match &mut run {
            Some(r) => r.join(d),
            None => run = Some(d),
        }
        if (i + 1) % RUN == 0 {
            runs.push(codec::encode(&State::Set(run.take().expect("set above"))));
        }
    }
    if let Some(r) = run {
        runs.push(codec::encode(&State::Set(r)));
    }
    let mut rounds: Vec<[Duration; 4]> = (0..ROUNDS)
        .map(|_| {
            let mut state = State::Set(OrSet::new());
            let mut t = [Duration::ZERO; 4];
            for bytes in &runs {
                let start = Instant::now();
                let d: State = codec::decode(bytes, 1 << 30).expect("valid");
                t[0] += start.elapsed();
                let start = Instant::now();
                let d = state.strip(d);
                t[1] += start.elapsed();
                let start = Instant::now();
                std::hint::black_box(codec::encode(&d));
                t[2] += start.elapsed();
                let start = Instant::now();
                state.join(d).expect("same kind");
                t[3] += start.elapsed();
            }
            t
        })
        .collect();
    rounds.sort_by_key(|t| t.iter().sum::<Duration>());
    let t = rounds[ROUNDS / 2];
    let per = |d: Duration| d.as_nanos() as f64 / f64::from(N);
    println!(
        "{N} set adds in {} runs of {RUN}, ns per element: decode+validate {:.0}, strip {:.0}, encode {:.0}, join {:.0}",
        runs.len(),
        per(t[0]),
        per(t[1]),
        per(t[2]),
        per(t[3])
    );

    // A state transfer to a new peer: the sender encodes its whole state,
    // the receiver decodes and validates it (and, being empty, takes it whole).
    let whole = State::Set(sender);
    let mut times: Vec<(Duration, Duration, usize)> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let bytes = codec::encode(&whole);
            let encoded = start.elapsed();
            let start = Instant::now();
            let back: State = codec::decode(&bytes, 1 << 30).expect("valid");
            let decoded = start.elapsed();
            assert_eq!(back, whole);
            (encoded, decoded, bytes.len())
        })
        .collect();
    times.sort_by_key(|t| t.0 + t.1);
    let (encoded, decoded, len) = times[ROUNDS / 2];
    println!(
        "the whole state ({N} members, {len} bytes), ns per element: encode {:.0}, decode+validate {:.0}",
        per(encoded),
        per(decoded)
    );

    // The same state in parts of 64 KiB, as protocol 5 and later send it: the
    // sender encodes each part, the receiver decodes each (as it arrives),
    // then, once it holds them all, assembles and validates the state and
    // splices their bytes into the one encoding it logs.
    const PART: usize = 64 << 10;
    let mut times: Vec<[Duration; 4]> = (0..ROUNDS)
        .map(|_| {
            let mut t = [Duration::ZERO; 4];
            let start = Instant::now();
            let mut parts = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            loop {
                let part = whole
                    .encode_part(after.as_deref(), PART)
                    .expect("own cursor");
                after = part.next.clone();
                parts.push(part.bytes);
                if after.is_none() {
                    break;
                }
            }
            t[0] = start.elapsed();
            let start = Instant::now();
            let (decoded, ranges): (Vec<_>, Vec<_>) = parts
                .iter()
                .map(|b| DecodedPart::decode(b, 1 << 30).expect("valid"))
                .unzip();
            t[1] = start.elapsed();
            let entries = decoded.iter().map(DecodedPart::entries).sum();
            let start = Instant::now();
            let state = State::assemble(decoded).expect("valid");
            t[2] = start.elapsed();
            let start = Instant::now();
            let spans: Vec<(&[u8], _)> = parts.iter().map(|b| &b[..]).zip(ranges).collect();
            std::hint::black_box(splice_parts(&spans, entries, state.context()));
            t[3] = start.elapsed();
            assert_eq!(state, whole);
            t
        })
        .collect();
    times.sort_by_key(|t| t.iter().sum::<Duration>());
    let t = times[ROUNDS / 2];
    println!(
        "the whole state in parts of {} KiB, ns per element: encode {:.0}, decode {:.0}, assemble+validate {:.0}, splice {:.0}",
        PART >> 10,
        per(t[0]),
        per(t[1]),
        per(t[2]),
        per(t[3])
    );

    // A state unchanged since its checkpoint is cut from its stored
    // encoding instead of encoded from its tree: the same parts.
    let stored = codec::encode(&whole);
    let mut cuts: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let parts =
                atoll_crdt::variable::parts_of_encoded(&stored, PART).expect("own encoding");
            let took = start.elapsed();
            std::hint::black_box(parts);
            took
        })
        .collect();
    cuts.sort();
    println!(
        "the same parts cut from the stored encoding ({} bytes), ns per element: {:.0}",
        stored.len(),
        per(cuts[ROUNDS / 2])
    );
}
