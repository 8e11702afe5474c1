//! Topic settings as named string entries on the wire and in the CLI
//! (`retention.ms=…`), mapped to and from the engine's `TopicConfig`.

use crate::protocol::ConfigEntry;
use mamba_engine::TopicConfig;

/// The names, as users type them.
pub const CONFIG_NAMES: &[&str] =
    &["storage", "durability", "retention.ms", "retention.bytes", "segment.bytes", "segment.ms"];

fn parse_u64(name: &str, value: &str) -> Result<u64, String> {
    value.parse().map_err(|_| format!("{name} must be a whole number, got {value:?}"))
}

/// `none`/`unlimited`/`-1` mean no limit.
fn parse_limit(name: &str, value: &str) -> Result<Option<u64>, String> {
    match value {
        "none" | "unlimited" | "-1" => Ok(None),
        v => parse_u64(name, v).map(Some),
    }
}

/// Applies `entries` to `config`; unknown names and bad values are errors.
pub fn apply(config: &mut TopicConfig, entries: &[ConfigEntry]) -> Result<(), String> {
    for ConfigEntry { name, value } in entries {
        match name.as_str() {
            "storage" => config.storage = value.parse()?,
            "durability" => config.durability = value.parse()?,
            "retention.ms" => config.retention_ms = parse_limit(name, value)?,
            "retention.bytes" => config.retention_bytes = parse_limit(name, value)?,
            "segment.bytes" => config.segment_bytes = parse_u64(name, value)?,
            "segment.ms" => config.segment_ms = parse_u64(name, value)?,
            other => {
                return Err(format!(
                    "unknown topic setting {other:?}; known: {}",
                    CONFIG_NAMES.join(", ")
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
}
