//! `verify --faults CMD`: faults struck while the workload runs, chosen at
//! random from a seed (printed, so a schedule can be replayed), each
//! healed before the next, and each recorded in the history as a window.
//!
//! The faults themselves are the command's: verify knows nothing of how
//! brokers run (processes, namespaces, containers). It runs
//!
//!     CMD start KIND     # prints what it struck, e.g. "broker 2"
//!     CMD heal KIND      # undoes the fault in force
//!     CMD heal-all       # at the end: undoes everything, whatever it was
//!
//! with `MAMBA_FAULT_SEED` set to a number drawn from the seed, for the
//! command's own choices (which broker). `ci/faults/` holds the command
//! for a cluster in network namespaces.

use super::history::Event;
use super::workload::Recorder;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What faults strike, and how often.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub command: PathBuf,
    pub kinds: Vec<String>,
    pub seed: u64,
    /// Time between one fault's heal and the next fault, at most (drawn
    /// from half of it to all of it).
    pub quiet: Duration,
    /// How long a fault lasts, at most (drawn from half of it to all).
    pub length: Duration,
}

/// Bound on one run of the command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the command once; answers what it printed.
fn run_command(plan: &FaultPlan, args: &[&str], seed: u64) -> Result<String, String> {
    let shown = format!("{} {}", plan.command.display(), args.join(" "));
    let mut child = Command::new(&plan.command)
        .args(args)
        .env("MAMBA_FAULT_SEED", seed.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{shown}: {e}"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait().map_err(|e| format!("{shown}: {e}"))? {
            Some(status) => {
                let mut out = String::new();
                if let Some(mut stdout) = child.stdout.take() {
                    let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
                }
                if !status.success() {
                    return Err(format!("{shown}: {status}: {}", out.trim()));
                }
                return Ok(out.trim().to_string());
            }
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown}: no answer within {COMMAND_TIMEOUT:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Sleeps `wait`, or less once `stop` is set; answers whether it is.
fn sleep_unless(stop: &AtomicBool, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    stop.load(Ordering::Relaxed)
}

/// Strikes and heals faults until `stop`, then heals everything. Answers
/// how many struck; a command that fails ends the schedule with an error
/// (after the heal-all).
pub fn run(plan: &FaultPlan, recorder: &Recorder, stop: &AtomicBool) -> Result<u64, String> {
    if plan.kinds.is_empty() {
        return Err("--fault-kinds is empty".into());
    }
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let draw = |rng: &mut fastrand::Rng, most: Duration| -> Duration {
        let ms = u64::try_from(most.as_millis()).unwrap_or(u64::MAX).max(2);
        Duration::from_millis(rng.u64(ms / 2..=ms))
    };
    let mut struck = 0;
    let outcome = loop {
        if sleep_unless(stop, draw(&mut rng, plan.quiet)) {
            break Ok(struck);
        }
        let kind = plan.kinds[rng.usize(..plan.kinds.len())].clone();
        let seed = rng.u64(..);
        let start_ms = recorder.now_ms();
        let target = match run_command(plan, &["start", &kind], seed) {
            Ok(target) => target,
            Err(e) => break Err(e),
        };
        struck += 1;
        eprintln!("mamba-bench: fault {struck}: {kind} {target} at {start_ms} ms");
        sleep_unless(stop, draw(&mut rng, plan.length));
        let healed = run_command(plan, &["heal", &kind], seed);
        recorder.record(Event::Fault { start_ms, end_ms: recorder.now_ms(), kind, target });
        if let Err(e) = healed {
            break Err(e);
        }
    };
    let all = run_command(plan, &["heal-all"], 0);
    let struck = outcome?;
    all?;
    Ok(struck)
}
