//! Topic settings as named string entries on the wire and in the CLI
//! (`retention.ms=…`), mapped to and from the engine's `TopicConfig`.

use crate::protocol::ConfigEntry;
use mamba_engine::TopicConfig;

/// The names, as users type them.
pub const CONFIG_NAMES: &[&str] =
    &["storage", "durability", "retention.ms", "retention.bytes", "segment.bytes", "segment.ms"];

/// Settings of the cluster, not of a replica's log: the metadata keeps
/// them with the topic, the engine never sees them.
pub const REPLICATION_NAMES: &[&str] =
    &["replication.factor", "min.insync.replicas", "unclean.leader.election", "leader.placement"];

/// `min.insync.replicas` as a topic's settings say, else a majority of
/// its `replication_factor` (Kafka's default is 1: `acks=all` then
/// survives no failure; a majority survives any minority), at most the
/// replication factor.
pub fn min_insync_replicas(
    configs: &std::collections::BTreeMap<String, String>,
    replication_factor: usize,
) -> usize {
    let majority = replication_factor / 2 + 1;
    configs
        .get("min.insync.replicas")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(majority)
        .clamp(1, replication_factor.max(1))
}

/// Checks the replication settings among `entries` (the engine's are
/// `apply`'s).
pub fn check_replication(entries: &[ConfigEntry]) -> Result<(), String> {
    for ConfigEntry { name, value } in entries {
        match name.as_str() {
            "replication.factor" | "min.insync.replicas" => match value.trim().parse::<u32>() {
                Ok(n) if (1..=16).contains(&n) => {}
                _ => return Err(format!("{name} must be a number from 1 to 16; got {value:?}")),
            },
            "unclean.leader.election" if value != "true" && value != "false" => {
                return Err(format!("{name} must be true or false; got {value:?}"));
            }
            "leader.placement" => {
                let ok = value == "spread"
                    || value.strip_prefix("primary:").is_some_and(|n| n.parse::<u32>().is_ok());
                if !ok {
                    return Err(format!(
                        "{name} must be spread or primary:N (N a broker id); got {value:?}"
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A size in bytes: a whole number, optionally with a unit (`B`, `KB`,
/// `MB`, `GB`, `TB` in powers of 1000; `KiB`, `MiB`, `GiB`, `TiB` in powers
/// of 1024; `k`, `m`, `g` as the binary ones), e.g. `256MiB`, `1 GB`.
pub fn parse_bytes(name: &str, value: &str) -> Result<u64, String> {
    let text = value.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let multiplier: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "m" | "M" => 1 << 20,
        "GiB" | "g" | "G" => 1 << 30,
        "TiB" | "t" | "T" => 1 << 40,
        _ => return Err(bad_bytes(name, value)),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| bad_bytes(name, value))
}

fn bad_bytes(name: &str, value: &str) -> String {
    format!("{name} must be a size in bytes, e.g. 1048576, 256MiB or 1GB; got {value:?}")
}

/// A duration in milliseconds: a whole number of ms, or a duration with
/// units (`500ms`, `30s`, `10m`, `12h`, `7d`, `1h 30m`).
pub fn parse_ms(name: &str, value: &str) -> Result<u64, String> {
    let text = value.trim();
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_duration(text)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            format!(
                "{name} must be milliseconds or a duration, e.g. 60000, 30s, 10m or 7d; got {value:?}"
            )
        })
}

/// `none`/`unlimited`/`-1` mean no limit.
fn parse_limit(
    name: &str,
    value: &str,
    parse: fn(&str, &str) -> Result<u64, String>,
) -> Result<Option<u64>, String> {
    match value {
        "none" | "unlimited" | "-1" => Ok(None),
        v => parse(name, v).map(Some).map_err(|e| format!("{e} (or unlimited)")),
    }
}

/// Applies `entries` to `config`; unknown names and bad values are errors.
pub fn apply(config: &mut TopicConfig, entries: &[ConfigEntry]) -> Result<(), String> {
    for ConfigEntry { name, value } in entries {
        match name.as_str() {
            "storage" => config.storage = value.parse()?,
            "durability" => config.durability = value.parse()?,
            "retention.ms" => config.retention_ms = parse_limit(name, value, parse_ms)?,
            "retention.bytes" => config.retention_bytes = parse_limit(name, value, parse_bytes)?,
            "segment.bytes" => config.segment_bytes = parse_bytes(name, value)?,
            "segment.ms" => config.segment_ms = parse_ms(name, value)?,
            // The cluster's (`check_replication`), kept with the topic.
            n if REPLICATION_NAMES.contains(&n) => {}
            "partitions" => {
                return Err(format!(
                    "partitions={value} is not a setting: a topic's partition count is given at \
                     creation and grows with create_partitions (`mamba topic alter TOPIC --set \
                     partitions=N`)"
                ))
            }
            other => {
                return Err(format!(
                    "unknown topic setting {other:?}; known: {}, {}",
                    CONFIG_NAMES.join(", "),
                    REPLICATION_NAMES.join(", ")
                ))
            }
        }
    }
    Ok(())
}

fn limit(value: Option<u64>) -> String {
    value.map_or_else(|| "unlimited".to_string(), |v| v.to_string())
}

/// Every setting of `config`, by name.
pub fn entries(config: &TopicConfig) -> Vec<ConfigEntry> {
    let e = |name: &str, value: String| ConfigEntry { name: name.to_string(), value };
    vec![
        e("storage", config.storage.to_string()),
        e("durability", config.durability.to_string()),
        e("retention.ms", limit(config.retention_ms)),
        e("retention.bytes", limit(config.retention_bytes)),
        e("segment.bytes", config.segment_bytes.to_string()),
        e("segment.ms", config.segment_ms.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_refused() {
        let mut config = TopicConfig::default();
        let set = |n: &str, v: &str| ConfigEntry { name: n.into(), value: v.into() };
        apply(
            &mut config,
            &[
                set("durability", "interval:50"),
                set("retention.bytes", "1000"),
                set("storage", "memory"),
            ],
        )
        .expect("valid");
        let mut copy = TopicConfig::default();
        apply(&mut copy, &entries(&config)).expect("round trip");
        assert_eq!(copy, config);
        assert!(apply(&mut config, &[set("colour", "blue")]).is_err());
        assert!(apply(&mut config, &[set("segment.bytes", "lots")]).is_err());
    }

    #[test]
    fn sizes_and_durations_take_human_units_and_errors_name_the_key_as_typed() {
        let mut config = TopicConfig::default();
        let set = |n: &str, v: &str| ConfigEntry { name: n.into(), value: v.into() };
        apply(
            &mut config,
            &[
                set("segment.bytes", "256MiB"),
                set("retention.bytes", "1 GB"),
                set("retention.ms", "7d"),
                set("segment.ms", "1h 30m"),
            ],
        )
        .expect("valid");
        assert_eq!(config.segment_bytes, 256 << 20);
        assert_eq!(config.retention_bytes, Some(1_000_000_000));
        assert_eq!(config.retention_ms, Some(7 * 24 * 3600 * 1000));
        assert_eq!(config.segment_ms, 90 * 60 * 1000);
        let error = apply(&mut config, &[set("retention.ms", "a week")]).expect_err("bad");
        assert!(error.starts_with("retention.ms must be") && error.contains("7d"), "{error}");
        let error = apply(&mut config, &[set("segment.bytes", "12 parsecs")]).expect_err("bad");
        assert!(error.contains("256MiB") && error.contains("\"12 parsecs\""), "{error}");
        assert!(parse_bytes("x", "18446744073709551615GiB").is_err(), "overflow is an error");
    }
}
