//! The HTTP API of a real `mamba serve` process (`net/http`): health
//! checks, the OpenAPI document, topics created, listed, described,
//! altered and deleted, every bad request answered with a 4xx RFC 9457
//! problem carrying the protocol's error code, and the token rule.

mod common;

use common::Broker;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

/// The HTTP address from the broker's ready line (`http=ADDR`).
fn http_of(broker: &Broker) -> String {
    let rest = broker.ready.split("http=").nth(1).expect("the ready line names the HTTP address");
    format!("http://{}", rest.split_whitespace().next().unwrap_or_default())
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build()
}

/// Status and JSON body of a response, error statuses included.
fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, String, Value) {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport: {e}"),
    };
    let status = response.status();
    let kind = response.content_type().to_string();
    let text = response.into_string().expect("body");
    (status, kind, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts a problem document: status, the protocol's code, and a detail
/// containing `says`.
fn assert_problem((status, kind, body): &(u16, String, Value), want: u16, code: u64, says: &str) {
    assert_eq!(*status, want, "{body:#}");
    assert_eq!(kind, "application/problem+json", "{body:#}");
    assert_eq!(body["status"], want, "{body:#}");
    assert_eq!(body["code"], code, "{body:#}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(says), "{detail:?} lacks {says:?}");
}

#[test]
fn topics_through_http_and_every_bad_request_a_clear_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let base = http_of(&broker);
    let http = agent();
    let get = |path: &str| answer(http.get(&format!("{base}{path}")).call());

    assert_eq!(get("/livez").2["status"], "ok");
    assert_eq!(get("/readyz").2["status"], "ok");
    let (status, _, api) = get("/openapi.json");
    assert_eq!(status, 200);
    assert!(api["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", api["openapi"]);
    for path in ["/v1/topics", "/v1/topics/{topic}", "/v1/topics/{topic}/configs", "/readyz"] {
        assert!(api["paths"][path].is_object(), "the document lacks {path}");
    }

    // Create, list, describe, alter, delete.
    let create = |body: Value| answer(http.post(&format!("{base}/v1/topics")).send_json(body));
    let (status, _, created) =
        create(json!({"name": "orders", "partitions": 3, "configs": {"retention.ms": "3600000"}}));
    assert_eq!(status, 201, "{created:#}");
    assert_eq!(created["partitions"].as_array().map(Vec::len), Some(3), "{created:#}");
    assert_eq!(created["configs"]["retention.ms"], "3600000", "{created:#}");
    let listed = get("/v1/topics").2;
    assert!(
        listed
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "orders" && t["partitions"] == 3)),
        "{listed:#}"
    );
    let described = get("/v1/topics/orders").2;
    let p0 = &described["partitions"][0];
    assert_eq!(
        (p0["status"].as_str(), p0["log_end_offset"].as_u64()),
        (Some("online"), Some(0)),
        "{p0:#}"
    );
    assert!(p0["leader"].is_u64() && p0["high_watermark"] == 0, "{p0:#}");
    let (status, _, altered) = answer(
        http.request("PATCH", &format!("{base}/v1/topics/orders/configs"))
            .send_json(json!({"configs": {"retention.ms": "60000"}})),
    );
    assert_eq!(
        (status, &altered["configs"]["retention.ms"]),
        (200, &json!("60000")),
        "{altered:#}"
    );

    // Bad requests: a 4xx problem each, nothing changed.
    assert_problem(&create(json!({"name": "orders"})), 409, 9, "orders");
    assert_problem(&create(json!({"name": "bad name!"})), 400, 8, "bad name");
    assert_problem(&create(json!({"name": "x", "partitions": 0})), 400, 10, "");
    assert_problem(&create(json!({"name": "y", "configs": {"color": "blue"}})), 400, 10, "color");
    assert_problem(&create(json!({"name": "z", "colour": 1})), 400, 8, "colour");
    let raw = |body: &str, kind: &str| {
        answer(http.post(&format!("{base}/v1/topics")).set("Content-Type", kind).send_string(body))
    };
    assert_problem(&raw("{\"name\": ", "application/json"), 400, 8, "");
    assert_problem(&raw("{\"name\": \"a\"}", "text/plain"), 415, 8, "");
    let huge = format!("{{\"name\": \"{}\"}}", "a".repeat(17 << 20));
    // Refused before its body is read: the broker answers 413 and closes,
    // so a client still writing may see the connection closed instead.
    let sent = http
        .post(&format!("{base}/v1/topics"))
        .set("Content-Type", "application/json")
        .send_string(&huge);
    match sent {
        Err(ureq::Error::Transport(t)) => {
            let why = t.to_string();
            assert!(why.contains("Broken pipe") || why.contains("reset"), "{why}");
        }
        other => assert_problem(&answer(other), 413, 8, ""),
    }
    assert_problem(&get("/v1/topics/..%2Fetc"), 400, 8, "");
    assert_problem(&get("/v1/topics/nope"), 404, 3, "nope");
    assert_problem(&get("/v2/anything"), 404, 0, "no such route");
    let listed_after = get("/v1/topics").2;
    assert_eq!(listed_after.as_array().map(Vec::len), Some(1), "only orders: {listed_after:#}");

    let (status, _, _) = answer(http.delete(&format!("{base}/v1/topics/orders")).call());
    assert_eq!(status, 204);
    assert_problem(&get("/v1/topics/orders"), 404, 3, "orders");
}

