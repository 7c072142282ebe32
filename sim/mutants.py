#!/usr/bin/env python3
"""Mutation check for the simulator: applies one hand-written mutant at a time
to the merge, delta-log, ack, state-transfer, ownership and mirroring code,
rebuilds, sweeps seeds (with a mutant's extra flags, its fifth item), and
reports whether the sweep caught it. Restores every file afterwards.

    python3 sim/mutants.py            # all mutants, 200 seeds each
    python3 sim/mutants.py 3 --seeds 1..100

It edits the sources in place while it runs: run it in a separate worktree
(`git worktree add /tmp/mut HEAD`), never in a checkout you edit or commit
from meanwhile.
"""
import subprocess, sys, pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
RD = "crates/atoll-core/src/replica"
RM, RI, RS = f"{RD}/mod.rs", f"{RD}/inbound.rs", f"{RD}/staging.rs"
RP, RF, RV, RT = f"{RD}/peer.rs", f"{RD}/fence.rs", f"{RD}/interval.rs", f"{RD}/transfer.rs"
K = "crates/atoll-core/src/keyspace.rs"
KD = "crates/atoll-core/src/keyspace"
KM, KK, KH = f"{KD}/merge.rs", f"{KD}/checkpoint.rs", f"{KD}/history.rs"
S = "crates/atoll-store/src/storage.rs"
KC = "crates/atoll-core/src/keyspace/conflict.rs"
RO, RQ, RH = f"{RD}/owners.rs", f"{RD}/requests.rs", f"{RD}/handoff.rs"
RW, RB = f"{RD}/serving.rs", f"{RD}/shares.rs"
RG, RL = f"{RD}/migration.rs", f"{RD}/placement.rs"
CO = "crates/atoll-crdt/src/ownership.rs"
RE, CE = f"{RD}/escrow.rs", "crates/atoll-crdt/src/escrow.rs"
RC, KG = f"{RD}/check.rs", f"{KD}/digest.rs"

