//! `mamba log dump|check|recover`: offline tools over segment files, using
//! the engine's own scanning and recovery code.

use crate::cli::{CliError, Output, OutputArgs};
use clap::Subcommand;
use mamba_engine::inspect::{self, BatchInfo, Damage, Finding};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct LogArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(subcommand)]
    command: LogCommand,
}

#[derive(Subcommand)]
pub enum LogCommand {
    /// Print one line per batch: file, offsets, record count, position,
    /// size, timestamps and whether its CRC checks out.
    Dump {
        /// A data directory, a topic directory (<data-dir>/topics/<topic>)
        /// or a partition directory (<data-dir>/topics/<topic>/<partition>).
        path: PathBuf,
        /// Also print each record (key, value, headers; bytes that are not
        /// printable ASCII are shown escaped, e.g. \xff).
        #[arg(long)]
        records: bool,
    },
    /// Verify every batch and index. Exit 0 when the data is intact (stale
    /// index entries, which the broker rebuilds at start, are only noted),
    /// 1 when a batch is torn or corrupt (with the file, byte position and
    /// the offset where valid data ends), 2 when the files cannot be read.
    /// Reads without the data directory's lock: on a running broker the
    /// newest batches may still be in flight.
    Check {
        /// A data directory, a topic directory (<data-dir>/topics/<topic>)
        /// or a partition directory (<data-dir>/topics/<topic>/<partition>).
        path: PathBuf,
    },
    /// Verify every batch as `check` does and repair what the broker would
    /// repair at start: cut a torn tail past the recovery point, rebuild
    /// stale indexes. Other damage (in a closed segment, or below the
    /// recovery point) is reported and left alone unless --force. Takes the
    /// data directory's lock: refuses while a broker runs on it.
    Recover {
        /// A data directory, a topic directory (<data-dir>/topics/<topic>)
        /// or a partition directory (<data-dir>/topics/<topic>/<partition>).
        path: PathBuf,
        /// Also repair corruption by cutting the log at the first bad
        /// batch; later segments are deleted (their data is lost). The
        /// broker never does this on its own.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: LogArgs) -> ExitCode {
    let output = args.output.output;
    let result = match args.command {
        LogCommand::Dump { path, records } => {
            note_if_live(&path);
            dump(&path, records, output)
        }
        LogCommand::Check { path } => {
            note_if_live(&path);
            check(&path, output)
        }
        LogCommand::Recover { path, force } => {
            lock(&path).and_then(|_lock| recover(&path, force, output))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Files that cannot be read exit 2, as `check` documents.
            CliError::io(format!("log: {e}")).report(output);
            ExitCode::from(2)
        }
    }
}

/// The outcome of writing to standard output; a closed pipe (`| head`)
/// ends the process quietly with status 0.
fn written(result: std::io::Result<()>) -> Result<(), String> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(format!("writing to standard output: {e}")),
    }
}

/// Takes the lock of the data directory `path` lies in, as a broker does.
fn lock(path: &Path) -> Result<Option<std::fs::File>, String> {
    let Some(data_dir) = inspect::find_data_dir(path) else { return Ok(None) };
    mamba_engine::engine::lock_data_dir(&data_dir).map(Some).map_err(|e| {
        format!("{e}: stop the broker before `mamba log recover` (it rewrites the broker's files)")
    })
}

/// Says so when a broker holds the data directory: reading works, but the
/// newest batches may be mid-write.
fn note_if_live(path: &Path) {
    if let Some(data_dir) = inspect::find_data_dir(path) {
        if mamba_engine::engine::lock_data_dir(&data_dir).is_err() {
            eprintln!(
                "note: a broker is running on {} (its lock is held); reading it live, without the lock: the newest batches may be mid-write",
                data_dir.display()
            );
        }
    }
}

