//! `mamba-bench engine`: appends through the embeddable API from one writer
//! per partition, then reads everything back and verifies it.

use crate::stats::{latency_histogram, record_us, LatencyUs};
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use mamba_engine::batch::iter_batches;
use mamba_engine::{
    block_on, Batch, BatchBuilder, Durability, Engine, EngineConfig, NewRecord, Offset,
    PartitionId, TopicConfig,
};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub data_dir: PathBuf,
    pub partitions: u32,
    pub message_bytes: usize,
    pub batch_records: usize,
    pub durability: Durability,
    pub duration: Duration,
    pub shards: Option<u32>,
    pub in_flight: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineReport {
    pub records: u64,
    pub records_per_s: f64,
    /// Message payload bytes appended per second.
    pub bytes_per_s: f64,
    /// Bytes of stored batches (headers and record framing included) per second.
    pub stored_bytes_per_s: f64,
    pub append_latency_us: LatencyUs,
    pub read_bytes_per_s: f64,
    pub verified_records: u64,
}

/// Distinct batches each writer cycles through (building one per append
/// would measure the producer, not the engine).
const TEMPLATES: usize = 16;

fn templates(options: &EngineOptions, writer: u32) -> Result<Vec<Batch>, String> {
    let mut rng = fastrand::Rng::with_seed(u64::from(writer));
    (0..TEMPLATES)
        .map(|t| {
            let mut b = BatchBuilder::new();
            for r in 0..options.batch_records {
                let mut value = vec![0u8; options.message_bytes];
                rng.fill(&mut value);
                b.push(NewRecord {
                    key: Some(format!("w{writer}-t{t}-r{r}").into_bytes()),
                    value,
                    headers: vec![],
                    timestamp_ms: 0,
                });
            }
            b.build().map_err(|e| e.to_string())
        })
        .collect()
}

struct WriterResult {
    histogram: Histogram<u64>,
    records: u64,
    stored_bytes: u64,
}

async fn write(
    engine: Engine,
    topic: String,
    partition: u32,
    batches: Vec<Batch>,
    options: EngineOptions,
) -> Result<WriterResult, String> {
    let mut histogram = latency_histogram();
    let mut records = 0u64;
    let mut stored_bytes = 0u64;
    let mut in_flight = FuturesUnordered::new();
    let start = Instant::now();
    let mut n = 0usize;
    loop {
        while in_flight.len() < options.in_flight && start.elapsed() < options.duration {
            let batch = batches[n % TEMPLATES].clone();
            n += 1;
            let (engine, topic) = (engine.clone(), topic.clone());
            in_flight.push(async move {
                let t = Instant::now();
                let size = batch.as_bytes().len();
                let result = engine.append(&topic, PartitionId(partition), batch).await;
                (t.elapsed(), size, result)
            });
        }
        match in_flight.next().await {
            Some((elapsed, size, result)) => {
                let info = result.map_err(|e| format!("append to partition {partition}: {e}"))?;
                record_us(&mut histogram, elapsed.as_micros() as u64);
                records += info.last_offset.0 - info.base_offset.0 + 1;
                stored_bytes += size as u64;
            }
            None => break,
        }
    }
    Ok(WriterResult { histogram, records, stored_bytes })
}

/// Reads the partition from offset 0 and checks every batch against the
/// templates the writer cycled through, in order.
async fn verify(
    engine: &Engine,
    topic: &str,
    partition: u32,
    batches: &[Batch],
) -> Result<(u64, u64), String> {
    let mut next = Offset(0);
    let mut n = 0usize;
    let mut bytes = 0u64;
    loop {
        let read = engine
            .read(topic, PartitionId(partition), next, 4 << 20)
            .await
            .map_err(|e| format!("read partition {partition} at {next}: {e}"))?;
        if read.chunks.is_empty() {
            return Ok((next.0, bytes));
        }
        for chunk in &read.chunks {
            bytes += chunk.len() as u64;
            for batch in iter_batches(chunk) {
                let batch = batch.map_err(|e| format!("partition {partition} at {next}: {e}"))?;
                if batch.header().base_offset != next {
                    return Err(format!(
                        "partition {partition}: expected offset {next}, got {}",
                        batch.header().base_offset
                    ));
                }
                // Everything from the CRC on is what the writer sent.
                let template = &batches[n % TEMPLATES];
                if batch.as_bytes()[16..] != template.as_bytes()[16..] {
                    return Err(format!(
                        "partition {partition}: batch at {next} differs from what was appended"
                    ));
                }
                n += 1;
                next = batch.header().last_offset().plus(1);
            }
        }
    }
}

pub fn run(options: EngineOptions) -> Result<EngineReport, String> {
    let config = EngineConfig { shards: options.shards, ..EngineConfig::default() };
    let engine = Engine::open(&options.data_dir, config).map_err(|e| e.to_string())?;
    let topic = format!("bench-{}", std::process::id());
    block_on(engine.create_topic(
        &topic,
        TopicConfig {
            partitions: options.partitions,
            durability: options.durability,
            ..TopicConfig::default()
        },
    ))
    .map_err(|e| e.to_string())?;
    let templates: Vec<Vec<Batch>> =
        (0..options.partitions).map(|p| templates(&options, p)).collect::<Result<_, _>>()?;

    let start = Instant::now();
    let writers: Vec<_> = (0..options.partitions)
        .map(|p| {
            let (engine, topic, batches, options) =
                (engine.clone(), topic.clone(), templates[p as usize].clone(), options.clone());
            std::thread::spawn(move || block_on(write(engine, topic, p, batches, options)))
        })
        .collect();
    let mut histogram = latency_histogram();
    let (mut records, mut stored_bytes) = (0u64, 0u64);
    for writer in writers {
        let result = writer.join().map_err(|_| "writer thread panicked".to_string())??;
        histogram.add(&result.histogram).map_err(|e| e.to_string())?;
        records += result.records;
        stored_bytes += result.stored_bytes;
    }
    let elapsed_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let readers: Vec<_> = (0..options.partitions)
        .map(|p| {
            let (engine, topic, batches) =
                (engine.clone(), topic.clone(), templates[p as usize].clone());
            std::thread::spawn(move || block_on(verify(&engine, &topic, p, &batches)))
        })
        .collect();
    let mut verified = 0u64;
    let mut read_bytes = 0u64;
    for reader in readers {
        let (count, bytes) = reader.join().map_err(|_| "reader thread panicked".to_string())??;
        verified += count;
        read_bytes += bytes;
    }
    let read_s = start.elapsed().as_secs_f64();
    if verified != records {
        return Err(format!("read back {verified} records, appended {records}"));
    }
    engine.close().map_err(|e| e.to_string())?;
    Ok(EngineReport {
        records,
        records_per_s: records as f64 / elapsed_s,
        bytes_per_s: (records * options.message_bytes as u64) as f64 / elapsed_s,
        stored_bytes_per_s: stored_bytes as f64 / elapsed_s,
        append_latency_us: LatencyUs::of(&histogram),
        read_bytes_per_s: read_bytes as f64 / read_s.max(1e-9),
        verified_records: verified,
    })
}