MUTANTS = [
    ("ack: acknowledge one short of the interval", RI,
     "                from: start,\n                seq: to,\n",
     "                from: start,\n                seq: to.saturating_sub(1).max(start),\n"),
    ("ack: sender takes an ack as one more than it says", RI,
     "p.acked = p.acked.max(seq);",
     "p.acked = p.acked.max(seq + 1).min(self.ks.last_seq());"),
    ("ack: in-flight interval never cleared by its ack", RP,
     "while p.flights.front().is_some_and(|(end, _)| *end <= acked) {",
     "while p.flights.front().is_some_and(|(end, _)| *end < acked) {"),
    ("ack: an out-of-order ack taken as contiguous", RI,
     "if start <= p.acked {",
     "if true {"),
    ("retransmit: go-back-N resumes after the lost interval", RM,
     "                p.flights.clear();\n                p.sent_through = p.acked;\n                p.complete_sent = None;\n",
     "                p.flights.clear();\n                p.complete_sent = None;\n"),
    ("delta log: interval skips its first entry", RV,
     "let (mut read_through, mut read_count, mut log_end) = (from, 0, false);",
     "let (mut read_through, mut read_count, mut log_end) = (from + 1, 0, false);"),
    ("delta log: back-propagation test inverted", RV,
     "if entry.origin == peer_incarnation || !self.sends_to(id, &entry.name) {",
     "if entry.origin != peer_incarnation || !self.sends_to(id, &entry.name) {"),
    ("delta log: interval end counts entries past the byte bound", RV,
     "            to = seq;\n            self.note_sent(id, &entry.name, entry.delta.len());\n            if entry.delta.len() >= self.config.ship_whole_bytes",
     "            to = seq + u64::from(bytes >= self.config.max_batch_bytes / 2);\n            self.note_sent(id, &entry.name, entry.delta.len());\n            if entry.delta.len() >= self.config.ship_whole_bytes"),
    ("delta log: truncation ignores acks", KK,
     "let through = self.acked_floor.map_or(forced, |acked| acked.max(forced));",
     "let through = self.acked_floor.map_or(forced, |acked| acked.max(forced) + 1);"),
    ("delta log: log_after starts one late", S,
     "let from = log_key(after.saturating_add(1));",
     "let from = log_key(after.saturating_add(2));"),
    ("merge: the remainder is logged but not joined into the state", KM,
     "        var.state.join(delta).expect(\"kinds checked above\");\n",
     "        drop(delta);\n"),
    ("merge: a delta for a variable new here is taken as nothing new", KM,
     "        if delta.is_bottom() {\n",
     "        if delta.is_bottom() || created {\n"),
    ("merge: an empty delta is logged in place of the remainder", KM,
     "            Some(bytes) => bytes.into_owned(),\n            None => codec::encode(&delta),\n",
     "            Some(_) => codec::encode(&State::new(kind)),\n            None => codec::encode(&State::new(kind)),\n"),
    ("state transfer: one chunk claims to be the last", RT,
     "let last = self.transfer_names_after(id, &examined, 1)?.is_empty();",
     "let last = true;"),
    ("state transfer: chunk skips the variable after the cursor", RT,
     "let next = self.transfer_names_after(id, &examined, STATE_PAGE)?;",
     "let next: Vec<_> = self.transfer_names_after(id, &examined, STATE_PAGE)?.into_iter().skip(usize::from(!examined.is_empty())).collect();"),
    ("state transfer: completion does not set acked", RT,
     "p.acked = p.acked.max(as_of);",
     "p.acked = p.acked.max(as_of.saturating_sub(1));"),
    ("state transfer: started only when the log is empty", RV,
     "if p.acked < last && (p.acked + 1 < first || p.wants_state) {",
     "if p.acked < last && (p.acked + 1 < first || p.wants_state) && first > last {"),
    ("fence: takes allowed right after opening", RF,
     "        !self.unfenced\n            && (self.peers.len() < self.expected_peers || !self.peers.values().all(|p| p.caught_up))\n",
     "        false\n"),
    ("resume: a claim on an earlier opening is trusted", KH,
     "        seq.min(next.settled).min(self.storage.last_seq())",
     "        seq.min(self.storage.last_seq())"),
    ("resume: a claim on an unknown incarnation is trusted", KH,
     "            return 0;\n        };",
     "            return seq;\n        };"),
    ("resume: an interval after a gap advances what is held", RI,
     "        if start <= held {",
     "        if start <= held || true {"),
    ("coalesce: a run moves to its first entry's sequence", KK,
     "let Some(&last) = run.seqs.last() else {",
     "let Some(&last) = run.seqs.first() else {"),
    ("state parts: a change between parts goes unnoticed", RT,
     "if self.ks.version(&name)? != Some(version) {",
     "if self.ks.version(&name)?.is_none() {"),
    ("state parts: parts of another state are joined", RS,
     "                s.version != version\n",
     "                false\n"),
    ("state parts: the end part acknowledged before the state is merged", RS,
     "            if !end {",
     "            if true {"),
    ("gossip: an interval held back sets no timer", RM,
     "            .chain(gossip)\n            .chain(hello)\n",
     "            .chain(hello)\n"),
    ("forwarding: a log entry too large for a delta is sent as one", RV,
     "if entry.delta.len() > max_delta {",
     "if entry.delta.len() > max_delta && false {"),
    ("forwarding: an interval's joined deltas grow past max_delta_len", RV,
     "if bytes > 0 && bytes + entry.delta.len() + JOIN_SLACK > max_delta {",
     "if false {"),
    ("state transfer: a state changed since the checkpoint is sent as stored", K,
     "        if self.dirty.contains_key(name) {\n            return Ok(None);\n        }\n        let Some(bytes) = self.storage.state(name)?",
     "        let Some(bytes) = self.storage.state(name)?"),
    ("state chunks: the cursor moves past a chunk not acknowledged", RT,
     "while self.units.front().is_some_and(|u| u.acked) {",
     "while self.units.iter().any(|u| u.acked) {"),
    ("state chunks: a timeout resumes after the lost chunk", RM,
     "_ if chunk_overdue => t.go_back(),",
     "_ if chunk_overdue => t.units.retain(|u| u.acked),"),
    ("coalesce: runs joined past what every connected peer acknowledged", RV,
     "self.ks.set_coalesce_floor(connected.map(|p| p.acked).min());",
     "drop(connected);\n        self.ks.set_coalesce_floor(None);"),
    ("state chunks: the receiver records what it holds across a gap", RI,
     ".filter(|(a, held)| *a == as_of && *held == after)\n        {\n            held.clone_from(&through);",
     ".filter(|(a, _)| *a == as_of)\n        {\n            held.clone_from(&through);"),
    ("resume: a claim on an earlier opening is trusted past its settled point", KH,
     "        seq.min(next.settled).min(self.storage.last_seq())",
     "        seq.min(next.first_seq - 1).min(self.storage.last_seq())"),
    ("state parts: a part of an earlier transfer replaces those kept", RS,
     "        if current.is_some_and(|c| as_of < c) {",
     "        if current.is_some_and(|c| as_of < c) && false {"),
    ("state parts: a merged state's parts sent again are kept as new", RS,
     "            .is_some_and(|(a, n, v)| (*a, n, *v) == (as_of, &name, version))",
     "            .is_some_and(|(a, n, v)| (*a, n, *v) == (as_of, &name, version) && false)"),
    ("state transfer: no backoff on timeouts", RT,
     "const MAX_TRANSFER_BACKOFF: u32 = 4;",
     "const MAX_TRANSFER_BACKOFF: u32 = 0;"),
    ("conflict: a name of two types refused, as a poison message", KM,
     "                return self.merge_conflict(origin, name, held, delta, encoded, now_ms);\n",
     "                return Err(Error::TypeMismatch { name: name.to_string(), expected: held, found: kind });\n"),
    ("conflict: the arriving delta always keeps the name", KC,
     "        let applied = if kind > held {\n",
     "        let applied = if false {\n"),
    # Three guards of the ownership code are not mutants here: each is
    # covered twice (an offer for an epoch already held changes no record,
    # by the record's join; kept answers moved with a variable matter only
    # to a request its old owner forgot, which the forget window refuses; a
    # released variable's custodian matters only when the release reaches
    # a home before the writes before it). Mutated, they change no run.
    # Nor is the fenced node's check in shares.rs: the transfers it would
    # write are refused while fenced (`Op::owner_only`) all the same.
    ("offer: the old owner keeps accepting while it hands on", RO,
     "if let Some(Handoff { to, since_ms }) = record.handoff() {",
     "if let Some(Handoff { to, since_ms }) = record.handoff().filter(|_| false) {"),
    ("offer: the new owner accepts without the state", RH,
     "                self.merge_one(from, &name, v.kind, state, v.delta)?;\n",
     "                drop((v, state));\n"),
    ("epoch: a request runs whatever epoch it names", RW,
     "            (_, Ok(e)) if e != epoch => Ok(Route::Local),",
     "            (_, Ok(e)) if false && e != epoch => Ok(Route::Local),"),
    ("dedup: a request sent again is applied again", RW,
     "if let Some((kept_name, answer)) = self.owners.kept.get(&key) {",
     "if let Some((kept_name, answer)) = self.owners.kept.get(&key).filter(|_| false) {"),
    ("dedup: a forgotten answer's request runs again", RW,
     "        self.owners.forgotten_until.is_some_and(|until| now < until)",
     "        self.owners.forgotten_until.is_some_and(|until| now < until) && false"),
    ("decider: changes of owner decided while fenced", RO,
     "        if self.fenced() {\n            return Err(OwnershipError::Fenced {",
     "        if false {\n            return Err(OwnershipError::Fenced {"),
    ("record: a lower epoch wins the join", CO,
     "            Less => *self = other,\n            Greater => {}",
     "            Greater => *self = other,\n            Less => {}"),
    ("reply: a small variable's reply carries only its delta", RO,
     "            Some(state) if whole => codec::encode(state),",
     "            Some(_) if whole => codec::encode(delta),"),
    ("placement: a manual move off the site is made", RO,
     "                self.check_placement(name, to)?;\n",
     "                let _ = self.check_placement(name, to);\n"),
    ("placement: a move by use leaves the site", RG,
     "        if self.check_placement(name, top).is_err() {",
     "        if false && self.check_placement(name, top).is_err() {"),
    ("placement: a first use granted to whoever asked", RL,
     "        if self.site_of(requester).as_ref() == Some(&site) {",
     "        if true {"),
    ("deltas: an interval after a gap merged at once", RI,
     "        if start > p.held.unwrap_or(base).max(base) {",
     "        if false && start > p.held.unwrap_or(base).max(base) {"),
    ("escrow: a node spends two more than its balance", RE,
     "            && escrow.balance(me, &counter) >= i128::from(by)\n",
     "            && escrow.balance(me, &counter) + 2 >= i128::from(by)\n"),
    ("escrow: the pool ignores the balances held", RE,
     "counter.value() - floor - escrow.held(counter)",
     "counter.value() - floor"),
    ("escrow: an offer without the escrow record", RH,
     "let escrow = self.escrow_of(name).ok().flatten().map(Box::new);",
     "let escrow = None::<Box<atoll_crdt::Escrow>>;"),
    ("escrow: a fenced node spends its balance", RE,
     "            && !self.fenced()\n            && escrow.balance(me, &counter)",
     "            && escrow.balance(me, &counter)"),
    ("escrow: rights given back stay in the balance", CE,
     "granted - i128::from(spent_by(counter, node)) - i128::from(self.returned.total_of(node))",
     "granted - i128::from(spent_by(counter, node))"),
    ("escrow: grants beyond what the pool holds", RE,
     "let mut spare = pool - target(me);",
     "let mut spare = total;"),
    ("escrow: the owner uses its earlier balance without giving it back", RE,
     "            self.write_escrow(name, |e| e.give_back(me, mine))?;\n            let pool = match",
     "            let pool = i128::from(mine) + match"),
    ("escrow: a spend made under the opening's id, not the escrow actor", RE,
     "let actor = escrow_actor(self.id());",
     "let actor = self.ks.incarnation();"),
    ("escrow: a node spends what takes its copy below the floor", RE,
     "            && counter.value() - i128::from(by) >= floor\n",
     "\n"),
    ("check: a difference is divergent without both holding each other's log", RC,
     "let divergent = mutual && !differing.is_empty();",
     "let divergent = !differing.is_empty();"),
    ("check: mutual holds asked only when the trees were compared", RC,
     "let mutual = mutual_before && mutual(&reply, me, last_seq, held_of_peer);",
     "let mutual = mutual_before;"),
    ("digest: a variable changed is not hashed again", KG,
     "        if self.ready && !self.changed.contains(name) {",
     "        if false && self.ready && !self.changed.contains(name) {"),
    ("repair: the peer does not send its state back", RC,
     "        if answer {\n            self.send_repair(from, names, false);",
     "        if false && answer {\n            self.send_repair(from, names, false);"),
    ("resync: the variables changed since the last checkpoint are left out", KK,
     "        for (name, origin) in &self.dirty {\n            if wanted(*origin) {",
     "        for (name, origin) in &self.dirty {\n            if false && wanted(*origin) {"),
    ("resync: a change from the peer itself excludes the variable", KK,
     "let wanted = |origin: Option<ReplicaId>| origin.is_none() || origin != not_from;",
     "let wanted = |origin: Option<ReplicaId>| origin.is_none();"),
    ("resync: a checkpoint replaces the entry of another origin", KK,
     "if let Some((seq, _)) = v.indexed.iter().find(|(_, o)| o == origin) {",
     "if let Some((seq, _)) = v.indexed.last() {"),
    ("resync: the index is read from one past what the peer holds", S,
     "let from = change_key(after.saturating_add(1), \"\");",
     "let from = change_key(after.saturating_add(2), \"\");"),
    ("resync: the index reaches back further than it does", S,
     "        if after < self.changes_from {\n            return Ok(None);",
     "        if after + 50 < self.changes_from {\n            return Ok(None);"),
    ("coalesce: a run is joined past another origin's entry", KK,
     "                .filter(|(_, origin)| *origin != entry.origin)",
     "                .filter(|(_, origin)| *origin != entry.origin && false)"),
    ("cache: a variable changed since the checkpoint is dropped from memory", f"{KD}/recovery.rs",
     "                    if self.dirty.contains_key(name) {\n                        continue;\n                    }\n",
     ""),
    ("cache: a dropped variable's size is not taken off", f"{KD}/recovery.rs",
     "            self.resident_bytes = self.resident_bytes.saturating_sub(var.bytes);\n        }\n    }\n\n    /// Drops variables",
     "            let _ = var;\n        }\n    }\n\n    /// Drops variables"),
    # Mirroring: caught only by runs that mirror (the fifth item: the
    # simulator's extra flags).
    ("mirror: every namespace goes to every peer", f"{RD}/mirror.rs",
     "    pub(super) fn sends_to(&self, peer: ReplicaId, name: &str) -> bool {\n        self.mirrors",
     "    pub(super) fn sends_to(&self, peer: ReplicaId, name: &str) -> bool {\n        true || self.mirrors",
     "--mirror"),
    ("mirror: a namespace gained is never sent what was written before", RV,
     "if p.mirror_resync.is_some_and(|at| p.acked >= at) {",
     "if false && p.mirror_resync.is_some_and(|at| p.acked >= at) {",
     "--mirror"),
]