/// Bytes as text that is safe on any terminal and in JSON.
fn printable(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn print_batch(out: &mut impl Write, b: &BatchInfo, output: Output) -> std::io::Result<()> {
    match output {
        Output::Json => {
            let mut line = serde_json::to_value(b).unwrap_or_default();
            if let Some(records) = &b.records {
                line["records"] = records
                    .iter()
                    .map(|r| {
                        json!({
                            "offset": r.offset,
                            "timestamp_ms": r.timestamp_ms,
                            "key": r.key.as_deref().map(printable),
                            "value": printable(&r.value),
                            "headers": r.headers.iter().map(|(k, v)| json!({"name": k, "value": printable(v)})).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
            }
            writeln!(out, "{line}")
        }
        Output::Text => {
            writeln!(
                out,
                "{} offset {}..={} records {} position {} size {} timestamps {}..{} crc {}",
                b.file.display(),
                b.base_offset,
                b.last_offset,
                b.record_count,
                b.position_bytes,
                b.size_bytes,
                b.first_timestamp_ms,
                b.max_timestamp_ms,
                if b.crc_ok { "ok" } else { "BAD" }
            )?;
            for r in b.records.iter().flatten() {
                let headers: Vec<String> =
                    r.headers.iter().map(|(k, v)| format!("{k}={}", printable(v))).collect();
                writeln!(
                    out,
                    "  offset {} timestamp {} key {} value {} headers [{}]",
                    r.offset,
                    r.timestamp_ms,
                    r.key.as_deref().map_or_else(|| "(none)".to_string(), printable),
                    printable(&r.value),
                    headers.join(", ")
                )?;
            }
            Ok(())
        }
    }
}

fn print_finding(out: &mut impl Write, f: &Finding, output: Output) -> std::io::Result<()> {
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_value(f).unwrap_or_default()),
        Output::Text if !f.damaged_log => writeln!(
            out,
            "{}: {} (not damage: rebuilt from the log at open)",
            f.file.display(),
            f.problem
        ),
        Output::Text => writeln!(
            out,
            "{}: {}; valid data ends at byte {} (offset {})",
            f.file.display(),
            f.problem,
            f.valid_end_bytes,
            f.valid_end_offset
        ),
    }
}

/// Runs `work` over every partition directory under `path` on one offline
/// executor (one per partition would leave each one's closing descriptors
/// behind, thousands of them on a large data directory).
fn for_each_partition<T: Send + 'static>(
    path: &Path,
    work: impl AsyncFnMut(PathBuf) -> Result<T, String> + Send + 'static,
) -> Result<Vec<T>, String> {
    let dirs = inspect::partition_dirs(path).map_err(|e| e.to_string())?;
    let mut work = work;
    inspect::run_offline(path, move || async move {
        let mut out = Vec::with_capacity(dirs.len());
        for dir in dirs {
            out.push(work(dir).await);
        }
        Ok(out)
    })
    .map_err(|e| e.to_string())?
    .into_iter()
    .collect()
}

fn dump(path: &Path, records: bool, output: Output) -> Result<ExitCode, String> {
    let damage = for_each_partition(path, async move |dir| {
        let stdout = std::io::stdout();
        let mut failed = None;
        let findings = inspect::scan_partition(&dir, records, |b| {
            if failed.is_none() {
                failed = print_batch(&mut stdout.lock(), &b, output).err();
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        if let Some(e) = failed {
            written(Err(e))?;
        }
        let mut any_damage = false;
        for f in findings.iter().filter(|f| f.damaged_log) {
            any_damage = true;
            match output {
                Output::Json => written(print_finding(&mut stdout.lock(), f, output))?,
                Output::Text => eprintln!(
                    "{}: {} (valid data ends at offset {})",
                    f.file.display(),
                    f.problem,
                    f.valid_end_offset
                ),
            }
        }
        Ok(any_damage)
    })?;
    Ok(if damage.contains(&true) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn check(path: &Path, output: Output) -> Result<ExitCode, String> {
    let per_partition = for_each_partition(path, async move |dir| {
        let mut count = 0u64;
        let findings = inspect::scan_partition(&dir, false, |_| count += 1)
            .await
            .map_err(|e| e.to_string())?;
        let damage = inspect::classify(&dir, &findings).map_err(|e| e.to_string())?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for f in &findings {
            written(print_finding(&mut out, f, output))?;
        }
        let verdict = match &damage {
            Damage::None => None,
            Damage::TornTail => Some(format!(
                "{}: a torn tail past the recovery point; the broker cuts it at start (or `mamba log recover`)",
                dir.display()
            )),
            Damage::Corrupt { offset, .. } => Some(format!(
                "{}: corruption, not a torn write: the broker keeps this partition offline; `mamba log recover --force` cuts the log at offset {offset}, losing the offsets from there on",
                dir.display()
            )),
        };
        if let (Some(verdict), Output::Text) = (verdict, output) {
            written(writeln!(out, "{verdict}"))?;
        }
        let damaged = findings.iter().filter(|f| f.damaged_log).count();
        let corrupt = matches!(damage, Damage::Corrupt { .. });
        Ok((count, damaged, findings.len() - damaged, corrupt))
    })?;
    let partitions = per_partition.len();
    let batches: u64 = per_partition.iter().map(|p| p.0).sum();
    let damaged: usize = per_partition.iter().map(|p| p.1).sum();
    let notes: usize = per_partition.iter().map(|p| p.2).sum();
    let corrupt = per_partition.iter().any(|p| p.3);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let summary = match output {
        Output::Json => json!({"partitions": partitions, "batches": batches, "problems": damaged, "index_notes": notes, "clean": damaged == 0}).to_string(),
        Output::Text if damaged == 0 && notes == 0 => format!("clean: {partitions} partitions, {batches} batches verified"),
        Output::Text if damaged == 0 => format!("data intact: {partitions} partitions, {batches} batches verified; {notes} stale index entries will be rebuilt at open"),
        Output::Text if corrupt => format!("{damaged} damaged logs in {partitions} partitions ({batches} valid batches); see above for what repairs each"),
        Output::Text => format!("{damaged} torn tails in {partitions} partitions ({batches} valid batches); `mamba log recover` cuts them"),
    };
    written(writeln!(out, "{summary}"))?;
    Ok(if damaged == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn recover(path: &Path, force: bool, output: Output) -> Result<ExitCode, String> {
    for_each_partition(path, async move |dir| {
        let reports = inspect::recover_partition(&dir, force)
            .await
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for r in &reports {
            let cut_bytes = r.file_size_bytes.saturating_sub(r.valid_end_bytes);
            let line = match output {
                Output::Json => json!({
                    "file": r.log_path,
                    "valid_end_bytes": r.valid_end_bytes,
                    "next_offset": r.next_offset.0,
                    "torn": r.torn,
                    "truncated": r.torn.is_some(),
                    "index_rebuilt": r.index_rebuilt,
                })
                .to_string(),
                Output::Text => match (&r.torn, r.index_rebuilt) {
                    (Some(reason), _) => format!(
                        "{}: truncated at byte {} (offset {}), dropping up to {cut_bytes} bytes: {reason}",
                        r.log_path.display(),
                        r.valid_end_bytes,
                        r.next_offset
                    ),
                    (None, true) => format!("{}: index rebuilt; log intact to offset {}", r.log_path.display(), r.next_offset),
                    (None, false) => format!("{}: intact to offset {}", r.log_path.display(), r.next_offset),
                },
            };
            written(writeln!(out, "{line}"))?;
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