#[test]
fn a_token_guards_the_api_and_beyond_loopback_one_is_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "s3cret-token-for-tests";
    let mut command = Command::new(env!("CARGO_BIN_EXE_mamba"));
    command.args(common::serve_args(dir.path(), 1, "127.0.0.1:0")).args(["--http-token", token]);
    let broker = Broker::launch(command, dir.path());
    let base = http_of(&broker);
    let http = agent();
    assert_eq!(answer(http.get(&format!("{base}/livez")).call()).0, 200, "health needs no token");
    assert_problem(&answer(http.get(&format!("{base}/v1/topics")).call()), 401, 0, "Bearer");
    let wrong = http.get(&format!("{base}/v1/topics")).set("Authorization", "Bearer nope");
    assert_problem(&answer(wrong.call()), 401, 0, "not this broker's");
    let right =
        http.get(&format!("{base}/v1/topics")).set("Authorization", &format!("Bearer {token}"));
    assert_eq!(answer(right.call()).0, 200);
    // The console's files hold no data: they load without the token, and
    // the API calls they make need it.
    assert_eq!(http.get(&format!("{base}/")).call().map(|r| r.status()).ok(), Some(200));
    assert_problem(&answer(http.get(&format!("{base}/metrics")).call()), 401, 0, "Bearer");
    assert_problem(&answer(http.get(&format!("{base}/v1/stats")).call()), 401, 0, "Bearer");

    // Beyond loopback without a token: refused at start, saying how.
    let other = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["serve", "--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"])
        .args(["--http", "0.0.0.0:0", "--data-dir"])
        .arg(other.path())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--http-token"), "{err}");
    assert!(err.contains("--http-insecure"), "{err}");
    let short = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(common::serve_args(other.path(), 1, "127.0.0.1:0"))
        .args(["--http-token", "short"])
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("at least 16"),
        "a short token is refused"
    );
}

