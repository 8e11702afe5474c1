//! `mamba cluster status|brokers|voters add|remove`: the metadata quorum
//! and the brokers, as the controller sees them. (The operator's actions,
//! `failover` and the rest, are `cluster_actions.rs`.)
//!
//! Any broker answers `cluster_status`, but only the controller (the
//! quorum's leader) knows the voters' log lags and the brokers' last
//! heartbeats. So these commands ask a broker of `--brokers`, and when it
//! is not the controller they ask the controller too, at the client
//! address the metadata gives it. When it cannot be asked, the first
//! answer is shown and says what is missing and why.

use crate::cli::{say, CliError, ClientArgs, Output};
use crate::cluster_actions::ActionCommand;
use crate::human;
use clap::Subcommand;
use mamba_net::client::{block_on, Admin, AdminConfig, ClientError, VoterChange};
use mamba_net::protocol::{BrokerStatus, ClusterStatusResponse};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// The cluster id; the controller (the metadata quorum's leader) and
    /// its term; each voter and learner with its log lag; each broker with
    /// its status, last heartbeat and partitions; offline partitions.
    Status {
        #[command(flatten)]
        digests: DigestArgs,
    },
    /// Each broker: client address, rack, status (alive, fenced,
    /// decommissioning), last heartbeat, partitions led and hosted.
    Brokers {
        #[command(flatten)]
        digests: DigestArgs,
    },
    /// Change the voters of the metadata quorum, one node at a time.
    Voters {
        #[command(subcommand)]
        command: VotersCommand,
    },
    #[command(flatten)]
    Action(ActionCommand),
}

#[derive(clap::Args, Debug, Clone, Copy)]
struct DigestArgs {
    /// Also ask every broker how far it applied the metadata and its
    /// digest: brokers with equal digests hold equal metadata.
    #[arg(long)]
    digests: bool,
}

#[derive(Subcommand, Debug)]
enum VotersCommand {
    /// Make a registered broker (one that joined with --seeds: a
    /// learner) a voter of the metadata quorum.
    Add {
        /// The broker's node id.
        node_id: u64,
    },
    /// Make a voter leave the metadata quorum; it stays a broker and
    /// follows the metadata as a learner.
    Remove {
        /// The voter's node id.
        node_id: u64,
    },
}

/// How long the controller and each broker asked for its digest may take
/// to answer: a status is for a person waiting at a terminal.
const PEER_REQUEST_TIMEOUT_MS: u64 = 5_000;

/// Offline partitions named in text; the rest are counted.
const OFFLINE_SHOWN_MAX: usize = 10;

pub fn run(args: ClusterArgs) -> Result<(), CliError> {
    let output = args.client.output();
    match args.command {
        ClusterCommand::Status { digests } => {
            let view = controller_view(&args.client)?;
            let digests = digests.digests.then(|| ask_digests(&view));
            status(&view, digests.as_ref(), output)
        }
        ClusterCommand::Brokers { digests } => {
            let view = controller_view(&args.client)?;
            let digests = digests.digests.then(|| ask_digests(&view));
            brokers(&view, digests.as_ref(), output)
        }
        ClusterCommand::Voters { command } => voters(&args.client, command, output),
        ClusterCommand::Action(command) => {
            crate::cluster_actions::run(&args.client, command, output)
        }
    }
}

/// The cluster's status, from the controller when it could be asked.
struct ControllerView {
    /// The controller's answer, or else the first broker's.
    status: ClusterStatusResponse,
    /// Every answer received, by the node that gave it (for digests).
    answers: BTreeMap<u64, ClusterStatusResponse>,
    /// Why `status` is not the controller's, when it is not.
    missing: Option<String>,
}

impl ControllerView {
    fn answered_by_controller(&self) -> bool {
        self.missing.is_none()
    }
}

fn controller_view(client: &ClientArgs) -> Result<ControllerView, CliError> {
    let admin = client.admin()?;
    let first = block_on(admin.cluster_status())?;
    let mut answers = BTreeMap::from([(first.node_id, first.clone())]);
    let missing = match first.leader_id {
        None => Some(
            "waiting for quorum: the metadata quorum has no leader now (an election, or too few voters up)".to_string(),
        ),
        Some(leader) if leader == first.node_id => None,
        Some(leader) => match client_address(&first, leader) {
            None => Some(format!("the controller, node {leader}, has no client address yet")),
            Some(address) => match ask_status(address) {
                Ok(answer) if answer.leader_id == Some(leader) && answer.node_id == leader => {
                    answers.insert(leader, answer.clone());
                    let missing = None;
                    return Ok(ControllerView { status: answer, answers, missing });
                }
                Ok(answer) => {
                    answers.insert(answer.node_id, answer);
                    Some(format!("node {leader} at {address} no longer leads the quorum"))
                }
                Err(e) => {
                    Some(format!("the controller, node {leader} at {address}, did not answer: {e}"))
                }
            },
        },
    };
    Ok(ControllerView { status: first, answers, missing })
}

