//! The simulated network: the topology, links cut and healed, and each
//! message's delay, loss and duplication on its way.

use super::*;

impl Sim {
    pub(super) fn build_topology(&mut self, rng: &mut Rng) {
        let n = self.opts.nodes;
        let add = |peers: &mut Vec<Vec<usize>>, a: usize, b: usize| {
            if a != b && !peers[a].contains(&b) {
                peers[a].push(b);
                peers[b].push(a);
            }
        };
        match self.opts.topology {
            Topology::Full => {
                for a in 0..n {
                    for b in a + 1..n {
                        add(&mut self.peers, a, b);
                    }
                }
            }
            Topology::Sparse { degree } => {
                for a in 0..n {
                    add(&mut self.peers, a, (a + 1) % n);
                }
                let chords = n * degree.saturating_sub(2) / 2;
                for _ in 0..chords {
                    let (a, b) = (rng.index(n), rng.index(n));
                    add(&mut self.peers, a, b);
                }
            }
        }
        for p in &mut self.peers {
            p.sort_unstable();
        }
    }

    pub(super) fn link_wanted(&self, a: usize, b: usize) -> bool {
        self.is_up(a)
            && self.is_up(b)
            && !self.cut.contains_key(&(a, b))
            && !self.cut.contains_key(&(b, a))
    }

    /// Brings a connection in line with the links and nodes: down at once when
    /// it should be, up after a reconnect delay when it may be.
    pub(super) fn refresh_link(&mut self, a: usize, b: usize) {
        let key = pair(a, b);
        let want = self.link_wanted(a, b);
        let c = self.conns.entry(key).or_default();
        if c.up && !want {
            c.up = false;
            c.gen += 1;
            self.trace
                .record(self.now, format_args!("disconnect n{} n{}", key.0, key.1));
            for (x, y) in [(key.0, key.1), (key.1, key.0)] {
                let now = self.clock(x);
                if let Some(r) = self.nodes[x].replica.as_mut() {
                    r.set_connected(node_id(y), None, now);
                    self.after_input(x);
                }
            }
        } else if !c.up && want && !c.connecting {
            c.connecting = true;
            let delay = self.net_rng.range(1, 100);
            self.schedule(delay, Ev::Connect(key.0, key.1));
        }
    }

    pub(super) fn connect(&mut self, a: usize, b: usize) {
        let want = self.link_wanted(a, b);
        let c = self.conns.entry((a, b)).or_default();
        c.connecting = false;
        if c.up || !want {
            return;
        }
        c.up = true;
        c.gen += 1;
        self.trace
            .record(self.now, format_args!("connect n{a} n{b}"));
        for (x, y) in [(a, b), (b, a)] {
            let inc = self.nodes[y]
                .replica
                .as_ref()
                .map(|r| r.keyspace_ref().incarnation());
            let now = self.clock(x);
            if let Some(r) = self.nodes[x].replica.as_mut() {
                r.set_connected(node_id(y), inc, now);
            }
            self.after_input(x);
        }
    }

