//! `mamba consume --group`: a run resumes where the group's last run
//! stopped, and `--count N` commits exactly the N records printed.

mod common;
use common::*;

#[test]
fn consuming_with_a_group_resumes_after_exactly_the_records_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    create_topic(&broker.addr, "work", 2);
    let producer = producer(&broker);
    for i in 0..10 {
        send_and_wait(&producer, record("work", Some(&format!("k{i}")), &format!("v{i}")))
            .expect("ack");
    }
    producer.close();
    let lines = |args: &[&str]| -> Vec<String> {
        let out = mamba_cli(&broker.addr, args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    };
    let first = lines(&["consume", "work", "--group", "g", "--count", "4"]);
    assert_eq!(first.len(), 4);
    let rest =
        lines(&["consume", "work", "--group", "g", "--count", "100", "--timeout-ms", "2000"]);
    let mut all: Vec<String> = first.into_iter().chain(rest).collect();
    all.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    expected.sort();
    assert_eq!(all, expected, "every record once over the two runs");

    let out = mamba_cli(&broker.addr, &["consume", "work", "--group", "g", "--from", "-2"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("earliest or latest") && err.contains("reset-offsets"), "{err}");
    broker.stop();
}
