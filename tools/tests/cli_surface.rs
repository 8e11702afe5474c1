//! The CLI as a whole: where settings come from, which commands take which
//! flags, and errors scripts can read.

mod common;
use common::*;

use std::process::Command;

fn mamba() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mamba"))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `data_dir=` field of a broker's ready line.
fn announced_data_dir(broker: &Broker) -> String {
    let rest = broker.ready.split("data_dir=").nth(1).unwrap_or_default();
    rest.split_whitespace().next().unwrap_or_default().to_string()
}

#[test]
fn serve_settings_come_from_flags_over_environment_over_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [from_file, from_env, from_flag] =
        ["file", "env", "flag"].map(|name| dir.path().join(name).to_string_lossy().into_owned());
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {from_file:?}\nlisten = \"127.0.0.1:0\"\nframe_bytes_max = \"1MiB\"\n\
             connections_max_idle_ms = \"10m\"\ntail_cache_bytes_per_shard = 1048576\n"
        ),
    )
    .expect("write config");
    let serve = |env: Option<&str>, flag: Option<&str>| {
        let mut command = mamba();
        command.args(["serve", "--shards", "1", "--config"]).arg(&config);
        command.env_remove("MAMBA_DATA_DIR");
        if let Some(env) = env {
            command.env("MAMBA_DATA_DIR", env);
        }
        if let Some(flag) = flag {
            command.args(["--data-dir", flag]);
        }
        let broker = Broker::launch(command, dir.path());
        let used = announced_data_dir(&broker);
        broker.stop();
        used
    };
    assert_eq!(serve(None, None), from_file);
    assert_eq!(serve(Some(&from_env), None), from_env);
    assert_eq!(serve(Some(&from_env), Some(&from_flag)), from_flag);

    // A bad value names the setting, whichever way it came.
    let out = mamba()
        .args(["serve", "--data-dir", &from_flag])
        .env("MAMBA_FRAME_BYTES_MAX", "lots")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("frame_bytes_max must be a size"), "{}", stderr(&out));
    std::fs::write(&config, "shards = 0\n").expect("write config");
    let out = mamba().args(["serve", "--config"]).arg(&config).output().expect("run");
    let err = stderr(&out);
    assert!(err.contains("broker.toml") && err.contains("shards must be at least 1"), "{err}");
}

#[test]
fn the_readme_table_lists_every_serve_setting() {
    let help = mamba().args(["serve", "--help"]).output().expect("serve --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let flags: Vec<&str> =
        help.split_whitespace().filter(|w| w.starts_with("--") && *w != "--help").collect();
    assert!(flags.len() >= 10, "{help}");
    for flag in flags {
        let env = format!("MAMBA_{}", flag[2..].replace('-', "_").to_uppercase());
        let row = readme.lines().find(|l| l.starts_with(&format!("| `{flag} ")));
        let row = row.unwrap_or_else(|| panic!("README's serve table has no row for {flag}"));
        assert!(row.contains(&format!("`{env}`")), "{flag}'s row lacks {env}: {row}");
        assert!(help.contains(&format!("[env: {env}=")), "{flag} is not settable as {env}");
    }
}

#[test]
fn broker_flags_belong_to_client_commands_only() {
    for args in [
        &["serve", "--brokers", "127.0.0.1:9400"][..],
        &["log", "check", ".", "--brokers", "127.0.0.1:9400"][..],
    ] {
        let out = mamba().args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?} must reject --brokers");
        assert!(stderr(&out).contains("unexpected argument '--brokers'"), "{}", stderr(&out));
    }
    for command in [&["topic", "list"][..], &["produce", "t"][..], &["consume", "t"][..]] {
        let out = mamba().args(command).arg("--help").output().expect("help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("-b, --brokers") && help.contains("-o, --output"), "{help}");
    }
    let out = mamba().args(["produce", "--help"]).output().expect("help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: mamba produce [OPTIONS] <TOPIC>"), "{help}");
}

#[test]
fn errors_are_json_on_stderr_when_output_is_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    let json_error = |out: &std::process::Output| -> serde_json::Value {
        assert!(
            out.stdout.is_empty(),
            "nothing on stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = stderr(out);
        let value: serde_json::Value =
            serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{e}: {err}"));
        value["error"].clone()
    };
    let out = mamba_cli(&broker.addr, &["topic", "describe", "nope", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let error = json_error(&out);
    assert_eq!(error["code"], 3, "{error}");
    assert_eq!(error["name"], "unknown topic or partition");
    assert!(error["message"].as_str().is_some_and(|m| m.contains("nope")), "{error}");

    let out = mamba_cli(&broker.addr, &["topic", "alter", "nope", "--set", "x", "-o", "json"]);
    assert_eq!(out.status.code(), Some(2), "a usage error exits 2");
    assert_eq!(json_error(&out)["name"], "usage");

    broker.stop();
    let out =
        mamba().args(["topic", "list", "-o", "json", "-b", "127.0.0.1:1"]).output().expect("run");
    let error = json_error(&out);
    assert_eq!((error["code"].as_u64(), error["name"].as_str()), (Some(1001), Some("connection")));

    // Text errors stay one plain line.
    let out = mamba().args(["topic", "list", "-b", "127.0.0.1:1"]).output().expect("run");
    let err = stderr(&out);
    assert!(err.starts_with("mamba: cannot connect to 127.0.0.1:1"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
