//! `mamba-bench metadata`: how fast a metadata change reaches a cluster.
//! Each round creates a topic through one broker and, from the moment the
//! creation is acknowledged, polls every broker's metadata (one request
//! in flight per broker, each on its own thread and connection) until the
//! topic is there. The figure per round is the time until the last broker
//! showed it. The topics are deleted at the end.

use hdrhistogram::Histogram;
use mamba_net::client::{block_on, Admin, ClientError, Connection};
use std::time::{Duration, Instant};

pub struct MetadataOptions {
    /// Client addresses of every broker to watch.
    pub brokers: Vec<String>,
    /// Topic creations to time.
    pub rounds: u32,
}

pub struct MetadataReport {
    /// Acknowledged → visible on every broker, µs.
    pub everywhere_us: Histogram<u64>,
    /// Acknowledged → visible, per broker, µs.
    pub per_broker_us: Vec<(String, Histogram<u64>)>,
    /// Creation request → acknowledged, µs.
    pub create_us: Histogram<u64>,
}

/// A round gives up on a broker that does not show the topic this long.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

pub fn run(options: &MetadataOptions) -> Result<MetadataReport, String> {
    let first = options.brokers.first().ok_or("--brokers names no broker")?;
    let admin = Admin::connect(first).map_err(|e| e.to_string())?;
    let connections: Vec<Connection> = options
        .brokers
        .iter()
        .map(|b| Connection::connect(b, Duration::from_secs(5)).map_err(|e| format!("{b}: {e}")))
        .collect::<Result<_, _>>()?;
    let mut report = MetadataReport {
        everywhere_us: histogram(),
        per_broker_us: options.brokers.iter().map(|b| (b.clone(), histogram())).collect(),
        create_us: histogram(),
    };
    let prefix = format!("bench-metadata-{}", std::process::id());
    let mut created = Vec::new();
    for round in 0..options.rounds {
        let name = format!("{prefix}-{round}");
        let asked = Instant::now();
        block_on(admin.create_topic(&name, 1, vec![]))
            .map_err(|e| format!("create {name}: {e}"))?;
        let acked = Instant::now();
        created.push(name.clone());
        report.create_us.saturating_record(micros(acked - asked));
        let seen: Vec<Result<Duration, String>> = std::thread::scope(|scope| {
            let watchers: Vec<_> = connections
                .iter()
                .map(|connection| {
                    let name = &name;
                    scope.spawn(move || visible_after(connection, name, acked))
                })
                .collect();
            watchers
                .into_iter()
                .map(|w| w.join().unwrap_or(Err("watcher panicked".into())))
                .collect()
        });
        let mut last = Duration::ZERO;
        for ((_, histogram), seen) in report.per_broker_us.iter_mut().zip(seen) {
            let after = seen.map_err(|e| format!("round {round}: {e}"))?;
            histogram.saturating_record(micros(after));
            last = last.max(after);
        }
        report.everywhere_us.saturating_record(micros(last));
    }
    for name in created {
        if let Err(e) = block_on(admin.delete_topic(&name)) {
            eprintln!("deleting {name}: {e}");
        }
    }
    Ok(report)
}

/// How long after `acked` the broker behind `connection` showed `topic`.
fn visible_after(connection: &Connection, topic: &str, acked: Instant) -> Result<Duration, String> {
    loop {
        match block_on(connection.topic_metadata(topic)) {
            Ok(_) => return Ok(acked.elapsed()),
            Err(ClientError::UnknownTopic(_)) => {}
            Err(e) => return Err(format!("{}: {e}", connection.addr())),
        }
        if acked.elapsed() > VISIBLE_TIMEOUT {
            return Err(format!(
                "{}: {topic} not visible after {VISIBLE_TIMEOUT:?}",
                connection.addr()
            ));
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}