fn client_address(status: &ClusterStatusResponse, node_id: u64) -> Option<&str> {
    status
        .brokers
        .iter()
        .find(|b| u64::from(b.node_id) == node_id && !b.client_address.is_empty())
        .map(|b| b.client_address.as_str())
}

/// One broker's answer, at most `PEER_REQUEST_TIMEOUT_MS` after it was asked.
fn ask_status(address: &str) -> Result<ClusterStatusResponse, ClientError> {
    let config = AdminConfig { request_timeout_ms: PEER_REQUEST_TIMEOUT_MS };
    let admin = Admin::connect_with(address, config)?;
    block_on(admin.cluster_status())
}

/// What one broker said of the metadata it applied.
enum Digest {
    Applied { applied_index: u64, metadata_digest: u64, leader_id: Option<u64> },
    Unknown(String),
}

/// Asks every registered broker not asked yet for its status, all at once
/// (each on its own thread), and waits at most for the slowest within the
/// request timeout.
fn ask_digests(view: &ControllerView) -> BTreeMap<u32, Digest> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut digests = BTreeMap::new();
    let mut waiting = 0usize;
    for b in &view.status.brokers {
        if let Some(answer) = view.answers.get(&u64::from(b.node_id)) {
            digests.insert(b.node_id, digest_of(answer));
            continue;
        }
        let (node_id, address, tx) = (b.node_id, b.client_address.clone(), tx.clone());
        let spawned = std::thread::Builder::new().name("mamba-digest".into()).spawn(move || {
            let answer = ask_status(&address).map_err(|e| e.to_string());
            // The receiver is gone only once the wait is over.
            tx.send((node_id, answer)).ok();
        });
        match spawned {
            Ok(_) => waiting += 1,
            Err(e) => {
                digests.insert(b.node_id, Digest::Unknown(format!("not asked: {e}")));
            }
        }
    }
    // A connection attempt and a request, each bounded.
    let deadline = Instant::now()
        + mamba_net::client::CONNECT_TIMEOUT
        + Duration::from_millis(PEER_REQUEST_TIMEOUT_MS);
    while waiting > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((node_id, answer)) = rx.recv_timeout(left) else { break };
        waiting -= 1;
        let digest = match answer {
            Ok(answer) if u64::from(node_id) == answer.node_id => digest_of(&answer),
            Ok(answer) => Digest::Unknown(format!(
                "node {} answers at node {node_id}'s address",
                answer.node_id
            )),
            Err(message) => Digest::Unknown(message),
        };
        digests.insert(node_id, digest);
    }
    for b in &view.status.brokers {
        digests.entry(b.node_id).or_insert_with(|| Digest::Unknown("no answer in time".into()));
    }
    digests
}

fn digest_of(answer: &ClusterStatusResponse) -> Digest {
    Digest::Applied {
        applied_index: answer.applied_index,
        metadata_digest: answer.metadata_digest,
        leader_id: answer.leader_id,
    }
}

/// A metadata digest as 16 hex digits (also in JSON: a u64 does not fit
/// a JSON reader's double).
fn hex(digest: u64) -> String {
    format!("{digest:016x}")
}

fn broker_json(b: &BrokerStatus, digest: Option<&Digest>) -> serde_json::Value {
    let mut value = json!({
        "node_id": b.node_id,
        "client_address": b.client_address,
        "cluster_address": b.cluster_address,
        "rack": b.rack,
        "status": b.status,
        "drained": b.drained,
        "last_heartbeat_age_ms": b.last_heartbeat_age_ms,
        "partitions_led": b.partitions_led,
        "partitions_hosted": b.partitions_hosted,
    });
    if let (Some(object), Some(digest)) = (value.as_object_mut(), digest) {
        let extra = match digest {
            Digest::Applied { applied_index, metadata_digest, leader_id } => json!({
                "applied_index": applied_index,
                "metadata_digest": hex(*metadata_digest),
                "leader_id": leader_id,
            }),
            Digest::Unknown(why) => json!({"digest_error": why}),
        };
        if let serde_json::Value::Object(extra) = extra {
            object.extend(extra);
        }
    }
    value
}