#[test]
fn records_produced_and_read_over_http_as_text_base64_and_raw_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let base = http_of(&broker);
    let http = agent();
    let (status, _, body) =
        answer(http.post(&format!("{base}/v1/topics")).send_json(json!({"name": "events"})));
    assert_eq!(status, 201, "{body:#}");
    let records = format!("{base}/v1/topics/events/records");
    let produce =
        |query: &str, body: Value| answer(http.post(&format!("{records}{query}")).send_json(body));

    let (status, _, produced) = produce(
        "",
        json!([
            {"key": "k1", "value": "hello", "headers": [{"name": "h", "value": "x"}]},
            {"value": "AAEC/w==", "encoding": "base64"},
        ]),
    );
    assert_eq!(status, 200, "{produced:#}");
    assert_eq!(produced["records"][0]["offset"], 0, "{produced:#}");
    assert_eq!(produced["records"][1]["offset"], 1, "{produced:#}");
    let raw = http
        .post(&format!("{records}?key=rk&acks=1"))
        .set("Content-Type", "application/octet-stream")
        .send_bytes(&[0xff, 0x00, b'r']);
    let (status, _, produced) = answer(raw);
    assert_eq!((status, &produced["records"][0]["offset"]), (200, &json!(2)), "{produced:#}");
    let (status, _, produced) = produce("?acks=0", json!([{"value": "unanswered"}]));
    assert_eq!((status, &produced["records"][0]["offset"]), (200, &Value::Null), "{produced:#}");

    // Read back: text where it is text, base64 where it is not.
    let read = |query: &str| {
        answer(http.get(&format!("{base}/v1/topics/events/partitions/0/records{query}")).call())
    };
    let mut got = Vec::new();
    for _ in 0..50 {
        got = read("?offset=0").2["records"].as_array().cloned().unwrap_or_default();
        if got.len() == 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got.len(), 4, "{got:#?}");
    assert_eq!(
        (&got[0]["key"], &got[0]["value"], &got[0]["headers"][0]["value"], &got[0]["encoding"]),
        (&json!("k1"), &json!("hello"), &json!("x"), &json!("utf8"))
    );
    assert_eq!((&got[1]["value"], &got[1]["encoding"]), (&json!("AAEC/w=="), &json!("base64")));
    assert_eq!((&got[2]["key"], &got[2]["value"]), (&json!("cms="), &json!("/wBy")));
    assert_eq!(got[3]["value"], "unanswered");
    let (status, _, tail) = read("?offset=4&timeout_ms=200");
    assert_eq!((status, &tail["records"], &tail["next_offset"]), (200, &json!([]), &json!(4)));

    // Bad requests: a clear 4xx, nothing written.
    assert_problem(&produce("?acks=2", json!([{"value": "v"}])), 400, 8, "acks");
    assert_problem(&produce("", json!([{"value": "%%%", "encoding": "base64"}])), 400, 8, "base64");
    assert_problem(&produce("", json!({"value": "not an array"})), 400, 8, "JSON");
    let plain = http.post(&records).set("Content-Type", "text/plain").send_string("v");
    assert_problem(&answer(plain), 415, 8, "octet-stream");
    let unknown =
        http.post(&format!("{base}/v1/topics/nope/records")).send_json(json!([{"value": "v"}]));
    assert_problem(&answer(unknown), 404, 3, "nope");
    assert_problem(&read("?offset=99"), 416, 4, "beyond the end");
    let missing = http.get(&format!("{base}/v1/topics/events/partitions/9/records")).call();
    assert_problem(&answer(missing), 404, 3, "no partition 9");
    let (_, _, described) = answer(http.get(&format!("{base}/v1/topics/events")).call());
    assert_eq!(described["partitions"][0]["log_end_offset"], 4, "nothing more was written");
}

