//! `mamba-bench rebalance`: a consumer group under a steady produce rate
//! while members join, leave and die on a schedule; how long each event
//! leaves partitions without a reader, what was read twice, and that
//! nothing was lost.
//!
//! Every member is a child process (`rebalance-member`, this binary again)
//! so a kill is a real SIGKILL; a leave is a `leave` line on its input.
//! Members report on their output what they gain, give up and deliver
//! (`member_wire.rs`); one reader thread per member passes the lines to
//! the run's loop, which keeps the books (`ownership.rs`), starts the
//! events, and samples the lag.
//!
//! Lifecycle: members join and settle, the producer starts, then the
//! events run one at a time (the next starts `event_interval` after the
//! last began, and not before it settled or ran out of time); the
//! producer stops, the members read what is left, leave, and the broker
//! (if embedded) stops. Every child is killed on every way out
//! (`Members` drop): errors, panics, and SIGINT/SIGTERM of the parent
//! (seen by the loop). A member whose input closes (its parent died in a
//! way no handler sees) leaves by itself.

use crate::group_load::{fresh_group_id, start_at_end};
use crate::load::{self, LoadOptions, ProducerResult};
use crate::member_wire::{self, MemberMessage, LEAVE_COMMAND};
use crate::ownership::{EventKind, EventRecord, Ownership};
use crate::stats::{latency_histogram, record_us, LatencyUs};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RebalanceOptions {
    /// Topic, partitions, rate, message size, producers... of the load;
    /// its consumers are the members below.
    pub load: LoadOptions,
    pub members: usize,
    pub schedule: Vec<EventKind>,
    pub event_interval: Duration,
    pub session_timeout_ms: u32,
    /// `commit_sync` calls per second over all members.
    pub commit_rate_per_s: f64,
    /// `None`: a fresh group.
    pub group_id: Option<String>,
    /// The path of this binary, re-run as each member.
    pub member_exe: std::path::PathBuf,
}

/// How often the lag is sampled.
const LAG_SAMPLE: Duration = Duration::from_millis(200);
/// How long members may take to form the group before the load starts.
const FORMING_MAX: Duration = Duration::from_secs(30);
/// Load before the first event.
const WARMUP: Duration = Duration::from_secs(1);
/// Beyond the session timeout, how long an event may take to settle.
const EVENT_SLACK: Duration = Duration::from_secs(15);
/// How long members may take to read what is left after the producer
/// stopped, and to leave.
const DRAIN_MAX: Duration = Duration::from_secs(20);
const LEAVE_MAX: Duration = Duration::from_secs(10);

/// The members' processes; every one still running is killed on drop.
struct Members {
    children: BTreeMap<usize, Child>,
    inputs: BTreeMap<usize, ChildStdin>,
    exe: std::path::PathBuf,
    args: Vec<String>,
    lines: Sender<(usize, Line)>,
}

/// What a reader thread passes on.
enum Line {
    Message(MemberMessage),
    Garbled(String),
    /// The member's output ended: it exited.
    Closed,
}

