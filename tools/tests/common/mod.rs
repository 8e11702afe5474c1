//! The harness every CLI test shares: a real `mamba serve` process on a
//! loopback port, and helpers that run the `mamba` binary against it.
#![allow(dead_code)] // each test file uses its own part

pub mod cluster;

use mamba_net::client::{
    block_on, Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A broker process; killed when dropped.
pub struct Broker {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    /// The log line announcing the broker ready.
    pub ready: String,
}

pub fn serve_args(data_dir: &Path, shards: u32, listen: &str) -> Vec<std::ffi::OsString> {
    // A one-node cluster: nobody dials its cluster port, so the kernel
    // picks one (the default, the client port + 1, may be taken when the
    // client port is given); the same for the HTTP port (+ 80).
    let mut args: Vec<std::ffi::OsString> = [
        "serve",
        "--listen",
        listen,
        "--cluster-listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--shards",
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    args.extend([shards.to_string().into(), "--data-dir".into(), data_dir.into()]);
    args
}

impl Broker {
    pub fn start(data_dir: &Path, shards: u32) -> Broker {
        Broker::start_on(data_dir, shards, "127.0.0.1:0")
    }

    pub fn start_on(data_dir: &Path, shards: u32, listen: &str) -> Broker {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mamba"));
        command.args(serve_args(data_dir, shards, listen));
        Broker::launch(command, data_dir)
    }

    /// Runs `command` (which ends up exec'ing `mamba serve`) and waits for
    /// the broker's ready line.
    pub fn launch(mut command: Command, data_dir: &Path) -> Broker {
        let mut child = command
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start mamba serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listen=") && tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = rx.recv_timeout(Duration::from_secs(20)).expect("broker announces its address");
        let rest = ready.split("listen=").nth(1).unwrap_or_default();
        let addr = rest.split_whitespace().next().unwrap_or_default().to_string();
        Broker { child, addr, data_dir: data_dir.to_path_buf(), ready }
    }

    pub fn kill9(mut self) -> PathBuf {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
        self.data_dir.clone()
    }

    pub fn stop(mut self) -> PathBuf {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "clean shutdown exits 0, got {status}");
        self.data_dir.clone()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill() {
            eprintln!("killing broker: {e}");
        }
        let _reaped = self.child.wait();
    }
}

pub fn create_topic(addr: &str, name: &str, partitions: u32) {
    let admin = Admin::connect(addr).expect("admin");
    block_on(admin.create_topic(name, partitions, vec![])).expect("create");
}

/// Sends one record and waits for its answer.
pub fn send_and_wait(
    producer: &Producer,
    record: ProducerRecord,
) -> Result<mamba_net::client::RecordMetadata, mamba_net::client::ClientError> {
    let sent = producer.send(record).expect("send");
    producer.flush();
    block_on(sent)
}

pub fn producer(broker: &Broker) -> Producer {
    Producer::connect(&broker.addr, ProducerConfig::default()).expect("producer")
}

pub fn record(topic: &str, key: Option<&str>, value: &str) -> ProducerRecord {
    ProducerRecord {
        topic: topic.into(),
        key: key.map(|k| k.as_bytes().to_vec()),
        value: value.as_bytes().to_vec(),
        ..ProducerRecord::default()
    }
}

/// Every record of `topic` from the start, following until `expected` are read.
pub fn consume_all(
    addr: &str,
    topic: &str,
    expected: usize,
) -> Vec<mamba_net::client::ConsumerRecord> {
    let mut consumer = Consumer::connect(addr, ConsumerConfig::default()).expect("consumer");
    consumer.assign(topic, &[], SeekTo::Earliest).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < expected && Instant::now() < deadline {
        out.extend(consumer.poll(Duration::from_millis(200)).expect("poll"));
    }
    out
}

/// How long any one `mamba` command of a test may take.
const CLI_LIMIT: Duration = Duration::from_secs(60);

/// Runs `mamba ARGS --brokers ADDR` (killed, and the test failed, past
/// `CLI_LIMIT`).
pub fn mamba_cli(addr: &str, args: &[&str]) -> std::process::Output {
    mamba_with_input(addr, args, b"", CLI_LIMIT)
}

/// Runs `mamba ARGS` (a command that talks to no broker: `log dump`),
/// expects success, returns stdout.
pub fn mamba_cli_offline(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mamba")).args(args).output().expect("run mamba");
    assert!(
        out.status.success(),
        "mamba {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `mamba ARGS --brokers ADDR`, expects success, returns stdout.
pub fn cli_ok(addr: &str, args: &[&str]) -> String {
    let out = mamba_cli(addr, args);
    assert!(
        out.status.success(),
        "mamba {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `mamba ARGS --brokers ADDR -o json`, expects success, returns one
/// value per line.
pub fn cli_json(addr: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let args: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
    cli_ok(addr, &args)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Runs `mamba ARGS --brokers ADDR`, expects failure, returns its exit code
/// and stderr.
pub fn cli_err(addr: &str, args: &[&str]) -> (i32, String) {
    let out = mamba_cli(addr, args);
    assert!(!out.status.success(), "mamba {args:?} should fail");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The entry of partition `p` in a JSON object's `partitions` list.
pub fn partition(described: &serde_json::Value, p: u64) -> &serde_json::Value {
    described["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|entry| entry["partition"] == p)
        .unwrap_or_else(|| panic!("partition {p} in {described}"))
}

/// A child process killed (and reaped) when dropped, unless it exited
/// already; otherwise used as the `Child` it holds.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.0.kill().ok();
            self.0.wait().ok();
        }
    }
}

/// Runs `mamba ARGS --brokers ADDR` with `stdin` as its standard input;
/// killed, and the test failed, if it has not finished within `limit`.
pub fn mamba_with_input(
    addr: &str,
    args: &[&str],
    stdin: &[u8],
    limit: Duration,
) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(args)
        .args(["--brokers", addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mamba");
    child.stdin.take().expect("stdin").write_all(stdin).expect("write stdin");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()).ok());
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("output"),
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("mamba {args:?} did not finish within {limit:?}");
        }
    }
}

/// Prints the last lines of each broker's log (for a test that failed).
pub fn print_log_tails(logs: &[(u32, PathBuf)]) {
    for (id, log) in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        eprintln!("--- broker {id} log (last lines) ---");
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
    }
}

/// `mamba log dump -o json` of one partition directory, without file
/// paths: per batch its offsets, epoch, position, size and CRC (replicas
/// holding the same batches dump alike).
pub fn log_dump(partition_dir: &Path) -> Vec<serde_json::Value> {
    let out = mamba_cli_offline(&["log", "dump", "-o", "json", &partition_dir.to_string_lossy()]);
    out.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("a json line");
            if let Some(o) = v.as_object_mut() {
                o.remove("file");
            }
            v
        })
        .collect()
}