#[test]
fn groups_and_the_cluster_through_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let base = http_of(&broker);
    let http = agent();
    let post =
        |path: &str, body: Value| answer(http.post(&format!("{base}{path}")).send_json(body));
    let get = |path: &str| answer(http.get(&format!("{base}{path}")).call());
    assert_eq!(post("/v1/topics", json!({"name": "g", "partitions": 2})).0, 201);
    let values: Vec<Value> =
        (0..10).map(|i| json!({"value": format!("v{i}"), "partition": 0})).collect();
    assert_eq!(post("/v1/topics/g/records", Value::Array(values)).0, 200);

    // A group made by a reset, its lag, listed, reset again, deleted.
    let (status, _, group) =
        post("/v1/groups/readers/offsets", json!({"topic": "g", "partitions": [0], "to": 4}));
    assert_eq!(status, 200, "{group:#}");
    let p0 = &group["partitions"][0];
    assert_eq!(
        (&p0["partition"], &p0["committed_offset"], &p0["high_watermark"], &p0["lag"]),
        (&json!(0), &json!(4), &json!(10), &json!(6)),
        "{group:#}"
    );
    assert_eq!(group["total_lag"], 6);
    let listed = get("/v1/groups").2;
    assert!(
        listed.as_array().is_some_and(|g| g.iter().any(|g| g["group_id"] == "readers")),
        "{listed:#}"
    );
    let (_, _, group) = post("/v1/groups/readers/offsets", json!({"topic": "g", "to": "latest"}));
    assert_eq!(group["total_lag"], 0, "{group:#}");
    assert_eq!(group["partitions"].as_array().map(Vec::len), Some(2), "every partition: {group:#}");
    assert_problem(
        &post("/v1/groups/readers/offsets", json!({"topic": "g", "to": "sideways"})),
        400,
        8,
        "earliest",
    );
    assert_problem(
        &post("/v1/groups/readers/offsets", json!({"topic": "g", "partitions": [7], "to": 0})),
        400,
        8,
        "no partition 7",
    );
    assert_problem(
        &post("/v1/groups/readers/offsets", json!({"topic": "nope", "to": 0})),
        404,
        3,
        "nope",
    );
    assert_eq!(answer(http.delete(&format!("{base}/v1/groups/readers")).call()).0, 204);
    assert_problem(&get("/v1/groups/readers"), 404, 27, "readers");
    assert_problem(&answer(http.delete(&format!("{base}/v1/groups/readers")).call()), 404, 27, "");

    // The cluster: its state, an operator setting set through an action,
    // and actions it refuses.
    let (status, _, cluster) = get("/v1/cluster");
    assert_eq!(status, 200, "{cluster:#}");
    assert_eq!(
        (&cluster["controller_id"], &cluster["brokers"][0]["status"]),
        (&json!(1), &json!("alive"))
    );
    let set = json!({"action": "set-config", "name": "leader.placement", "value": "primary:1"});
    assert_eq!(post("/v1/cluster/actions", set).0, 202);
    let mut settings = Value::Null;
    for _ in 0..50 {
        settings = get("/v1/cluster").2["settings"].clone();
        if settings["leader.placement"] == "primary:1" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(settings["leader.placement"], "primary:1", "{settings:#}");
    let refused = post("/v1/cluster/actions", json!({"action": "failover", "from": 9}));
    assert_problem(&refused, 400, 8, "broker 9 is not in the cluster");
    let refused = post(
        "/v1/cluster/actions",
        json!({"action": "set-config", "name": "color", "value": "blue"}),
    );
    assert_problem(&refused, 400, 8, "unknown cluster setting");
    assert_problem(&post("/v1/cluster/actions", json!({"action": "explode"})), 400, 8, "explode");
}