impl Members {
    fn spawn(&mut self, index: usize) -> Result<(), String> {
        let mut child = Command::new(&self.exe)
            .arg("rebalance-member")
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting member {index} ({}): {e}", self.exe.display()))?;
        let stdout = child.stdout.take().ok_or("a member's output was not piped")?;
        let stdin = child.stdin.take().ok_or("a member's input was not piped")?;
        self.children.insert(index, child);
        self.inputs.insert(index, stdin);
        let lines = self.lines.clone();
        std::thread::Builder::new()
            .name(format!("member-{index}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let parsed = match member_wire::parse(&line) {
                        Ok(m) => Line::Message(m),
                        Err(e) => Line::Garbled(e),
                    };
                    if lines.send((index, parsed)).is_err() {
                        return;
                    }
                }
                // The run may be over and no one listening: nothing to tell.
                if lines.send((index, Line::Closed)).is_err() {}
            })
            .map_err(|e| format!("starting member {index}'s reader: {e}"))?;
        Ok(())
    }

    /// Asks a member to leave the group (it commits, leaves, exits).
    fn leave(&mut self, index: usize) -> Result<(), String> {
        let Some(mut input) = self.inputs.remove(&index) else { return Ok(()) };
        // Closing its input (dropping `input`) means the same to it.
        input
            .write_all(format!("{LEAVE_COMMAND}\n").as_bytes())
            .map_err(|e| format!("telling member {index} to leave: {e}"))
    }

    /// SIGKILL: the member neither commits nor leaves.
    fn kill(&mut self, index: usize) -> Result<(), String> {
        self.inputs.remove(&index);
        let Some(mut child) = self.children.remove(&index) else { return Ok(()) };
        child.kill().map_err(|e| format!("killing member {index}: {e}"))?;
        child.wait().map_err(|e| format!("waiting for member {index}: {e}"))?;
        Ok(())
    }

    /// Reaps a member whose output closed.
    fn reap(&mut self, index: usize) -> Result<std::process::ExitStatus, String> {
        self.inputs.remove(&index);
        match self.children.remove(&index) {
            Some(mut child) => child.wait().map_err(|e| format!("waiting for member {index}: {e}")),
            None => Ok(std::process::ExitStatus::default()),
        }
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        self.inputs.clear();
        for (index, child) in &mut self.children {
            // Already gone is fine; any other failure leaves a process
            // behind, which the member's own deadline then ends.
            if let Err(e) = child.kill() {
                if e.kind() != std::io::ErrorKind::InvalidInput {
                    eprintln!("mamba-bench: killing member {index}: {e}");
                }
            }
            if let Err(e) = child.wait() {
                eprintln!("mamba-bench: waiting for member {index}: {e}");
            }
        }
    }
}

/// p50 and max of a few figures (nearest rank).
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub max: f64,
    pub count: usize,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let p50 = sorted[(sorted.len() - 1) / 2];
        Some(Spread { p50, max: sorted[sorted.len() - 1], count: sorted.len() })
    }
}