/// The broker table, header first.
fn broker_rows(view: &ControllerView, digests: Option<&BTreeMap<u32, Digest>>) -> Vec<Vec<String>> {
    let mut header = ["BROKER", "CLIENT ADDRESS", "RACK", "STATUS", "HEARTBEAT", "LED", "HOSTED"]
        .map(String::from)
        .to_vec();
    if digests.is_some() {
        header.extend(["APPLIED", "DIGEST"].map(String::from));
    }
    let mut rows = vec![header];
    for b in &view.status.brokers {
        let heartbeat = match b.last_heartbeat_age_ms {
            Some(ms) => format!("{} ago", human::duration_ms(ms)),
            // The controller has not heard from it since it was elected.
            None if view.answered_by_controller() => "none".to_string(),
            None => "?".to_string(),
        };
        let mut row = vec![
            b.node_id.to_string(),
            b.client_address.clone(),
            b.rack.clone().unwrap_or_else(|| "-".into()),
            if b.drained && b.status == "alive" {
                "alive, drained".into()
            } else {
                b.status.clone()
            },
            heartbeat,
            b.partitions_led.to_string(),
            b.partitions_hosted.to_string(),
        ];
        if let Some(digests) = digests {
            match digests.get(&b.node_id) {
                Some(Digest::Applied { applied_index, metadata_digest, .. }) => {
                    row.extend([applied_index.to_string(), hex(*metadata_digest)])
                }
                Some(Digest::Unknown(why)) => row.extend(["?".to_string(), format!("? ({why})")]),
                None => row.extend(["?".to_string(), "?".to_string()]),
            }
        }
        rows.push(row);
    }
    rows
}

fn status(
    view: &ControllerView,
    digests: Option<&BTreeMap<u32, Digest>>,
    output: Output,
) -> Result<(), CliError> {
    let s = &view.status;
    let offline = &s.offline_partitions;
    match output {
        Output::Json => say!(
            "{}",
            json!({
                "cluster_id": s.cluster_id,
                "controller_id": s.leader_id,
                "term": s.term,
                "answered_by": s.node_id,
                "from_controller": view.answered_by_controller(),
                "missing": view.missing,
                "applied_index": s.applied_index,
                "metadata_digest": hex(s.metadata_digest),
                "voters": s.voters.iter().map(|v| json!({
                    "node_id": v.node_id,
                    "cluster_address": v.cluster_address,
                    "role": v.role,
                    "log_lag": v.log_lag,
                })).collect::<Vec<_>>(),
                "brokers": s.brokers.iter().map(|b| {
                    broker_json(b, digests.and_then(|d| d.get(&b.node_id)))
                }).collect::<Vec<_>>(),
                "offline_partitions": {
                    "count": offline.len(),
                    "partitions": offline.iter().map(|p| json!({"topic": p.topic, "partition": p.partition})).collect::<Vec<_>>(),
                },
                "settings": s.settings.iter().map(|c| (c.name.clone(), json!(c.value))).collect::<serde_json::Map<_, _>>(),
                "moves": s.moves.iter().map(|m| json!({
                    "topic": m.topic, "partition": m.partition, "replicas": m.replicas, "target": m.target,
                })).collect::<Vec<_>>(),
            })
        ),
        Output::Text => {
            let cluster_id =
                if s.cluster_id.is_empty() { "(not initialized yet)" } else { &s.cluster_id };
            let controller = match s.leader_id {
                Some(id) => format!("node {id}, term {}", s.term),
                None => format!("none (term {})", s.term),
            };
            let mut summary = vec![
                vec!["cluster".to_string(), cluster_id.to_string()],
                vec!["controller".to_string(), controller],
                vec![
                    "metadata".to_string(),
                    format!("applied index {}, digest {}", s.applied_index, hex(s.metadata_digest)),
                ],
            ];
            if let Some(why) = &view.missing {
                summary.push(vec![
                    "note".to_string(),
                    format!(
                        "answered by node {}, not the controller: {why}; log lags and heartbeat ages unknown",
                        s.node_id
                    ),
                ]);
            }
            for line in human::table(&summary) {
                say!("{line}")?;
            }
            say!("")?;
            let mut rows =
                vec![["VOTER", "CLUSTER ADDRESS", "ROLE", "LOG LAG"].map(String::from).to_vec()];
            let mut voters: Vec<_> = s.voters.iter().collect();
            voters.sort_by_key(|v| (v.role == "learner", v.node_id));
            for v in voters {
                rows.push(vec![
                    v.node_id.to_string(),
                    v.cluster_address.clone(),
                    v.role.clone(),
                    v.log_lag.map_or_else(|| "?".to_string(), |lag| lag.to_string()),
                ]);
            }
            for line in human::table(&rows) {
                say!("{line}")?;
            }
            say!("")?;
            for line in human::table(&broker_rows(view, digests)) {
                say!("{line}")?;
            }
            say!("")?;
            if offline.is_empty() {
                say!("offline partitions: none")?;
            } else {
                let mut named: Vec<String> = offline
                    .iter()
                    .take(OFFLINE_SHOWN_MAX)
                    .map(|p| format!("{}/{}", p.topic, p.partition))
                    .collect();
                if offline.len() > OFFLINE_SHOWN_MAX {
                    named.push(format!("and {} more", offline.len() - OFFLINE_SHOWN_MAX));
                }
                say!("offline partitions: {} ({})", offline.len(), named.join(", "))?;
            }
            for c in &s.settings {
                say!("setting: {}={}", c.name, c.value)?;
            }
            for m in &s.moves {
                let list =
                    |ids: &[u32]| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
                say!(
                    "moving: {}/{} from {} to {}",
                    m.topic,
                    m.partition,
                    list(&m.replicas),
                    list(&m.target)
                )?;
            }
            Ok(())
        }
    }
}

