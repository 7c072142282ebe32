//! Hybrid logical clock timestamps for last-writer-wins registers.

use serde::{Deserialize, Serialize};

/// A hybrid logical clock timestamp: wall-clock milliseconds plus a logical counter
/// that orders events within one millisecond or while the wall clock lags.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch, as the issuing node's clock saw them (or later).
    pub physical_ms: u64,
    /// Orders timestamps with the same `physical_ms`.
    pub logical: u32,
}

/// A timestamp too far ahead of the local clock was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "timestamp is {ahead_by_ms} ms ahead of the local clock; the maximum skew is {max_skew_ms} ms"
)]
pub struct ClockSkew {
    /// How far the timestamp was ahead of the local wall clock.
    pub ahead_by_ms: u64,
    /// The configured maximum.
    pub max_skew_ms: u64,
}

/// A hybrid logical clock (Kulkarni et al. 2014). It never reads a clock itself:
/// callers pass the wall time in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HybridClock {
    last: Timestamp,
    max_skew_ms: u64,
}

impl HybridClock {
    /// A clock that refuses remote timestamps more than `max_skew_ms` ahead.
    pub fn new(max_skew_ms: u64) -> Self {
        HybridClock {
            last: Timestamp::default(),
            max_skew_ms,
        }
    }

    /// The configured maximum skew.
    pub fn max_skew_ms(&self) -> u64 {
        self.max_skew_ms
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A new timestamp, later than every one issued or observed, given the wall time.
    pub fn tick(&mut self, wall_ms: u64) -> Timestamp {
        self.last = if wall_ms > self.last.physical_ms {
            Timestamp {
                physical_ms: wall_ms,
                logical: 0,
            }
        } else if self.last.logical == u32::MAX {
            Timestamp {
                physical_ms: self.last.physical_ms + 1,
                logical: 0,
            }
        } else {
            Timestamp {
                physical_ms: self.last.physical_ms,
                logical: self.last.logical + 1,
            }
        };
        self.last
    }

    /// Checks a timestamp from elsewhere against the wall time, without observing it.
    pub fn check(&self, ts: Timestamp, wall_ms: u64) -> Result<(), ClockSkew> {
        let ahead = ts.physical_ms.saturating_sub(wall_ms);
        if ahead > self.max_skew_ms {
            Err(ClockSkew {
                ahead_by_ms: ahead,
                max_skew_ms: self.max_skew_ms,
            })
        } else {
            Ok(())
        }
    }

    /// Moves the clock past `ts` without a skew check: for timestamps this node
    /// already holds (its own persisted state), so a write after a restart still
    /// orders after every write it replaces.
    pub fn witness(&mut self, ts: Timestamp) {
        self.last = self.last.max(ts);
    }

    /// Observes a timestamp from elsewhere so later ticks order after it.
    /// Refuses it, changing nothing, if it is further ahead than the maximum skew.
    pub fn observe(&mut self, ts: Timestamp, wall_ms: u64) -> Result<(), ClockSkew> {
        self.check(ts, wall_ms)?;
        self.last = self.last.max(ts);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_monotone_when_wall_clock_goes_back() {
        let mut c = HybridClock::new(1000);
        let a = c.tick(100);
        let b = c.tick(50);
        let d = c.tick(100);
        assert!(a < b && b < d);
    }

    #[test]
    fn skew_is_refused_and_reported() {
        let mut c = HybridClock::new(1000);
        let far = Timestamp {
            physical_ms: 5000,
            logical: 0,
        };
        let err = c.observe(far, 1000).unwrap_err();
        assert_eq!(err.ahead_by_ms, 4000);
        assert_eq!(c.last(), Timestamp::default());
        c.observe(far, 4500).unwrap();
        assert!(c.tick(0) > far);
    }
}