#[test]
fn http_consumer_instances_share_a_group_commit_and_hand_over_on_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let base = http_of(&broker);
    let http = agent();
    let post =
        |path: &str, body: Value| answer(http.post(&format!("{base}{path}")).send_json(body));
    let get = |path: &str| answer(http.get(&format!("{base}{path}")).call());
    let produce = |from: usize, to: usize| {
        let values: Vec<Value> =
            (from..to).map(|i| json!({"value": format!("v{i}"), "partition": i % 2})).collect();
        assert_eq!(post("/v1/topics/hc/records", Value::Array(values)).0, 200);
    };
    assert_eq!(post("/v1/topics", json!({"name": "hc", "partitions": 2})).0, 201);
    produce(0, 20);

    let consumers = "/v1/groups/readers/consumers";
    let made = post(consumers, json!({"name": "a", "auto_offset_reset": "earliest"}));
    assert_eq!(made.0, 201, "{:#}", made.2);
    assert_eq!(made.2["uri"], "/v1/groups/readers/consumers/a");
    let made = post(consumers, json!({"auto_offset_reset": "earliest"}));
    assert_eq!(made.0, 201, "a name is made when none is given: {:#}", made.2);
    let b = made.2["instance_id"].as_str().expect("a name").to_string();

    // Mistakes: each a clear 4xx, nothing made or lost.
    assert_problem(&post(consumers, json!({"name": "a"})), 409, 0, "already has");
    assert_problem(&post(consumers, json!({"name": "a/../b"})), 400, 8, "instance name");
    assert_problem(&post(consumers, json!({"auto_offset_reset": "middle"})), 400, 8, "earliest");
    assert_problem(&post(consumers, json!({"idle_timeout_ms": 5})), 400, 8, "idle_timeout_ms");
    assert_problem(&get(&format!("{consumers}/a/records")), 400, 8, "not subscribed");
    assert_problem(&get(&format!("{consumers}/nobody/records")), 404, 0, "nobody");
    assert_problem(&post(&format!("{consumers}/a/subscription"), json!({})), 400, 8, "topics");

    for name in ["a", b.as_str()] {
        let (status, _, subscribed) =
            post(&format!("{consumers}/{name}/subscription"), json!({"topics": ["hc"]}));
        assert_eq!(status, 200, "{subscribed:#}");
        assert_eq!(subscribed["subscription"], json!(["hc"]));
    }
    assert_problem(
        &post(&format!("{consumers}/a/subscription"), json!({"topics": ["hc"]})),
        400,
        8,
        "",
    );

    // Between them they read every record once: each commits after each
    // fetch (`a` the offsets it names, the other everything fetched), so
    // a partition moving between them starts where the last left off.
    let mut read: std::collections::BTreeMap<(u64, u64), String> = Default::default();
    for _ in 0..100 {
        for name in ["a", b.as_str()] {
            let (status, _, fetched) = get(&format!("{consumers}/{name}/records?timeout_ms=100"));
            assert_eq!(status, 200, "{fetched:#}");
            let mut next: std::collections::BTreeMap<u64, u64> = Default::default();
            for r in fetched["records"].as_array().into_iter().flatten() {
                assert_eq!(r["topic"], "hc");
                let at = (r["partition"].as_u64().unwrap_or(9), r["offset"].as_u64().unwrap_or(0));
                assert_eq!(read.insert(at, name.to_string()), None, "{at:?} read twice");
                next.insert(at.0, at.1 + 1);
            }
            let offsets: Vec<Value> = next
                .iter()
                .map(|(p, o)| json!({"topic": "hc", "partition": p, "offset": o}))
                .collect();
            let commit = if name == "a" { json!({"offsets": offsets}) } else { json!({}) };
            let (status, _, why) = post(&format!("{consumers}/{name}/offsets"), commit);
            assert_eq!(status, 204, "{why:#}");
        }
        if read.len() >= 20 {
            break;
        }
    }
    assert_eq!(read.len(), 20, "{read:?}");
    let (_, _, group) = get("/v1/groups/readers");
    assert_eq!(group["total_lag"], 0, "{group:#}");
    assert_eq!(group["members"].as_array().map(Vec::len), Some(2), "{group:#}");

    // `a` leaves; the other gets its partition from `a`'s commits: only
    // the new records.
    assert_eq!(answer(http.delete(&format!("{base}{consumers}/a")).call()).0, 204);
    assert_problem(&get(&format!("{consumers}/a")), 404, 0, "no consumer instance");
    produce(20, 24);
    let mut fresh = Vec::new();
    for _ in 0..100 {
        let (status, _, fetched) = get(&format!("{consumers}/{b}/records?timeout_ms=100"));
        assert_eq!(status, 200, "{fetched:#}");
        fresh.extend(fetched["records"].as_array().into_iter().flatten().cloned());
        if fresh.len() >= 4 {
            break;
        }
    }
    let mut values: Vec<&str> = fresh.iter().filter_map(|r| r["value"].as_str()).collect();
    values.sort_unstable();
    assert_eq!(values, ["v20", "v21", "v22", "v23"], "only what came after the commits");
    let (_, _, described) = get(&format!("{consumers}/{b}"));
    let held: usize = described["assignment"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["partitions"].as_array().map(Vec::len))
        .sum();
    assert_eq!(held, 2, "{described:#}");

    // An instance nobody uses is closed after its idle timeout.
    let made = post(consumers, json!({"name": "idle", "idle_timeout_ms": 1000}));
    assert_eq!(made.0, 201, "{:#}", made.2);
    std::thread::sleep(Duration::from_secs(3));
    assert_problem(&get(&format!("{consumers}/idle")), 404, 0, "idle");
}