fn brokers(
    view: &ControllerView,
    digests: Option<&BTreeMap<u32, Digest>>,
    output: Output,
) -> Result<(), CliError> {
    match output {
        Output::Json => {
            for b in &view.status.brokers {
                say!("{}", broker_json(b, digests.and_then(|d| d.get(&b.node_id))))?;
            }
        }
        Output::Text => {
            for line in human::table(&broker_rows(view, digests)) {
                say!("{line}")?;
            }
        }
    }
    if let Some(why) = &view.missing {
        // Beside the table, not in it: scripts reading the table still can.
        eprintln!(
            "mamba: heartbeat ages unknown: answered by node {}, not the controller: {why}",
            view.status.node_id
        );
    }
    Ok(())
}

fn voters(client: &ClientArgs, command: VotersCommand, output: Output) -> Result<(), CliError> {
    let change = match command {
        VotersCommand::Add { node_id } => VoterChange::Add(node_id),
        VotersCommand::Remove { node_id } => VoterChange::Remove(node_id),
    };
    let admin = client.admin()?;
    block_on(admin.alter_voters(change))?;
    match (output, change) {
        (Output::Json, VoterChange::Add(id)) => say!("{}", json!({"voter_added": id})),
        (Output::Json, VoterChange::Remove(id)) => say!("{}", json!({"voter_removed": id})),
        (Output::Text, VoterChange::Add(id)) => say!("node {id} is a voter now"),
        (Output::Text, VoterChange::Remove(id)) => say!(
            "node {id} is no longer a voter; it stays a broker and follows the metadata as a learner"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamba_net::protocol::{OfflinePartition, VoterStatus};

    fn answer(node_id: u64, leader_id: Option<u64>) -> ClusterStatusResponse {
        ClusterStatusResponse {
            error_code: 0,
            message: String::new(),
            cluster_id: "c".into(),
            node_id,
            leader_id,
            term: 3,
            applied_index: 40,
            voters: vec![VoterStatus {
                node_id: 1,
                cluster_address: "127.0.0.1:9401".into(),
                role: "leader".into(),
                log_lag: Some(0),
            }],
            brokers: vec![BrokerStatus {
                node_id: 1,
                client_address: "127.0.0.1:9400".into(),
                cluster_address: "127.0.0.1:9401".into(),
                rack: None,
                status: "alive".into(),
                drained: false,
                last_heartbeat_age_ms: leader_id.filter(|l| *l == node_id).map(|_| 1_500),
                partitions_led: 2,
                partitions_hosted: 2,
            }],
            offline_partitions: vec![OfflinePartition { topic: "t".into(), partition: 0 }],
            metadata_digest: 0xab,
            settings: vec![],
            moves: vec![],
        }
    }

    #[test]
    fn heartbeat_ages_read_as_ago_or_unknown_when_not_from_the_controller() {
        let from_controller =
            ControllerView { status: answer(1, Some(1)), answers: BTreeMap::new(), missing: None };
        let rows = broker_rows(&from_controller, None);
        assert_eq!(rows[0][4], "HEARTBEAT");
        assert_eq!(rows[1][4], "1s ago");
        let elsewhere = ControllerView {
            status: answer(2, Some(1)),
            answers: BTreeMap::new(),
            missing: Some("down".into()),
        };
        assert_eq!(broker_rows(&elsewhere, None)[1][4], "?");
    }

    #[test]
    fn digests_add_columns_and_json_fields_in_hex() {
        let view =
            ControllerView { status: answer(1, Some(1)), answers: BTreeMap::new(), missing: None };
        let digests = BTreeMap::from([(
            1u32,
            Digest::Applied { applied_index: 40, metadata_digest: 0xab, leader_id: Some(1) },
        )]);
        let rows = broker_rows(&view, Some(&digests));
        assert_eq!(rows[0][7..], ["APPLIED".to_string(), "DIGEST".to_string()]);
        assert_eq!(rows[1][8], "00000000000000ab");
        let value = broker_json(&view.status.brokers[0], digests.get(&1));
        assert_eq!(value["metadata_digest"], "00000000000000ab");
        assert_eq!(value["applied_index"], 40);
    }
}
