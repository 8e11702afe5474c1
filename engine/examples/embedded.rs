//! Embeds the engine: creates a topic, appends from two threads, reads
//! everything back and verifies it, closes, reopens and verifies again.
//!
//! Run with: `cargo run --release --example embedded -p mamba-engine [DATA_DIR]`

use mamba_engine::batch::iter_batches;
use mamba_engine::{
    block_on, BatchBuilder, Engine, EngineConfig, NewRecord, Offset, PartitionId, TopicConfig,
};
use std::collections::BTreeSet;
use std::error::Error;

const THREADS: u32 = 2;
const BATCHES_PER_THREAD: u32 = 200;
const RECORDS_PER_BATCH: u32 = 10;

fn main() -> Result<(), Box<dyn Error>> {
    let temp;
    let dir = match std::env::args().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let engine = Engine::open(&dir, EngineConfig::default())?;
    println!("opened {} with {} shards", dir.display(), engine.shard_count());
    block_on(
        engine.create_topic("events", TopicConfig { partitions: 2, ..TopicConfig::default() }),
    )?;

    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || -> Result<(), mamba_engine::EngineError> {
                for b in 0..BATCHES_PER_THREAD {
                    let mut batch = BatchBuilder::new();
                    for r in 0..RECORDS_PER_BATCH {
                        batch.push(NewRecord {
                            key: Some(format!("writer-{t}").into_bytes()),
                            value: format!("{t}:{b}:{r}").into_bytes(),
                            headers: vec![("source".into(), b"example".to_vec())],
                            timestamp_ms: 1_700_000_000_000 + i64::from(b),
                        });
                    }
                    let info = block_on(engine.append("events", PartitionId(t), batch.build()?))?;
                    assert_eq!(
                        info.last_offset.0 - info.base_offset.0 + 1,
                        u64::from(RECORDS_PER_BATCH)
                    );
                }
                Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.join().map_err(|_| "writer thread panicked")??;
    }
    verify(&engine)?;
    engine.close()?;
    println!("closed; reopening");

    let engine = Engine::open(&dir, EngineConfig::default())?;
    verify(&engine)?;
    engine.close()?;
    println!(
        "ok: {} records survived a close and reopen",
        THREADS * BATCHES_PER_THREAD * RECORDS_PER_BATCH
    );
    Ok(())
}

/// Reads both partitions from the start and checks every record is there
/// once, in the order it was written.
fn verify(engine: &Engine) -> Result<(), Box<dyn Error>> {
    for t in 0..THREADS {
        let mut next = Offset(0);
        let mut seen = BTreeSet::new();
        loop {
            let read = block_on(engine.read("events", PartitionId(t), next, 1 << 20))?;
            if read.chunks.is_empty() {
                break;
            }
            for chunk in &read.chunks {
                for batch in iter_batches(chunk) {
                    for record in batch?.iter() {
                        let expected = format!(
                            "{t}:{}:{}",
                            seen.len() as u32 / RECORDS_PER_BATCH,
                            seen.len() as u32 % RECORDS_PER_BATCH
                        );
                        if record.value() != expected.as_bytes() {
                            return Err(format!(
                                "partition {t} offset {}: expected {expected:?}",
                                record.offset
                            )
                            .into());
                        }
                        seen.insert(record.offset);
                        next = record.offset.plus(1);
                    }
                }
            }
        }
        let want = (BATCHES_PER_THREAD * RECORDS_PER_BATCH) as usize;
        if seen.len() != want {
            return Err(format!("partition {t}: read {} records, wrote {want}", seen.len()).into());
        }
        println!("partition {t}: {want} records verified");
    }
    Ok(())
}
