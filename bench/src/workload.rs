//! OpenMessaging Benchmark workload files: `--workload FILE` gives a run
//! the shape one of OMB's `workloads/*.yaml` describes (topics, partitions
//! per topic, message size and payload, key distribution, producers per
//! topic, subscriptions and consumers per subscription, producer rate,
//! duration), so the same file drives Mamba and the brokers OMB knows.
//!
//! Fields are OMB's, spelled as OMB spells them. A misspelt field is an
//! error (OMB would ignore it and run something else); fields Mamba cannot
//! honour yet (a backlog phase) are refused by name.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// OMB's key distributors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyDistributor {
    #[default]
    NoKey,
    KeyRoundRobin,
    RandomNano,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    #[serde(default)]
    pub name: Option<String>,
    pub topics: u32,
    pub partitions_per_topic: u32,
    pub message_size: usize,
    #[serde(default)]
    pub payload_file: Option<PathBuf>,
    #[serde(default)]
    pub use_randomized_payloads: bool,
    #[serde(default)]
    pub random_bytes_ratio: Option<f64>,
    #[serde(default)]
    pub randomized_payload_pool_size: Option<u64>,
    #[serde(default)]
    pub key_distributor: KeyDistributor,
    #[serde(default = "one")]
    pub subscriptions_per_topic: u32,
    pub producers_per_topic: usize,
    #[serde(default = "one_usize")]
    pub consumer_per_subscription: usize,
    /// Messages per second over all producers; 0 = as fast as possible.
    pub producer_rate: f64,
    #[serde(default, rename = "consumerBacklogSizeGB")]
    pub consumer_backlog_size_gb: f64,
    #[serde(default)]
    pub backlog_drain_ratio: Option<f64>,
    pub test_duration_minutes: f64,
    /// OMB warms up for a minute unless told otherwise.
    #[serde(default = "one_minute")]
    pub warmup_duration_minutes: f64,
}

fn one() -> u32 {
    1
}

fn one_usize() -> usize {
    1
}

fn one_minute() -> f64 {
    1.0
}

impl Workload {
    /// Reads and checks a workload file; errors name the file and the
    /// problem in one line.
    pub fn load(path: &Path) -> Result<Workload, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--workload {}: {e}", path.display()))?;
        let workload =
            Workload::parse(&text).map_err(|e| format!("--workload {}: {e}", path.display()))?;
        Ok(workload)
    }

    pub fn parse(text: &str) -> Result<Workload, String> {
        let w: Workload = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        w.check()?;
        Ok(w)
    }

    fn check(&self) -> Result<(), String> {
        let positive = [
            ("topics", self.topics as f64),
            ("partitionsPerTopic", self.partitions_per_topic as f64),
            ("subscriptionsPerTopic", self.subscriptions_per_topic as f64),
            ("consumerPerSubscription", self.consumer_per_subscription as f64),
            ("producersPerTopic", self.producers_per_topic as f64),
            ("testDurationMinutes", self.test_duration_minutes),
        ];
        for (field, value) in positive {
            if value.is_nan() || value <= 0.0 {
                return Err(format!("{field} must be positive, not {value}"));
            }
        }
        if self.producer_rate.is_nan() || self.producer_rate < 0.0 {
            return Err(format!(
                "producerRate must be 0 (as fast as possible) or more, not {}",
                self.producer_rate
            ));
        }
        if self.warmup_duration_minutes.is_nan() || self.warmup_duration_minutes < 0.0 {
            return Err("warmupDurationMinutes must not be negative".into());
        }
        if self.consumer_backlog_size_gb > 0.0 {
            return Err("consumerBacklogSizeGB > 0 (a backlog build-up and drain phase) is not supported yet; use 0".into());
        }
        Ok(())
    }

    /// The payload file, relative to the workload file's directory (where
    /// OMB-style trees keep `payload/`) or else to the current one.
    pub fn payload_path(&self, workload_file: &Path) -> Option<PathBuf> {
        let file = self.payload_file.as_ref()?;
        if file.is_absolute() {
            return Some(file.clone());
        }
        let beside = workload_file.parent().map(|dir| dir.join(file));
        match beside {
            Some(path) if path.exists() => Some(path),
            _ => Some(file.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OMB's own `workloads/1-topic-16-partitions-1kb.yaml`, as shipped.
    const OMB_FILE: &str = r#"
name: 1 topic / 16 partitions / 1Kb

topics: 1
partitionsPerTopic: 16
messageSize: 1024
payloadFile: "payload/payload-1Kb.data"
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 50000
consumerBacklogSizeGB: 0
testDurationMinutes: 15
"#;

    #[test]
    fn an_omb_workload_file_parses_with_omb_defaults() {
        let w = Workload::parse(OMB_FILE).expect("parses");
        assert_eq!(w.name.as_deref(), Some("1 topic / 16 partitions / 1Kb"));
        assert_eq!((w.topics, w.partitions_per_topic, w.message_size), (1, 16, 1024));
        assert_eq!((w.producers_per_topic, w.consumer_per_subscription), (1, 1));
        assert_eq!(w.producer_rate, 50_000.0);
        assert_eq!(w.test_duration_minutes, 15.0);
        assert_eq!(w.warmup_duration_minutes, 1.0);
        assert_eq!(w.key_distributor, KeyDistributor::NoKey);
        assert_eq!(w.payload_file.as_deref(), Some(Path::new("payload/payload-1Kb.data")));
    }

    #[test]
    fn key_distributors_use_omb_names() {
        let w = Workload::parse(&format!("{OMB_FILE}keyDistributor: KEY_ROUND_ROBIN\n"))
            .expect("parses");
        assert_eq!(w.key_distributor, KeyDistributor::KeyRoundRobin);
        let bad = Workload::parse(&format!("{OMB_FILE}keyDistributor: SOMETIMES\n"));
        assert!(bad.expect_err("refused").contains("SOMETIMES"));
    }

    #[test]
    fn mistakes_are_one_clear_line() {
        let typo = Workload::parse(&OMB_FILE.replace("producerRate", "producerRat"))
            .expect_err("a misspelt field is refused");
        assert!(typo.contains("producerRat"), "{typo}");
        let missing = Workload::parse("topics: 1\n").expect_err("incomplete");
        assert!(missing.contains("partitionsPerTopic"), "{missing}");
        let zero =
            Workload::parse(&OMB_FILE.replace("partitionsPerTopic: 16", "partitionsPerTopic: 0"))
                .expect_err("zero partitions");
        assert!(zero.contains("partitionsPerTopic must be positive"), "{zero}");
        let backlog = Workload::parse(
            &OMB_FILE.replace("consumerBacklogSizeGB: 0", "consumerBacklogSizeGB: 10"),
        )
        .expect_err("backlog phase");
        assert!(backlog.contains("not supported"), "{backlog}");
        let garbage = Workload::parse("{{{").expect_err("not YAML");
        assert!(!garbage.is_empty());
    }
}