/// The samples of a `/metrics` answer: `name{labels}` to value, after
/// checking every line is a comment or a well-formed sample.
fn samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            name.starts_with("mamba_") && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{line:?}"
        );
        assert!(!series.contains("{}"), "no empty label sets: {line:?}");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(samples.insert(series.to_string(), value).is_none(), "twice: {line:?}");
    }
    samples
}

#[test]
fn metrics_count_what_clients_did_in_the_prometheus_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let base = http_of(&broker);
    let http = agent();
    let post =
        |path: &str, body: Value| answer(http.post(&format!("{base}{path}")).send_json(body));
    assert_eq!(post("/v1/topics", json!({"name": "m", "partitions": 2})).0, 201);
    let values: Vec<Value> =
        (0..10).map(|i| json!({"value": format!("v{i}"), "partition": 0})).collect();
    assert_eq!(post("/v1/topics/m/records", Value::Array(values)).0, 200);
    let read =
        answer(http.get(&format!("{base}/v1/topics/m/partitions/0/records?offset=0")).call());
    assert_eq!(read.0, 200, "{:#}", read.2);
    let past_end = http.get(&format!("{base}/v1/topics/m/partitions/0/records?offset=99")).call();
    assert_eq!(answer(past_end).0, 416);
    let reset =
        post("/v1/groups/readers/offsets", json!({"topic": "m", "partitions": [0], "to": 4}));
    assert_eq!(reset.0, 200, "{:#}", reset.2);

    let response = http.get(&format!("{base}/metrics")).call().expect("/metrics");
    assert!(response.content_type().starts_with("application/openmetrics-text"));
    let text = response.into_string().expect("body");
    let samples = samples(&text);
    let get = |series: &str| -> f64 {
        *samples.get(series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let p0 = r#"{topic="m",partition="0"}"#;
    assert_eq!(get(&format!("mamba_partition_records_in_total{p0}")), 10.0);
    assert_eq!(get(&format!("mamba_partition_log_end_offset{p0}")), 10.0);
    assert_eq!(get(&format!("mamba_partition_high_watermark{p0}")), 10.0);
    assert!(get(&format!("mamba_partition_records_out_total{p0}")) >= 10.0);
    assert!(get(&format!("mamba_partition_log_size_bytes{p0}")) > 0.0);
    assert_eq!(get(&format!("mamba_partition_segments{p0}")), 1.0);
    assert_eq!(get(r#"mamba_partition_records_in_total{topic="m",partition="1"}"#), 0.0);
    assert!(get(r#"mamba_requests_total{api="produce"}"#) >= 1.0);
    let fetch_out_of_range =
        r#"mamba_request_errors_total{api="fetch",code="4",error="offset out of range"}"#;
    assert!(get(fetch_out_of_range) >= 1.0);
    assert_eq!(get(r#"mamba_group_lag_records{group="readers",topic="m",partition="0"}"#), 6.0);
    assert_eq!(
        get(r#"mamba_group_committed_offset{group="readers",topic="m",partition="0"}"#),
        4.0
    );
    assert_eq!(get("mamba_cluster_healthy"), 1.0);
    assert_eq!(get("mamba_cluster_partitions_offline"), 0.0);
    assert_eq!(get(r#"mamba_cluster_brokers{status="alive"}"#), 1.0);
    for shard in 0..2 {
        assert!(get(&format!(r#"mamba_shard_partitions{{shard="{shard}",state="online"}}"#)) > 0.0);
    }
    let written: f64 =
        (0..2).map(|s| get(&format!(r#"mamba_shard_written_bytes_total{{shard="{s}"}}"#))).sum();
    assert!(written >= 4096.0, "{written}");
    // Histograms: buckets cumulative, the last one the count.
    let produce = r#"api="produce""#;
    let buckets: Vec<(&String, f64)> = samples
        .iter()
        .filter(|(series, _)| series.starts_with("mamba_request_duration_seconds_bucket{"))
        .filter(|(series, _)| series.contains(produce))
        .map(|(series, &v)| (series, v))
        .collect();
    let count = get(&format!("mamba_request_duration_seconds_count{{{produce}}}"));
    assert!(count >= 1.0);
    let infinite = buckets.iter().find(|(series, _)| series.contains(r#"le="+Inf""#));
    assert_eq!(infinite.map(|(_, v)| *v), Some(count), "{buckets:?}");
    assert!(buckets.iter().all(|&(_, b)| b <= count), "{buckets:?}");
    let fsyncs: f64 = (0..2)
        .map(|s| get(&format!(r#"mamba_shard_fdatasync_duration_seconds_count{{shard="{s}"}}"#)))
        .sum();
    assert!(fsyncs >= 1.0, "the produce was synced");
}

#[test]
fn the_console_comes_from_the_binary_and_its_stats_sum_the_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let base = http_of(&broker);
    let http = agent();
    for (path, kind, says) in [
        ("/", "text/html", "/console/console.js"),
        ("/console/console.js", "text/javascript", "function route"),
        ("/console/console.css", "text/css", "#side"),
    ] {
        let response = http.get(&format!("{base}{path}")).call().expect(path);
        assert!(response.content_type().starts_with(kind), "{path}: {}", response.content_type());
        let policy = response.header("content-security-policy").unwrap_or_default().to_string();
        assert!(policy.contains("default-src 'self'"), "{path}: {policy:?}");
        assert!(response.into_string().expect("body").contains(says), "{path}");
    }

    let post =
        |path: &str, body: Value| answer(http.post(&format!("{base}{path}")).send_json(body));
    assert_eq!(post("/v1/topics", json!({"name": "s", "partitions": 2})).0, 201);
    let before_ms = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let values: Vec<Value> =
        (0..5).map(|i| json!({"value": format!("v{i}"), "partition": 1})).collect();
    assert_eq!(post("/v1/topics/s/records", Value::Array(values)).0, 200);
    let (status, _, stats) = answer(http.get(&format!("{base}/v1/stats")).call());
    assert_eq!(status, 200, "{stats:#}");
    let topic = stats["topics"].as_array().and_then(|t| t.iter().find(|t| t["name"] == "s"));
    let topic = topic.unwrap_or_else(|| panic!("topic s in {stats:#}"));
    assert_eq!((&topic["partitions"], &topic["records_in_total"]), (&json!(2), &json!(5)));
    assert!(stats["records_in_total"].as_u64() >= Some(5), "{stats:#}");
    assert!(stats["latency"]["produce"]["count"].as_u64() >= Some(1), "{stats:#}");
    let buckets = stats["latency"]["produce"]["buckets"].as_array().map(Vec::len);
    assert_eq!(buckets, Some(19), "18 bounds and the unbounded one");

    // Reading from a time: the records written since.
    let read = |query: &str| {
        answer(http.get(&format!("{base}/v1/topics/s/partitions/1/records?{query}")).call())
    };
    let (status, _, from_time) = read(&format!("timestamp_ms={before_ms}"));
    assert_eq!(status, 200, "{from_time:#}");
    assert_eq!(from_time["records"][0]["value"], "v0", "{from_time:#}");
    let (status, _, later) = read("timestamp_ms=99999999999999");
    assert_eq!((status, later["records"].as_array().map(Vec::len)), (200, Some(0)), "{later:#}");
    assert_problem(&read("offset=0&timestamp_ms=0"), 400, 8, "not both");
}

#[test]
fn the_brokers_own_topics_cannot_be_created_deleted_or_written_by_clients() {
    // A topic created under the metadata log's name once wrote client
    // records into the Raft log and stopped the broker.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    let base = http_of(&broker);
    let http = agent();
    let post =
        |path: &str, body: Value| answer(http.post(&format!("{base}{path}")).send_json(body));
    for name in ["__cluster_metadata", "__consumer_offsets"] {
        let created = post("/v1/topics", json!({"name": name}));
        assert_problem(&created, 400, 8, "the broker's own");
        let (status, _, produced) =
            post(&format!("/v1/topics/{name}/records"), json!([{"value": "x"}]));
        let refused = produced["records"][0]["error"]["detail"].as_str().unwrap_or_default();
        assert!(
            status >= 400 || refused.contains("the broker's own"),
            "{name}: {status} {produced:#}"
        );
    }
    let deleted = answer(http.delete(&format!("{base}/v1/topics/__consumer_offsets")).call());
    assert_problem(&deleted, 400, 8, "the broker's own");
    // The broker still serves.
    assert_eq!(post("/v1/topics", json!({"name": "after"})).0, 201);
    let values = json!([{"value": "fine"}]);
    assert_eq!(post("/v1/topics/after/records", values).0, 200);
}

/// Whether the peer closed `stream` (a read returns 0 bytes or fails)
/// within `wait`.
fn closed_within(stream: &mut std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    let deadline = std::time::Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        stream.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (408, say): the close follows
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn hostile_http_gets_4xx_or_a_closed_connection_while_binary_clients_go_on() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let base = http_of(&broker);
    let http_addr = base.trim_start_matches("http://").to_string();
    let http = agent();
    common::create_topic(&broker.addr, "steady", 2);

    // Hundreds of connections that send nothing, and one that sends half
    // a request head and stalls.
    let idle: Vec<std::net::TcpStream> =
        (0..500).map(|_| std::net::TcpStream::connect(&http_addr).expect("connect")).collect();
    let mut slow = std::net::TcpStream::connect(&http_addr).expect("connect");
    slow.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n").expect("half a head");

    // Meanwhile the binary protocol serves, and so does HTTP.
    let producer = common::producer(&broker);
    for i in 0..200 {
        let value = format!("steady {i}");
        common::send_and_wait(&producer, common::record("steady", None, &value)).expect("acked");
    }
    assert_eq!(answer(http.get(&format!("{base}/livez")).call()).0, 200);

    // Bad requests: each a 4xx, nothing created.
    let post = |path: &str, content_type: &str, body: &[u8]| {
        answer(
            http.post(&format!("{base}{path}")).set("Content-Type", content_type).send_bytes(body),
        )
    };
    // On a connection of its own: the broker closes it after the 413,
    // with the body unread.
    let huge = vec![b'x'; 17 << 20];
    let too_big = agent()
        .post(&format!("{base}/v1/topics/steady/records"))
        .set("Content-Type", "application/octet-stream")
        .send_bytes(&huge);
    match too_big {
        Err(ureq::Error::Status(code, _)) => assert_eq!(code, 413),
        Err(ureq::Error::Transport(_)) => {} // closed while sending: also refused
        Ok(r) => panic!("a 17 MiB body was taken: {}", r.status()),
    }
    assert_eq!(post("/v1/topics", "application/json", b"{\"name\": ").0, 400);
    assert_eq!(post("/v1/topics", "application/json", b"{\"name\": \"\xff\xfe\"}").0, 400);
    assert_eq!(post("/v1/topics/steady/records", "application/json", b"[{\"value\": 1}]").0, 400);
    let traversal = answer(http.get(&format!("{base}/v1/topics/..%2F..%2Fetc%2Fpasswd")).call());
    assert_problem(&traversal, 400, 8, "bad topic name");
    let header = "x".repeat(1 << 20);
    let oversized_head = http.get(&format!("{base}/livez")).set("X-Big", &header).call();
    match oversized_head {
        Err(ureq::Error::Status(code, _)) => assert!((400..500).contains(&code), "{code}"),
        Err(ureq::Error::Transport(_)) => {} // closed: also fine
        Ok(r) => panic!("a 1 MiB header was served: {}", r.status()),
    }
    let listed = answer(http.get(&format!("{base}/v1/topics")).call()).2;
    let names: Vec<&str> =
        listed.as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.iter().all(|n| !n.contains('/') && !n.starts_with(".")), "{names:?}");

    // The stalled head is cut after the header timeout (10 s).
    assert!(closed_within(&mut slow, Duration::from_secs(20)), "a stalled request head is closed");
    drop(idle);
    assert_eq!(answer(http.get(&format!("{base}/livez")).call()).0, 200);
    let read = common::consume_all(&broker.addr, "steady", 200);
    assert_eq!(read.len(), 200, "every binary-protocol record is there");
}
