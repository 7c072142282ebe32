//! Checking a configuration once, before anything runs on it: each setting
//! against the range it must lie in, with an error that names the setting,
//! the value and the range. The CLI, `Node::start`, `Store::open` and the
//! simulator all call these.

use crate::{KeyspaceConfig, ReplicaConfig};

/// A setting out of its range. Nothing was started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value} is out of range: it must be from {min} to {max}")]
pub struct ConfigError {
    /// The setting, as the configuration file names it.
    pub field: &'static str,
    /// Its value.
    pub value: u64,
    /// The least value allowed.
    pub min: u64,
    /// The greatest value allowed.
    pub max: u64,
}

/// Checks that `value` lies in `min..=max`.
pub fn check_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError {
            field,
            value,
            min,
            max,
        })
    }
}

fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The largest record read back from storage: no state or delta accepted
/// may be larger.
const MAX_RECORD: u64 = atoll_store::MAX_RECORD_LEN as u64;

impl ReplicaConfig {
    /// Checks every setting against its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("max_batch_bytes", wide(self.max_batch_bytes), 1, 256 << 20)?;
        check_range(
            "max_batch_entries",
            wide(self.max_batch_entries),
            1,
            1 << 20,
        )?;
        check_range(
            "max_message_len",
            wide(self.max_message_len),
            1024,
            MAX_RECORD,
        )?;
        check_range("retransmit_ms", self.retransmit_ms, 1, 3_600_000)?;
        check_range("max_in_flight", wide(self.max_in_flight), 1, 4096)?;
        check_range(
            "max_queued_transmits",
            wide(self.max_queued_transmits),
            1,
            1 << 20,
        )?;
        check_range("gossip_interval_ms", self.gossip_interval_ms, 0, 3_600_000)?;
        check_range(
            "state_part_bytes",
            wide(self.state_part_bytes),
            1,
            MAX_RECORD,
        )?;
        check_range("max_state_len", wide(self.max_state_len), 1, MAX_RECORD)?;
        check_range("request_timeout_ms", self.request_timeout_ms, 1, 3_600_000)?;
        check_range(
            "max_requests_per_peer",
            wide(self.max_requests_per_peer),
            1,
            1 << 20,
        )?;
        check_range("answers_kept", wide(self.answers_kept), 1, 1 << 24)?;
        let m = &self.migration;
        // A share of half or less could move a variable back and forth
        // between two nodes that use it equally.
        check_range("migrate_share_pct", u64::from(m.share_pct), 51, 100)?;
        check_range("migrate_window_ms", m.window_ms, 1, 86_400_000)?;
        check_range("migrate_cooldown_ms", m.cooldown_ms, 0, 86_400_000)?;
        let r = &self.rebalance;
        check_range("rebalance_every_ms", r.every_ms, 0, 86_400_000)?;
        check_range("rebalance_max_moves", wide(r.max_moves), 1, 1 << 20)?;
        Ok(())
    }
}

impl KeyspaceConfig {
    /// Checks every setting against its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("max_delta_len", wide(self.max_delta_len), 1, MAX_RECORD)?;
        check_range("checkpoint_every", self.checkpoint_every, 1, u64::MAX)?;
        check_range("log_retain", self.log_retain, 1, u64::MAX)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_each_bound_is_checked() {
        ReplicaConfig::default().validate().unwrap();
        KeyspaceConfig::default().validate().unwrap();
        let e = ReplicaConfig {
            max_in_flight: 0,
            ..ReplicaConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "max_in_flight = 0 is out of range: it must be from 1 to 4096"
        );
        let e = ReplicaConfig {
            max_state_len: (MAX_RECORD + 1) as usize,
            ..ReplicaConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "max_state_len");
        let e = KeyspaceConfig {
            log_retain: 0,
            ..KeyspaceConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "log_retain");
    }
}
