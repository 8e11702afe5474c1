//! Cluster-wide settings: the ones an operator sets (`mamba cluster config
//! set NAME VALUE`), checked here, and the names of the ones the
//! controller's own commands keep (drained brokers, moves). All are
//! `SetClusterSetting` records in the metadata log.

use super::metadata::{BrokerId, MetadataState};

/// `leader.placement`: `primary:N` (a topic setting, or a cluster one for
/// every topic) makes broker N every partition's preferred leader
/// (active-passive); `spread` (the default) keeps replica order
/// (active-active).
pub const LEADER_PLACEMENT: &str = "leader.placement";

/// `unclean.leader.election` (a topic setting): `true` lets an
/// out-of-sync replica lead when no in-sync one can (it may lose
/// acknowledged records).
pub const UNCLEAN_ELECTION: &str = "unclean.leader.election";

/// `replication.throttle.bytes_per_s`: how fast each broker copies
/// partitions it is catching up on (a moved replica, a follower back from
/// a long absence), so a move does not starve produce and in-sync
/// replication. Unset or 0: as fast as the disk and network go.
pub const REPLICATION_THROTTLE: &str = "replication.throttle.bytes_per_s";

/// `leaders.drained.N` is set while broker N leads only where no other
/// in-sync replica can (`cluster failover --from N`; `cluster failback`
/// removes it).
const DRAINED_PREFIX: &str = "leaders.drained.";

/// The settings `mamba cluster config set` takes, with what they hold.
pub const OPERATOR_SETTINGS: &[(&str, &str)] = &[
    (LEADER_PLACEMENT, "spread (leaders spread over the brokers) or primary:N (every leader on broker N, the others hot standbys)"),
    (REPLICATION_THROTTLE, "bytes per second each broker copies catching-up replicas at (e.g. 50MiB); 0: unthrottled"),
];

/// `value` as `name` stores it (`None`: removed), or why it cannot be.
pub fn check(name: &str, value: Option<&str>) -> Result<Option<String>, String> {
    if !OPERATOR_SETTINGS.iter().any(|(known, _)| *known == name) {
        let known: Vec<&str> = OPERATOR_SETTINGS.iter().map(|(n, _)| *n).collect();
        return Err(format!("unknown cluster setting {name:?}; known: {}", known.join(", ")));
    }
    let Some(value) = value.map(str::trim) else { return Ok(None) };
    match name {
        LEADER_PLACEMENT if value == "spread" || parse_primary(value).is_some() => {
            Ok(Some(value.to_string()))
        }
        LEADER_PLACEMENT => {
            Err(format!("{name} must be spread or primary:N (N a broker id); got {value:?}"))
        }
        _ => crate::topic_config::parse_bytes(name, value).map(|n| Some(n.to_string())),
    }
}

/// The broker of `primary:N`.
pub fn parse_primary(value: &str) -> Option<BrokerId> {
    value.strip_prefix("primary:").and_then(|n| n.trim().parse().ok()).map(BrokerId)
}

/// The cluster-wide primary, if `leader.placement` names one.
pub fn cluster_primary(state: &MetadataState) -> Option<BrokerId> {
    state.setting(LEADER_PLACEMENT).and_then(parse_primary)
}

pub fn drained_setting(broker_id: BrokerId) -> String {
    format!("{DRAINED_PREFIX}{broker_id}")
}

/// Brokers that lead only where no other in-sync replica can: drained by
/// an operator, or decommissioning.
pub fn is_drained(state: &MetadataState, broker_id: BrokerId) -> bool {
    state.broker(broker_id).is_some_and(|b| b.decommissioning)
        || state.setting(&drained_setting(broker_id)).is_some()
}

/// The brokers an operator drained.
pub fn drained(state: &MetadataState) -> Vec<BrokerId> {
    state
        .brokers()
        .map(|b| b.id)
        .filter(|id| state.setting(&drained_setting(*id)).is_some())
        .collect()
}

/// The catch-up throttle in bytes per second; `None`: unthrottled.
pub fn throttle_bytes_per_s(state: &MetadataState) -> Option<u64> {
    state.setting(REPLICATION_THROTTLE).and_then(|v| v.parse().ok()).filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_settings_are_checked_and_normalized() {
        assert_eq!(check(LEADER_PLACEMENT, Some(" primary:2 ")), Ok(Some("primary:2".into())));
        assert!(check(LEADER_PLACEMENT, Some("primary:x")).is_err());
        assert_eq!(check(REPLICATION_THROTTLE, Some("1MiB")), Ok(Some("1048576".into())));
        assert_eq!(check(REPLICATION_THROTTLE, None), Ok(None));
        assert!(check(REPLICATION_THROTTLE, Some("fast")).is_err());
        let unknown = check("leaders.drained.1", None).expect_err("not an operator setting");
        assert!(unknown.contains("unknown cluster setting"), "{unknown}");
    }
}