def sh(cmd):
    return subprocess.run(cmd, cwd=ROOT, shell=True, capture_output=True, text=True)

def main():
    args = sys.argv[1:]
    seeds = "1..201"
    if "--seeds" in args:
        i = args.index("--seeds"); seeds = args[i + 1]; del args[i:i + 2]
    pick = [int(a) for a in args] or range(len(MUTANTS))
    rows = []
    for k in pick:
        name, path, old, new, *extra = MUTANTS[k]
        f = ROOT / path
        orig = f.read_text()
        if orig.count(old) != 1:
            rows.append((k, name, "NOT APPLIED (pattern not found once)"))
            print(f"{k:2} {name:62} {rows[-1][2]}", flush=True)
            continue
        try:
            f.write_text(orig.replace(old, new))
            b = sh("cargo build -q -p atoll-sim --release 2>&1")
            if b.returncode != 0:
                rows.append((k, name, "does not compile"))
                print(f"{k:2} {name:62} {rows[-1][2]}", flush=True)
                continue
            r = sh(f"./target/release/atoll-sim --seeds {seeds} --max-failures 1 {' '.join(extra)} 2>/dev/null")
            failed = next((l.split()[-1] for l in r.stdout.splitlines() if l.startswith("failed ")), "?")
            first = next((l.strip() for l in r.stdout.splitlines() if l.strip().startswith("seed ") and ":" in l), "")
            verdict = "caught" if r.returncode != 0 else "NOT CAUGHT"
            rows.append((k, name, verdict + (f": {first[:150]}" if first else "")))
        finally:
            f.write_text(orig)
        print(f"{k:2} {rows[-1][1]:62} {rows[-1][2]}", flush=True)
    sh("cargo build -q -p atoll-sim --release")
    missed = [r for r in rows if not r[2].startswith("caught")]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} mutants caught")
    sys.exit(1 if missed else 0)

main()
