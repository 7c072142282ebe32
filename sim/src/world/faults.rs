//! Fault injection: the faults a run draws, and the actions they schedule.

use super::*;

/// A kind of fault a run may draw (each enabled by its `Faults` switch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The cluster splits into two or three sides, for a while.
    Partition,
    /// One direction of one link goes down, for a while.
    OneWay,
    /// One link goes down and up a few times.
    Flapping,
    /// Several links go down one after another, and come back likewise.
    Clogging,
    /// A node crashes, and restarts after a while.
    Crash,
    /// A node is restored from one of its backups.
    Restore,
    /// A node's clock jumps, forward or back.
    ClockJump,
}

impl Sim {
    pub(super) fn act(&mut self, a: Action) {
        match a {
            Action::Cut(a, b) => self.cut_link(a, b),
            Action::Heal(a, b) => self.heal_link(a, b),
            Action::OneWay(a, b) => {
                *self.one_way.entry((a, b)).or_default() += 1;
                self.stats.cuts += 1;
                self.trace
                    .record(self.now, format_args!("one-way cut n{a}->n{b}"));
                self.marks.push((self.now, Mark::Cut(a, b, true)));
            }
            Action::OneWayHeal(a, b) => {
                if let Some(n) = self.one_way.get_mut(&(a, b)) {
                    *n -= 1;
                    if *n == 0 {
                        self.one_way.remove(&(a, b));
                        self.trace
                            .record(self.now, format_args!("one-way heal n{a}->n{b}"));
                        self.marks.push((self.now, Mark::Heal(a, b, true)));
                    }
                }
            }
            Action::Crash(i) => self.crash(i),
            Action::Restart(i) => self.restart(i),
            Action::Restore(i, which) => self.restore(i, which),
            Action::Jump(i, by) => self.jump_clock(i, by),
        }
    }

    pub(super) fn partition_ms(&mut self) -> u64 {
        let f = &self.opts.faults;
        if f.long_partitions && self.fault_rng.chance(0.2) {
            // Hours to days; whatever outlasts the safety phase is healed by the liveness phase.
            self.fault_rng.range(600_000, 3 * 86_400_000)
        } else {
            self.fault_rng.exp(2_000)
        }
    }

    /// Injects one random fault from those enabled.
    pub(super) fn random_fault(&mut self) {
        let f = self.opts.faults.clone();
        let n = self.nodes.len();
        // In this order: a seed draws its fault by index into the list.
        let mut kinds = Vec::new();
        if n > 1 {
            if f.partitions {
                kinds.push(Fault::Partition);
            }
            if f.one_way {
                kinds.push(Fault::OneWay);
            }
            if f.flapping {
                kinds.push(Fault::Flapping);
            }
            if f.clogging {
                kinds.push(Fault::Clogging);
            }
        }
        if f.crashes {
            kinds.push(Fault::Crash);
        }
        if f.restores {
            kinds.push(Fault::Restore);
        }
        if f.clock_jumps && f.clock_skew_ms > 0 {
            kinds.push(Fault::ClockJump);
        }
        if kinds.is_empty() {
            return;
        }
        let rng = &mut self.fault_rng;
        let links: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| {
                self.peers[a]
                    .iter()
                    .filter(move |&&b| b > a)
                    .map(move |&b| (a, b))
            })
            .collect();
        match kinds[rng.index(kinds.len())] {
            Fault::Partition => {
                let mut order: Vec<usize> = (0..n).collect();
                rng.shuffle(&mut order);
                let sides = if n > 2 && rng.chance(0.3) { 3 } else { 2 };
                let mut groups = vec![Vec::new(); sides];
                for (k, x) in order.into_iter().enumerate() {
                    // The first `sides` nodes seed the groups, so none is empty.
                    let g = if k < sides { k } else { rng.index(sides) };
                    groups[g].push(x);
                }
                let dur = self.partition_ms();
                let mut cuts = Vec::new();
                for (x, s) in groups.iter().enumerate() {
                    for t in &groups[x + 1..] {
                        for &a in s {
                            for &b in t {
                                if self.peers[a].contains(&b) {
                                    cuts.push((a, b));
                                }
                            }
                        }
                    }
                }
                self.trace
                    .record(self.now, format_args!("split {groups:?} for {dur}ms"));
                for (a, b) in cuts {
                    self.cut_link(a, b);
                    self.schedule(dur, Ev::Do(Action::Heal(a, b)));
                }
            }
            Fault::OneWay if !links.is_empty() => {
                let (a, b) = links[rng.index(links.len())];
                let (a, b) = if rng.chance(0.5) { (a, b) } else { (b, a) };
                let dur = rng.exp(3_000);
                self.act(Action::OneWay(a, b));
                self.schedule(dur, Ev::Do(Action::OneWayHeal(a, b)));
            }
            Fault::Flapping if !links.is_empty() => {
                let (a, b) = links[rng.index(links.len())];
                let flips = rng.range(2, 12);
                let period = rng.range(20, 1_000);
                for k in 0..flips {
                    self.schedule(k * 2 * period, Ev::Do(Action::Cut(a, b)));
                    self.schedule(k * 2 * period + period, Ev::Do(Action::Heal(a, b)));
                }
            }
            Fault::Clogging if !links.is_empty() => {
                let mut chosen = links.clone();
                rng.shuffle(&mut chosen);
                chosen.truncate(rng.range(1, links.len() as u64) as usize);
                let step = rng.range(10, 500);
                let mut t = 0;
                for &(a, b) in &chosen {
                    self.schedule(t, Ev::Do(Action::Cut(a, b)));
                    t += step;
                }
                let mut back = chosen;
                self.fault_rng.shuffle(&mut back);
                t += self.fault_rng.exp(1_000);
                for (a, b) in back {
                    self.schedule(t, Ev::Do(Action::Heal(a, b)));
                    t += step;
                }
            }
            Fault::Crash => {
                let i = rng.index(n);
                let down = if f.long_partitions && rng.chance(0.1) {
                    rng.range(60_000, 86_400_000)
                } else {
                    rng.exp(1_500)
                };
                self.act(Action::Crash(i));
                self.schedule(down, Ev::Do(Action::Restart(i)));
            }
            Fault::Restore => {
                let i = rng.index(n);
                let k = rng.index(self.nodes[i].backups.len().max(1));
                self.act(Action::Restore(i, Some(k)));
            }
            Fault::ClockJump => {
                let i = rng.index(n);
                let by = rng.range(1, f.clock_skew_ms.max(1)) as i64;
                let by = if rng.chance(0.5) { by } else { -by };
                self.act(Action::Jump(i, by));
            }
            // A link fault in a topology with no link to pick: nothing.
            Fault::OneWay | Fault::Flapping | Fault::Clogging => {}
        }
    }
}