    pub(super) fn transmit(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        self.stats.sent += 1;
        let c = self.conns.get(&pair(from, to)).copied().unwrap_or_default();
        let kind = match Message::decode(&bytes, usize::MAX) {
            Ok(m) => {
                if let Message::Deltas { to: end, vars, .. } = &m {
                    self.deltas_to.insert((from, to), (c.gen, *end));
                    *self.deltas_sent.entry((from, to)).or_default() += 1;
                    // A sender that has the receiver's Hello (its limits)
                    // sends it no larger delta.
                    let known = self.nodes[from]
                        .replica
                        .as_ref()
                        .and_then(|r| r.limits_of(node_id(to)));
                    let largest = vars.iter().map(|v| v.delta.len() as u64).max();
                    if let (Some(known), Some(largest)) = (known, largest) {
                        if largest > known.max_delta_len {
                            self.fail(format!(
                                "n{from} sent n{to} a delta of {largest} bytes, over the {} its Hello said it accepts",
                                known.max_delta_len
                            ));
                        }
                    }
                }
                atoll_core::testkit::kind_name(&m)
            }
            Err(_) => "undecodable",
        };
        if !c.up
            || self.one_way.contains_key(&(from, to))
            || self.net_rng.chance(self.current_loss())
        {
            self.stats.dropped += 1;
            self.trace.record(
                self.now,
                format_args!("drop n{from}->n{to} {kind} {}B", bytes.len()),
            );
            return;
        }
        let copies = if self.net_rng.chance(self.current_duplicate()) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for k in 0..copies {
            let lat = self.opts.faults.latency;
            let mut delay = self.net_rng.range(lat.min_ms, lat.max_ms);
            if self.phase == Phase::Safety && self.net_rng.chance(lat.spike) {
                delay += lat.spike_ms;
            }
            self.trace.record(
                self.now,
                format_args!(
                    "send n{from}->n{to} {kind} {}B +{delay}ms{}",
                    bytes.len(),
                    if k == 1 { " dup" } else { "" }
                ),
            );
            let n = self.in_flight.entry((from, to)).or_default();
            *n += 1;
            self.stats.max_in_flight = self.stats.max_in_flight.max(*n);
            self.schedule(
                delay,
                Ev::Deliver {
                    from,
                    to,
                    gen: c.gen,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    pub(super) fn current_loss(&self) -> f64 {
        match self.phase {
            Phase::Safety => self.opts.faults.loss,
            _ => 0.0,
        }
    }

    pub(super) fn current_duplicate(&self) -> f64 {
        match self.phase {
            Phase::Safety => self.opts.faults.duplicate,
            _ => 0.0,
        }
    }

    pub(super) fn deliver(&mut self, from: usize, to: usize, gen: u64, bytes: Vec<u8>) {
        if let Some(n) = self.in_flight.get_mut(&(from, to)) {
            *n = n.saturating_sub(1);
        }
        let c = self.conns.get(&pair(from, to)).copied().unwrap_or_default();
        if !c.up || c.gen != gen || self.one_way.contains_key(&(from, to)) {
            self.stats.dropped += 1;
            self.trace
                .record(self.now, format_args!("lost n{from}->n{to} in flight"));
            return;
        }
        let now = self.clock(to);
        if !self.is_up(to) {
            return;
        }
        self.stats.delivered += 1;
        self.stats.bytes += bytes.len() as u64;
        self.trace.record(
            self.now,
            format_args!("deliver n{from}->n{to} {}B", bytes.len()),
        );
        // An ack covering the interval in flight must release the next one at once.
        // Decoded once here for both checks (the replica decodes its own copy).
        let msg = Message::decode(&bytes, usize::MAX).ok();
        let covers = match msg {
            Some(Message::Ack { seq, .. }) => self
                .deltas_to
                .get(&(to, from))
                .is_some_and(|&(g, end)| g == gen && end <= seq),
            _ => false,
        };
        let sent_before = self.deltas_sent.get(&(to, from)).copied().unwrap_or(0);
        // The last chunk (or part) of a state transfer leaves the peer
        // acknowledged through `as_of`.
        let transfer_done = match msg {
            Some(
                Message::StateAck {
                    as_of, last: true, ..
                }
                | Message::StatePartAck { as_of, .. },
            ) => self.nodes[to].replica.as_ref().and_then(|r| {
                r.peers()
                    .iter()
                    .find(|p| p.id == node_id(from) && p.transferring)
                    .map(|_| as_of)
            }),
            _ => None,
        };
        let r = self.nodes[to].replica.as_mut().expect("up");
        match r.handle_message(now, node_id(from), &bytes) {
            Ok(()) => {}
            Err(e @ (ProtocolError::Hostile { .. } | ProtocolError::UnknownPeer(_))) => {
                self.fail(format!("n{to} refused a message from n{from}: {e}"));
            }
            Err(e @ ProtocolError::Merge { .. }) => {
                self.fail(format!("n{to} could not merge from n{from}: {e}"));
            }
        }
        self.after_input(to);
        if let Some(as_of) = transfer_done {
            let r = self.nodes[to].replica.as_ref().expect("up");
            if let Some(p) = r.peers().iter().find(|p| p.id == node_id(from)) {
                if !p.transferring && p.acked < as_of {
                    self.fail(format!(
                        "n{to} finished a state transfer to n{from} as of {as_of} but holds it acknowledged only through {}",
                        p.acked
                    ));
                }
            }
        }
        if covers {
            let r = self.nodes[to].replica.as_ref().expect("up");
            let shippable = r.keyspace_ref().flushed_seq();
            let behind = r
                .peers()
                .iter()
                .find(|p| p.id == node_id(from))
                .is_some_and(|p| {
                    let last_end = self.deltas_to.get(&(to, from)).map_or(0, |d| d.1);
                    p.connected && !p.transferring && p.acked >= last_end && p.acked < shippable
                });
            let sent = self.deltas_sent.get(&(to, from)).copied().unwrap_or(0) > sent_before;
            // Unless the gossip interval holds the next one back: then a timer
            // must be set for no later than the interval from now.
            let gap = r.config().gossip_interval_ms;
            let held = gap > 0 && r.poll_timeout().is_some_and(|at| at <= now.mono + gap);
            if behind && !sent && !held {
                self.fail(format!(
                    "n{to} got n{from}'s ack of its interval in flight, has more to send, and sent nothing"
                ));
            }
        }
    }

    pub(super) fn cut_link(&mut self, a: usize, b: usize) {
        self.stats.cuts += 1;
        *self.cut.entry((a, b)).or_default() += 1;
        *self.cut.entry((b, a)).or_default() += 1;
        self.trace.record(self.now, format_args!("cut n{a} n{b}"));
        self.marks.push((self.now, Mark::Cut(a, b, false)));
        self.refresh_link(a, b);
    }

    pub(super) fn heal_link(&mut self, a: usize, b: usize) {
        let mut healed = false;
        for k in [(a, b), (b, a)] {
            if let Some(n) = self.cut.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.cut.remove(&k);
                    healed = true;
                }
            }
        }
        if healed {
            self.trace.record(self.now, format_args!("heal n{a} n{b}"));
            self.marks.push((self.now, Mark::Heal(a, b, false)));
        }
        self.refresh_link(a, b);
    }

    /// Cuts every link between the sides.
    pub fn split(&mut self, sides: &[Vec<usize>]) {
        for (x, s) in sides.iter().enumerate() {
            for t in &sides[x + 1..] {
                for &a in s {
                    for &b in t {
                        self.cut_link(a, b);
                    }
                }
            }
        }
    }

    /// Restores every cut link, both ways and one way.
    pub fn heal_all(&mut self) {
        let cut: Vec<(usize, usize)> = self.cut.keys().copied().collect();
        self.cut.clear();
        let one: Vec<(usize, usize)> = self.one_way.keys().copied().collect();
        self.one_way.clear();
        for (a, b) in one {
            self.marks.push((self.now, Mark::Heal(a, b, true)));
        }
        for (a, b) in cut {
            if a < b {
                self.marks.push((self.now, Mark::Heal(a, b, false)));
            }
            self.refresh_link(a, b);
        }
        self.trace.record(self.now, format_args!("heal all"));
    }
}
