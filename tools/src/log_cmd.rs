//! `mamba log dump|check|recover`: offline tools over segment files, using
//! the engine's own scanning and recovery code.

use crate::Output;
use clap::Subcommand;
use mamba_engine::inspect::{self, BatchInfo, Finding};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum LogCommand {
    /// Print one line per batch: file, offsets, record count, position,
    /// size, timestamps and whether its CRC checks out.
    Dump {
        path: PathBuf,
        /// Also print each record (key, value, headers; bytes that are not
        /// printable ASCII are shown escaped, e.g. \xff).
        #[arg(long)]
        records: bool,
    },
    /// Verify every batch and index. Exit 0 when clean, 1 when something is
    /// torn, corrupt or stale (with the file, byte position and the offset
    /// where valid data ends), 2 when the files cannot be read.
    Check { path: PathBuf },
    /// Run the recovery the broker runs at startup: cut torn tails, rebuild
    /// stale indexes, and report what changed. Stop the broker first.
    Recover {
        path: PathBuf,
        /// Also repair damage inside closed segments by cutting the log at
        /// the first bad batch; later segments are deleted (their data is
        /// lost). The broker refuses to do this on its own.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(command: LogCommand, output: Output) -> ExitCode {
    let result = match command {
        LogCommand::Dump { path, records } => dump(&path, records, output),
        LogCommand::Check { path } => check(&path, output),
        LogCommand::Recover { path, force } => recover(&path, force, output),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mamba log: {e}");
            ExitCode::from(2)
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

fn dump(path: &Path, records: bool, output: Output) -> Result<ExitCode, String> {
    let mut any_damage = false;
    for dir in inspect::partition_dirs(path).map_err(|e| e.to_string())? {
        let scan_dir = dir.clone();
        let (batches, findings) = inspect::run_offline(&dir, move || async move {
            let mut batches = Vec::new();
            let findings = inspect::scan_partition(&scan_dir, records, |b| batches.push(b)).await?;
            Ok((batches, findings))
        })
        .map_err(|e| e.to_string())?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for b in &batches {
            print_batch(&mut out, b, output).map_err(|e| e.to_string())?;
        }
        for f in findings.iter().filter(|f| f.damaged_log) {
            any_damage = true;
            match output {
                Output::Json => print_finding(&mut out, f, output).map_err(|e| e.to_string())?,
                Output::Text => eprintln!(
                    "{}: {} (valid data ends at offset {})",
                    f.file.display(),
                    f.problem,
                    f.valid_end_offset
                ),
            }
        }
    }
    Ok(if any_damage { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn check(path: &Path, output: Output) -> Result<ExitCode, String> {
    let mut problems = 0usize;
    let mut partitions = 0usize;
    let mut batches = 0u64;
    let stdout = std::io::stdout();
    for dir in inspect::partition_dirs(path).map_err(|e| e.to_string())? {
        partitions += 1;
        let scan_dir = dir.clone();
        let (count, findings) = inspect::run_offline(&dir, move || async move {
            let mut count = 0u64;
            let findings = inspect::scan_partition(&scan_dir, false, |_| count += 1).await?;
            Ok((count, findings))
        })
        .map_err(|e| e.to_string())?;
        batches += count;
        let mut out = stdout.lock();
        for f in &findings {
            problems += 1;
            print_finding(&mut out, f, output).map_err(|e| e.to_string())?;
        }
    }
    let mut out = stdout.lock();
    let summary = match output {
        Output::Json => json!({"partitions": partitions, "batches": batches, "problems": problems, "clean": problems == 0}).to_string(),
        Output::Text if problems == 0 => format!("clean: {partitions} partitions, {batches} batches verified"),
        Output::Text => format!("{problems} problems in {partitions} partitions ({batches} valid batches); `mamba log recover` repairs them"),
    };
    writeln!(out, "{summary}").map_err(|e| e.to_string())?;
    Ok(if problems == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn recover(path: &Path, force: bool, output: Output) -> Result<ExitCode, String> {
    let stdout = std::io::stdout();
    for dir in inspect::partition_dirs(path).map_err(|e| e.to_string())? {
        let recover_dir = dir.clone();
        let reports = inspect::run_offline(&dir, move || async move {
            inspect::recover_partition(&recover_dir, force).await
        })
        .map_err(|e| {
            format!(
                "{}: {e}{}",
                dir.display(),
                if force { "" } else { " (use --force to cut the log at the damage)" }
            )
        })?;
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
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