/// The figures of one kind of event.
#[derive(Debug, Clone, Serialize)]
pub struct KindSummary {
    pub events: usize,
    /// Events that never settled within their time.
    pub unsettled: usize,
    pub owned_again_ms: Option<Spread>,
    pub resumed_ms: Option<Spread>,
    /// Kill: resumed minus the session timeout (what detection and the
    /// hand-over cost beyond it).
    pub resumed_after_session_ms: Option<Spread>,
    pub duplicated: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LagPoint {
    pub elapsed_s: f64,
    /// Acknowledged but not yet delivered.
    pub records: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RebalanceDelivery {
    pub acknowledged: u64,
    pub delivered: u64,
    pub lost: u64,
    /// Read again after a partition moved (all of them: every duplicate
    /// here follows a rebalance — the group forming or an event).
    pub duplicated_across_rebalances: u64,
    pub duplicated_while_forming: u64,
    pub out_of_order: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommitSummary {
    pub failed: u64,
    pub latency_us: LatencyUs,
}

#[derive(Debug, Clone, Serialize)]
pub struct RebalanceReport {
    pub group_id: String,
    pub partitions: u32,
    pub produce: Option<load::Section>,
    pub events: Vec<EventRecord>,
    pub by_kind: BTreeMap<&'static str, KindSummary>,
    pub delivery: RebalanceDelivery,
    pub commit: Option<CommitSummary>,
    pub lag: Vec<LagPoint>,
    /// Seconds after the producer started, per event (for the plot).
    pub event_times_s: Vec<(f64, &'static str)>,
}

impl RebalanceReport {
    /// What makes the run fail: anything lost or reordered, an event that
    /// never settled.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.delivery.lost > 0 {
            failures.push(format!("{} acknowledged records lost", self.delivery.lost));
        }
        if self.delivery.out_of_order > 0 {
            failures.push(format!("{} records out of order", self.delivery.out_of_order));
        }
        let unsettled: usize = self.by_kind.values().map(|k| k.unsettled).sum();
        if unsettled > 0 {
            failures.push(format!("{unsettled} events never settled"));
        }
        failures
    }
}

/// The state of the run's loop.
struct Run {
    ownership: Ownership,
    commit_latency: hdrhistogram::Histogram<u64>,
    commits_failed: u64,
    /// Members told to leave or killed: their exit is expected.
    departed: std::collections::BTreeSet<usize>,
}

impl Run {
    /// Takes one member line; an error ends the run.
    fn take(&mut self, members: &mut Members, index: usize, line: Line) -> Result<(), String> {
        match line {
            Line::Message(MemberMessage::Assigned { at_ns, partitions }) => {
                self.ownership.assigned(index, at_ns, &partitions);
            }
            Line::Message(MemberMessage::Revoked { at_ns, partitions }) => {
                self.ownership.revoked(index, at_ns, &partitions);
            }
            Line::Message(MemberMessage::Delivered { at_ns, partition, producer, seq }) => {
                self.ownership.delivered(index, at_ns, partition, producer, seq);
            }
            Line::Message(MemberMessage::Committed { latency_us }) => {
                record_us(&mut self.commit_latency, latency_us);
            }
            Line::Message(MemberMessage::CommitFailed { .. }) => self.commits_failed += 1,
            Line::Message(MemberMessage::Left { .. }) => {}
            Line::Message(MemberMessage::Failed { message }) => {
                return Err(format!("member {index} failed: {message}"));
            }
            Line::Garbled(e) => return Err(e),
            Line::Closed => {
                let status = members.reap(index)?;
                if !self.departed.contains(&index) {
                    return Err(format!("member {index} exited on its own ({status})"));
                }
            }
        }
        Ok(())
    }

    /// Takes every line that arrives within `wait`.
    fn drain(
        &mut self,
        members: &mut Members,
        lines: &Receiver<(usize, Line)>,
        wait: Duration,
    ) -> Result<(), String> {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok((index, line)) => self.take(members, index, line)?,
                Err(RecvTimeoutError::Timeout) => return Ok(()),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("every member reader stopped".into())
                }
            }
            // Never starve the loop's clock: stop once the time is up even
            // while lines keep coming.
            if Instant::now() >= until {
                return Ok(());
            }
        }
    }
}

pub fn run(options: RebalanceOptions) -> Result<RebalanceReport, String> {
    if options.members == 0 {
        return Err("--consumers must be at least 1".into());
    }
    let mut live = options.members;
    for kind in &options.schedule {
        match kind {
            EventKind::Join => live += 1,
            EventKind::Leave | EventKind::Kill => {
                live = live.checked_sub(1).filter(|n| *n > 0).ok_or(
                    "the schedule would leave the group without members; add a join first",
                )?;
            }
        }
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, interrupted.clone())
            .map_err(|e| format!("handling signal {signal}: {e}"))?;
    }
    let (brokers, embedded) = load::target(&options.load)?;
    let topic = options.load.topic.clone();
    let partitions = load::ensure_topic(&brokers, &topic, &options.load)?;
    let group_id = options.group_id.clone().unwrap_or_else(fresh_group_id);
    // Members start where the producer will: at the end of the log.
    start_at_end(&brokers, &group_id, &topic, partitions)?;
    let load_options = LoadOptions { partitions, producers: 1, topics: 1, ..options.load.clone() };
    let report = run_group(&options, &load_options, &brokers, &group_id, partitions, &interrupted);
    if let Some(embedded) = embedded {
        embedded.node.stop().map_err(|e| e.to_string())?;
    }
    report
}

