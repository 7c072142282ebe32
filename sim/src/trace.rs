//! The event trace: every input the simulator gives a replica and every fault
//! it injects, hashed as it goes, and kept in full only when asked for.

use std::fmt::Write as _;

/// The running hash of a run's events, and optionally the events themselves.
#[derive(Clone, Debug)]
pub struct Trace {
    hash: u64,
    events: u64,
    line: String,
    keep: Option<Vec<String>>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

impl Trace {
    /// A trace that keeps its lines if `keep`.
    pub fn new(keep: bool) -> Trace {
        Trace {
            hash: FNV_OFFSET,
            events: 0,
            line: String::new(),
            keep: keep.then(Vec::new),
        }
    }

    /// Records one event at simulated time `at`.
    pub fn record(&mut self, at: u64, what: std::fmt::Arguments<'_>) {
        self.line.clear();
        let _ = write!(self.line, "{at} {what}");
        for b in self.line.bytes() {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        self.hash = (self.hash ^ u64::from(b'\n')).wrapping_mul(FNV_PRIME);
        self.events += 1;
        if let Some(k) = &mut self.keep {
            k.push(self.line.clone());
        }
    }

    /// The hash of every event so far (FNV-1a over their lines).
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// How many events were recorded.
    pub fn len(&self) -> u64 {
        self.events
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// The kept lines, if the trace keeps them.
    pub fn lines(&self) -> Option<&[String]> {
        self.keep.as_deref()
    }
}

/// FNV-1a of `bytes`, for state digests.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
    }
    h
}
