//! `mamba-bench rebalance-member` (hidden): one member of a `rebalance`
//! run's group, in its own process so the parent can kill it for real
//! (SIGKILL). It reads until told to leave (a `leave` line, or the end of
//! its input: the parent is gone), then `close`s — commits and leaves the
//! group — and says so. Everything it sees goes to its parent as lines
//! (`member_wire.rs`).
//!
//! Bounded in time: it stops by itself at `deadline`, whatever happens to
//! its parent.

use crate::group_load::{group_options, CommitTimer};
use crate::load::HEADER_BYTES;
use crate::member_wire::{encode, MemberMessage, LEAVE_COMMAND};
use mamba_net::client::{Consumer, ConsumerConfig, OffsetReset, Partitions, RebalanceListener};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct MemberOptions {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub session_timeout_ms: u32,
    /// This member's commit_sync calls per second (0: none but auto commit).
    pub commit_rate_per_s: f64,
    /// It stops by itself after this long.
    pub lifetime: Duration,
}

/// How long a poll waits for records: also how long a `leave` may wait to
/// be seen.
const POLL_WAIT: Duration = Duration::from_millis(50);

fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Lines waiting to go to the parent, shared with the listener (it runs
/// inside `poll`).
type Outbox = Arc<Mutex<String>>;

struct Listener {
    outbox: Outbox,
    topic: String,
}

impl Listener {
    fn tell(&self, partitions: &Partitions, assigned: bool) {
        let partitions: Vec<u32> =
            partitions.get(&self.topic).map(|ps| ps.iter().copied().collect()).unwrap_or_default();
        let at_ns = unix_ns();
        let message = if assigned {
            MemberMessage::Assigned { at_ns, partitions }
        } else {
            MemberMessage::Revoked { at_ns, partitions }
        };
        encode(&message, &mut self.outbox.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

impl RebalanceListener for Listener {
    fn on_assigned(&mut self, _: &mut Consumer, partitions: &Partitions) {
        self.tell(partitions, true);
    }

    fn on_revoked(&mut self, _: &mut Consumer, partitions: &Partitions) {
        self.tell(partitions, false);
    }
}

/// Runs the member; its failures go to the parent as `E` lines too.
pub fn run(options: MemberOptions) -> Result<(), String> {
    let outbox: Outbox = Arc::default();
    let result = member(&options, &outbox);
    if let Err(e) = &result {
        encode(&MemberMessage::Failed { message: e.clone() }, &mut lock(&outbox));
    }
    let flushed = flush(&outbox);
    result.and(flushed)
}

fn lock(outbox: &Outbox) -> std::sync::MutexGuard<'_, String> {
    outbox.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends what waits to the parent. A parent that is gone cannot read it:
/// the member stops.
fn flush(outbox: &Outbox) -> Result<(), String> {
    let text = std::mem::take(&mut *lock(outbox));
    if text.is_empty() {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("telling the parent: {e}"))
}

fn member(options: &MemberOptions, outbox: &Outbox) -> Result<(), String> {
    let leave = Arc::new(AtomicBool::new(false));
    {
        let leave = leave.clone();
        std::thread::Builder::new()
            .name("leave-command".into())
            .spawn(move || {
                let stdin = std::io::stdin();
                for line in stdin.lock().lines() {
                    match line {
                        Ok(line) if line.trim() == LEAVE_COMMAND => break,
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
                // A leave line, or the end of input: the parent is gone.
                leave.store(true, Ordering::Release);
            })
            .map_err(|e| format!("starting the stdin thread: {e}"))?;
    }
    let config =
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&options.brokers, config).map_err(|e| e.to_string())?;
    consumer
        .subscribe(group_options(
            options.group_id.clone(),
            &options.topic,
            options.session_timeout_ms,
            None,
        ))
        .map_err(|e| format!("joining group {}: {e}", options.group_id))?;
    consumer
        .set_rebalance_listener(Box::new(Listener {
            outbox: outbox.clone(),
            topic: options.topic.clone(),
        }))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut commits = CommitTimer::new(options.commit_rate_per_s, started);
    let mut lines = String::new();
    while !leave.load(Ordering::Acquire) {
        if started.elapsed() > options.lifetime {
            return Err(format!(
                "still running after {} s: stopped (the parent should have ended the run)",
                options.lifetime.as_secs()
            ));
        }
        // The records' lines, apart from the outbox: the listener writes
        // there from inside `poll`, before the records it precedes.
        lines.clear();
        consumer
            .poll_each(POLL_WAIT, |d| {
                let value = d.record.value();
                if value.len() < HEADER_BYTES {
                    return;
                }
                let word = |at: usize| {
                    let mut x = [0u8; 8];
                    x.copy_from_slice(&value[at..at + 8]);
                    u64::from_le_bytes(x)
                };
                let producer = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
                let message = MemberMessage::Delivered {
                    at_ns: unix_ns(),
                    partition: d.partition,
                    producer,
                    seq: word(8),
                };
                encode(&message, &mut lines);
            })
            .map_err(|e| format!("poll: {e}"))?;
        lock(outbox).push_str(&lines);
        let committed = match commits.maybe_commit(&mut consumer, true) {
            None => None,
            Some(Ok(latency_us)) => Some(MemberMessage::Committed { latency_us }),
            Some(Err(message)) => Some(MemberMessage::CommitFailed { message }),
        };
        if let Some(message) = committed {
            encode(&message, &mut lock(outbox));
        }
        flush(outbox)?;
    }
    let closed = consumer.close().map_err(|e| format!("leaving the group: {e}"));
    encode(&MemberMessage::Left { at_ns: unix_ns() }, &mut lock(outbox));
    closed
}