fn run_group(
    options: &RebalanceOptions,
    load_options: &LoadOptions,
    brokers: &str,
    group_id: &str,
    partitions: u32,
    interrupted: &AtomicBool,
) -> Result<RebalanceReport, String> {
    let interrupt = || {
        if interrupted.load(Ordering::Relaxed) {
            Err("interrupted; the members were stopped".to_string())
        } else {
            Ok(())
        }
    };
    // A member's own bound: the whole run's worst case, and a margin.
    let event_max = Duration::from_millis(u64::from(options.session_timeout_ms)) + EVENT_SLACK;
    let lifetime = FORMING_MAX
        + WARMUP
        + (options.event_interval + event_max) * options.schedule.len() as u32
        + DRAIN_MAX
        + LEAVE_MAX
        + Duration::from_secs(60);
    let per_member_commits = options.commit_rate_per_s / options.members as f64;
    let (sender, lines) = channel();
    let mut members = Members {
        children: BTreeMap::new(),
        inputs: BTreeMap::new(),
        exe: options.member_exe.clone(),
        args: vec![
            "--brokers".into(),
            brokers.to_string(),
            "--topic".into(),
            load_options.topic.clone(),
            "--group".into(),
            group_id.to_string(),
            "--session-timeout-ms".into(),
            options.session_timeout_ms.to_string(),
            "--commit-rate".into(),
            per_member_commits.to_string(),
            "--lifetime-s".into(),
            lifetime.as_secs().to_string(),
        ],
        lines: sender,
    };
    let mut run = Run {
        ownership: Ownership::new(partitions),
        commit_latency: latency_histogram(),
        commits_failed: 0,
        departed: Default::default(),
    };
    for index in 0..options.members {
        members.spawn(index)?;
        run.ownership.add_member(index);
    }
    let forming = Instant::now();
    while !run.ownership.balanced() {
        interrupt()?;
        if forming.elapsed() > FORMING_MAX {
            return Err(format!(
                "the group did not hand out every partition within {} s",
                FORMING_MAX.as_secs()
            ));
        }
        run.drain(&mut members, &lines, Duration::from_millis(10))?;
    }

    let live = Arc::new(load::Live::default());
    let stop = AtomicBool::new(false);
    let topics = vec![load_options.topic.clone()];
    let mut lag = Vec::new();
    let mut event_times_s = Vec::new();
    let mut abandoned = Vec::new();
    let (produce, acked) = std::thread::scope(|s| -> Result<_, String> {
        let producer_start = Instant::now();
        let producers =
            load::spawn_producers(s, &topics, brokers, load_options, producer_start, &stop, &live);
        // Producers stop on every way out of this closure.
        let result = (|| -> Result<(), String> {
            let mut next_sample = producer_start;
            let mut next_event_at = producer_start + WARMUP;
            let mut event_deadline = None;
            let mut next_member = options.members;
            let sample = |run: &Run, lag: &mut Vec<LagPoint>| {
                let acked = live.acked.load(Ordering::Relaxed);
                lag.push(LagPoint {
                    elapsed_s: producer_start.elapsed().as_secs_f64(),
                    records: acked.saturating_sub(run.ownership.distinct_delivered),
                });
            };
            let mut schedule = options.schedule.iter();
            loop {
                interrupt()?;
                run.drain(&mut members, &lines, Duration::from_millis(5))?;
                let now = Instant::now();
                if now >= next_sample {
                    sample(&run, &mut lag);
                    next_sample += LAG_SAMPLE;
                }
                if !run.ownership.event_done() {
                    if event_deadline.is_some_and(|d| now > d) {
                        abandoned.push(run.ownership.events().len() - 1);
                        run.ownership.abandon_event();
                    } else {
                        continue;
                    }
                }
                if now < next_event_at {
                    continue;
                }
                let Some(&kind) = schedule.next() else { break };
                let member = match kind {
                    EventKind::Join => {
                        next_member += 1;
                        next_member - 1
                    }
                    // The longest-serving member goes.
                    EventKind::Leave | EventKind::Kill => {
                        *run.ownership.live().first().ok_or("no member left to remove")?
                    }
                };
                let at_ns = load::unix_ns();
                run.ownership.start_event(kind, member, at_ns);
                event_times_s.push((producer_start.elapsed().as_secs_f64(), kind.name()));
                match kind {
                    EventKind::Join => members.spawn(member)?,
                    EventKind::Leave => {
                        run.departed.insert(member);
                        members.leave(member)?;
                    }
                    EventKind::Kill => {
                        run.departed.insert(member);
                        members.kill(member)?;
                    }
                }
                next_event_at = now + options.event_interval;
                event_deadline = Some(now + event_max);
            }
            // One more interval of load after the last event, for the plot.
            let tail_end = Instant::now() + options.event_interval;
            while Instant::now() < tail_end {
                interrupt()?;
                run.drain(&mut members, &lines, LAG_SAMPLE)?;
                sample(&run, &mut lag);
            }
            Ok(())
        })();
        stop.store(true, Ordering::Release);
        let mut acked = Vec::new();
        let mut histogram = latency_histogram();
        let mut measured = 0;
        for h in producers {
            let r: ProducerResult = h.join().map_err(|_| "producer thread panicked")??;
            histogram.add(&r.histogram).map_err(|e| e.to_string())?;
            measured += r.measured;
            acked.push(r.acked);
        }
        result?;
        let window = producer_start.elapsed().saturating_sub(load_options.warmup);
        let bytes = measured * load_options.message_bytes as u64;
        Ok((Some(load::section(measured, bytes, window, Some(&histogram))), acked))
    })?;

    // What is left to read, then every member leaves.
    let acknowledged: u64 = acked.iter().map(crate::delivery::SeqSet::len).sum();
    let draining = Instant::now();
    while run.ownership.distinct_delivered < acknowledged && draining.elapsed() < DRAIN_MAX {
        interrupt()?;
        run.drain(&mut members, &lines, Duration::from_millis(50))?;
    }
    let remaining: Vec<usize> = run.ownership.live().iter().copied().collect();
    for index in remaining {
        run.departed.insert(index);
        members.leave(index)?;
    }
    let leaving = Instant::now();
    while !members.children.is_empty() && leaving.elapsed() < LEAVE_MAX {
        run.drain(&mut members, &lines, Duration::from_millis(50))?;
    }
    if !members.children.is_empty() {
        eprintln!(
            "mamba-bench: {} members did not leave within {} s; killed",
            members.children.len(),
            LEAVE_MAX.as_secs()
        );
    }
    drop(members);

    let events = run.ownership.events().to_vec();
    let mut by_kind = BTreeMap::new();
    for kind in [EventKind::Join, EventKind::Leave, EventKind::Kill] {
        let of_kind: Vec<(usize, &EventRecord)> =
            events.iter().enumerate().filter(|(_, e)| e.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let owned: Vec<f64> = of_kind.iter().filter_map(|(_, e)| e.owned_again_ms).collect();
        let resumed: Vec<f64> = of_kind.iter().filter_map(|(_, e)| e.resumed_ms).collect();
        let session_ms = f64::from(options.session_timeout_ms);
        let after_session: Vec<f64> = resumed.iter().map(|r| r - session_ms).collect();
        by_kind.insert(
            kind.name(),
            KindSummary {
                events: of_kind.len(),
                unsettled: of_kind
                    .iter()
                    .filter(|(i, e)| abandoned.contains(i) || e.resumed_ms.is_none())
                    .count(),
                owned_again_ms: Spread::of(&owned),
                resumed_ms: Spread::of(&resumed),
                resumed_after_session_ms: (kind == EventKind::Kill)
                    .then(|| Spread::of(&after_session))
                    .flatten(),
                duplicated: of_kind.iter().map(|(_, e)| e.duplicated).sum(),
            },
        );
    }
    let commit = (options.commit_rate_per_s > 0.0).then(|| CommitSummary {
        failed: run.commits_failed,
        latency_us: LatencyUs::of(&run.commit_latency),
    });
    Ok(RebalanceReport {
        group_id: group_id.to_string(),
        partitions,
        produce,
        delivery: RebalanceDelivery {
            acknowledged,
            delivered: run.ownership.distinct_delivered + run.ownership.duplicated(),
            lost: run.ownership.lost(&acked),
            duplicated_across_rebalances: run.ownership.duplicated(),
            duplicated_while_forming: run.ownership.duplicated_before_events,
            out_of_order: run.ownership.out_of_order(),
        },
        events,
        by_kind,
        commit,
        lag,
        event_times_s,
    })
}
