//! `mamba group list|describe|reset-offsets|delete`: consumer groups, their
//! members, committed offsets and lag.

use crate::cli::{count, now_ms, parse_time_ms, say, CliError, ClientArgs, Output};
use crate::human;
use clap::Subcommand;
use mamba_net::client::{block_on, Admin, PartitionLag};
use mamba_net::protocol::{
    CommitOffset, ErrorCode, GroupDescription, ListOffsetsResult, TopicAssignment,
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups with their state, members and assignor.
    List,
    /// Show a group's members and what they hold, and per partition its
    /// committed offset, log end (high watermark), lag and owner, with the
    /// group's total lag.
    Describe {
        /// The group.
        group: String,
    },
    /// Set a group's committed offsets (the group must have no members:
    /// stop its consumers first).
    ///
    /// Prints, per partition, the committed offset before and after.
    /// Offsets past either end of a partition are clamped to its log start
    /// or log end.
    ResetOffsets {
        /// The group.
        group: String,
        /// A topic, or some of its partitions as TOPIC:0,2,5 (default: all
        /// of its partitions); repeatable.
        #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]", required = true)]
        topics: Vec<String>,
        /// Where to: earliest (log start), latest (log end), an offset,
        /// @TIME (the first record at or after it: @2026-11-30T12:00:00Z,
        /// @-10m, @MS), or shift:N (N records from the committed offset,
        /// or from the log start where none; N may be negative).
        #[arg(long, value_name = "WHERE", allow_hyphen_values = true)]
        to: String,
        /// Print what would change and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a group and its committed offsets (the group must have no
    /// members: stop its consumers first).
    Delete {
        /// The group.
        group: String,
        /// Succeed without a change when there is no such group.
        #[arg(long)]
        if_exists: bool,
    },
}

pub fn run(args: GroupArgs) -> Result<(), CliError> {
    let output = args.client.output();
    match args.command {
        GroupCommand::List => list(&args.client.admin()?, output),
        GroupCommand::Describe { group } => describe(&args.client.admin()?, &group, output),
        GroupCommand::ResetOffsets { group, topics, to, dry_run } => {
            // Everything the user typed is checked before the broker is asked.
            let to = ResetTo::parse(&to, now_ms())?;
            let topics =
                topics.iter().map(|t| TopicSpec::parse(t)).collect::<Result<Vec<_>, _>>()?;
            let plan = Reset { group: &group, topics: &topics, to, dry_run };
            reset_offsets(&args.client.admin()?, plan, output)
        }
        GroupCommand::Delete { group, if_exists } => {
            delete(&args.client.admin()?, &group, if_exists, output)
        }
    }
}

/// An error the broker gave for one entry of an answer.
fn entry_error(code: u16, message: String) -> CliError {
    let code = ErrorCode::from_u16(code);
    CliError { code: code.as_u16(), name: code.name(), message }
}

/// The refusal of a change to a group that has members, saying what to do.
fn group_not_empty(group: &str, what: &str) -> CliError {
    entry_error(
        ErrorCode::GroupNotEmpty.as_u16(),
        format!(
            "group {group} has members, so {what}: stop the group's consumers first \
             (`mamba group describe {group}` lists them); nothing changed"
        ),
    )
}

fn group_not_found(group: &str) -> CliError {
    entry_error(
        ErrorCode::GroupNotFound.as_u16(),
        format!("no group {group:?} (`mamba group list` shows the groups)"),
    )
}

fn list(admin: &Admin, output: Output) -> Result<(), CliError> {
    let groups = block_on(admin.list_groups())?;
    let mut rows = vec![["GROUP", "STATE", "MEMBERS", "ASSIGNOR"].map(String::from).to_vec()];
    for g in &groups {
        match output {
            Output::Json => say!(
                "{}",
                json!({
                    "group_id": g.group_id,
                    "state": g.state,
                    "member_count": g.member_count,
                    "assignor": g.assignor,
                })
            )?,
            Output::Text => rows.push(vec![
                g.group_id.clone(),
                g.state.clone(),
                g.member_count.to_string(),
                g.assignor.clone(),
            ]),
        }
    }
    if output == Output::Text && !groups.is_empty() {
        for line in human::table(&rows) {
            say!("{line}")?;
        }
    }
    Ok(())
}

/// One group's description, or the broker's error for it.
fn describe_one(admin: &Admin, group: &str) -> Result<GroupDescription, CliError> {
    let described = block_on(admin.describe_groups(&[group.to_string()]))?;
    let d = described
        .into_iter()
        .next()
        .ok_or_else(|| CliError::failed(format!("the broker described no group {group:?}")))?;
    match ErrorCode::from_u16(d.error_code) {
        ErrorCode::None => Ok(d),
        ErrorCode::GroupNotFound => Err(group_not_found(group)),
        _ => Err(entry_error(d.error_code, d.message)),
    }
}

/// `orders:0,1,2 payments:3`.
fn assignment_text(assignment: &[TopicAssignment]) -> String {
    let held: Vec<String> = assignment
        .iter()
        .filter(|t| !t.partitions.is_empty())
        .map(|t| {
            let partitions: Vec<String> = t.partitions.iter().map(u32::to_string).collect();
            format!("{}:{}", t.topic, partitions.join(","))
        })
        .collect();
    if held.is_empty() {
        "-".to_string()
    } else {
        held.join(" ")
    }
}

fn describe(admin: &Admin, group: &str, output: Output) -> Result<(), CliError> {
    let d = describe_one(admin, group)?;
    let lags = block_on(admin.group_lags(&d))?;
    let total_lag: u64 = lags.values().filter_map(PartitionLag::lag).sum();
    let unknown = lags.values().filter(|l| l.lag().is_none()).count();
    match output {
        Output::Json => {
            let members: Vec<_> = d
                .members
                .iter()
                .map(|m| {
                    json!({
                        "member_id": m.member_id,
                        "instance_id": m.instance_id,
                        "client_id": m.client_id,
                        "host": m.host,
                        "member_epoch": m.member_epoch,
                        "assignment": m.assignment.iter().map(|t| json!({"topic": t.topic, "partitions": t.partitions})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let partitions: Vec<_> = lags
                .iter()
                .map(|((topic, partition), l)| {
                    json!({
                        "topic": topic,
                        "partition": partition,
                        "committed_offset": l.committed,
                        "high_watermark": l.end,
                        "lag": l.lag(),
                        "owner": l.owner,
                        "error": l.error,
                    })
                })
                .collect();
            say!(
                "{}",
                json!({
                    "group_id": d.group_id,
                    "state": d.state,
                    "group_epoch": d.group_epoch,
                    "assignor": d.assignor,
                    "members": members,
                    "partitions": partitions,
                    "total_lag": total_lag,
                })
            )?;
        }
        Output::Text => {
            say!(
                "group {}: {}, {}, assignor {}, group epoch {}",
                d.group_id,
                d.state,
                count(d.members.len(), "member"),
                d.assignor,
                d.group_epoch
            )?;
            if !d.members.is_empty() {
                let mut rows = vec![["MEMBER", "CLIENT", "HOST", "EPOCH", "PARTITIONS"]
                    .map(String::from)
                    .to_vec()];
                for m in &d.members {
                    let member = match &m.instance_id {
                        Some(instance) => format!("{} (instance {instance})", m.member_id),
                        None => m.member_id.clone(),
                    };
                    rows.push(vec![
                        member,
                        m.client_id.clone(),
                        m.host.clone(),
                        m.member_epoch.to_string(),
                        assignment_text(&m.assignment),
                    ]);
                }
                say!("")?;
                for line in human::table(&rows) {
                    say!("{line}")?;
                }
            }
            if !lags.is_empty() {
                let mut rows = vec![["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "OWNER"]
                    .map(String::from)
                    .to_vec()];
                let dash = || "-".to_string();
                for ((topic, partition), l) in &lags {
                    let end = match (&l.end, &l.error) {
                        (Some(end), _) => end.to_string(),
                        (None, Some(why)) => format!("? ({why})"),
                        (None, None) => dash(),
                    };
                    rows.push(vec![
                        topic.clone(),
                        partition.to_string(),
                        l.committed.map_or_else(dash, |c| c.to_string()),
                        end,
                        l.lag().map_or_else(dash, |lag| lag.to_string()),
                        l.owner.clone().unwrap_or_else(dash),
                    ]);
                }
                say!("")?;
                for line in human::table(&rows) {
                    say!("{line}")?;
                }
            }
            let mut total = format!("total lag: {}", count(total_lag as usize, "record"));
            if unknown > 0 {
                total.push_str(&format!(
                    " ({} without a commit or a known end not counted)",
                    count(unknown, "partition")
                ));
            }
            say!("{total}")?;
        }
    }
    Ok(())
}

/// What `--to` accepts, for error messages.
const TO_FORMS: &str = "earliest, latest, an offset (1500), @TIME (@2026-11-30T12:00:00Z, \
                        @-10m, @MS) or shift:N (shift:-2, shift:100)";

/// Where `reset-offsets --to` moves a group's committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetTo {
    Earliest,
    Latest,
    Offset(u64),
    /// The first record at or after this time (ms since the epoch).
    Time(i64),
    /// This many records from the committed offset (the log start where
    /// none is committed).
    Shift(i64),
}

impl ResetTo {
    fn parse(text: &str, now_ms: i64) -> Result<ResetTo, CliError> {
        let bad = |why: &str| CliError::usage(format!("--to {text:?} {why}; use {TO_FORMS}"));
        match text {
            "earliest" => return Ok(ResetTo::Earliest),
            "latest" => return Ok(ResetTo::Latest),
            _ => {}
        }
        if let Some(time) = text.strip_prefix('@') {
            let at_ms =
                parse_time_ms(time, now_ms).map_err(|e| CliError::usage(format!("--to: {e}")))?;
            return Ok(ResetTo::Time(at_ms));
        }
        if let Some(n) = text.strip_prefix("shift:") {
            return n
                .parse::<i64>()
                .map(ResetTo::Shift)
                .map_err(|e| bad(&format!("does not shift by a whole number of records ({e})")));
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse::<u64>()
                .map(ResetTo::Offset)
                .map_err(|e| bad(&format!("is not an offset ({e})")));
        }
        Err(bad("is not a place to reset to"))
    }
}

/// `--topic TOPIC[:PARTITIONS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopicSpec {
    topic: String,
    /// `None`: every partition of the topic.
    partitions: Option<BTreeSet<u32>>,
}

impl TopicSpec {
    fn parse(text: &str) -> Result<TopicSpec, CliError> {
        let Some((topic, list)) = text.split_once(':') else {
            return Ok(TopicSpec { topic: text.to_string(), partitions: None });
        };
        let partitions = list
            .split(',')
            .map(|p| p.trim().parse::<u32>())
            .collect::<Result<BTreeSet<u32>, _>>()
            .map_err(|e| {
                CliError::usage(format!(
                    "--topic {text:?}: {e}; partitions are numbers separated by commas \
                     ({topic}:0,2,5), or leave them out for all"
                ))
            })?;
        Ok(TopicSpec { topic: topic.to_string(), partitions: Some(partitions) })
    }
}

/// What `reset-offsets` was asked to do.
struct Reset<'a> {
    group: &'a str,
    topics: &'a [TopicSpec],
    to: ResetTo,
    dry_run: bool,
}

/// One partition's reset.
#[derive(Debug)]
struct Moved {
    topic: String,
    partition: u32,
    old: Option<u64>,
    new: u64,
}

/// A partition's offsets that `--to` resolves against.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    start: u64,
    end: u64,
    committed: Option<u64>,
    /// The offset `--to @TIME` found.
    at_time: Option<u64>,
}

/// The new offset: `to` resolved in `b`, within `[start, end]`.
fn new_offset(to: ResetTo, b: Bounds) -> u64 {
    let wanted = match to {
        ResetTo::Earliest => b.start,
        ResetTo::Latest => b.end,
        ResetTo::Offset(offset) => offset,
        ResetTo::Time(_) => b.at_time.unwrap_or(b.end),
        ResetTo::Shift(n) => {
            let from = b.committed.unwrap_or(b.start);
            if n >= 0 {
                from.saturating_add(n.unsigned_abs())
            } else {
                from.saturating_sub(n.unsigned_abs())
            }
        }
    };
    wanted.clamp(b.start, b.end.max(b.start))
}

/// Offsets per partition from a list_offsets answer, or the partitions
/// that could not answer.
fn offsets_of(results: Vec<ListOffsetsResult>, failed: &mut Vec<String>) -> BTreeMap<u32, u64> {
    let mut found = BTreeMap::new();
    for r in results {
        if r.error_code == 0 {
            found.insert(r.partition, r.offset);
        } else {
            failed.push(format!("{}/{}: {}", r.topic, r.partition, r.message));
        }
    }
    found
}

/// The partitions `spec` names, checked against the topic.
fn partitions_of(admin: &Admin, spec: &TopicSpec) -> Result<Vec<u32>, CliError> {
    let meta = block_on(admin.topic_metadata(&spec.topic))?;
    let all: BTreeSet<u32> = meta.partitions.iter().map(|p| p.partition).collect();
    let Some(wanted) = &spec.partitions else {
        return Ok(all.into_iter().collect());
    };
    if let Some(missing) = wanted.iter().find(|p| !all.contains(p)) {
        return Err(CliError::usage(format!(
            "--topic {}: topic {} has no partition {missing}: it has {} (0..={})",
            spec.topic,
            spec.topic,
            count(all.len(), "partition"),
            all.len().saturating_sub(1)
        )));
    }
    Ok(wanted.iter().copied().collect())
}

/// Where each partition of `spec` would move.
fn plan_topic(
    admin: &Admin,
    group: &str,
    spec: &TopicSpec,
    to: ResetTo,
) -> Result<Vec<Moved>, CliError> {
    let partitions = partitions_of(admin, spec)?;
    let topic = spec.topic.as_str();
    let mut failed = Vec::new();
    let starts = offsets_of(
        block_on(admin.list_offsets(topic, &partitions, EARLIEST_TIMESTAMP))?,
        &mut failed,
    );
    let ends = offsets_of(
        block_on(admin.list_offsets(topic, &partitions, LATEST_TIMESTAMP))?,
        &mut failed,
    );
    let at_time = match to {
        ResetTo::Time(at_ms) => {
            offsets_of(block_on(admin.list_offsets(topic, &partitions, at_ms))?, &mut failed)
        }
        _ => BTreeMap::new(),
    };
    if !failed.is_empty() {
        return Err(CliError::failed(format!(
            "{} could not say their offsets, so nothing changed: {}",
            count(failed.len(), "partition"),
            failed.join("; ")
        )));
    }
    let wanted = TopicAssignment { topic: topic.to_string(), partitions: partitions.clone() };
    let committed: BTreeMap<u32, u64> = block_on(admin.fetch_offsets(group, Some(vec![wanted])))?
        .into_iter()
        .filter_map(|o| Some((o.partition, u64::try_from(o.offset).ok()?)))
        .collect();
    partitions
        .iter()
        .map(|&p| {
            let (Some(&start), Some(&end)) = (starts.get(&p), ends.get(&p)) else {
                return Err(CliError::failed(format!(
                    "the broker did not say where {topic}/{p} starts and ends; nothing changed"
                )));
            };
            let committed = committed.get(&p).copied();
            let bounds = Bounds { start, end, committed, at_time: at_time.get(&p).copied() };
            Ok(Moved {
                topic: topic.to_string(),
                partition: p,
                old: committed,
                new: new_offset(to, bounds),
            })
        })
        .collect()
}

fn reset_offsets(admin: &Admin, plan: Reset<'_>, output: Output) -> Result<(), CliError> {
    let group = plan.group;
    let mut moves = Vec::new();
    for spec in plan.topics {
        moves.extend(plan_topic(admin, group, spec, plan.to)?);
    }
    if !plan.dry_run {
        let offsets = moves
            .iter()
            .map(|m| CommitOffset {
                topic: m.topic.clone(),
                partition: m.partition,
                offset: m.new,
                metadata: String::new(),
            })
            .collect();
        let results = block_on(admin.reset_offsets(group, offsets))?;
        let refused: Vec<_> = results.iter().filter(|r| r.error_code != 0).collect();
        if refused.iter().any(|r| r.error_code == ErrorCode::GroupNotEmpty.as_u16()) {
            return Err(group_not_empty(group, "its offsets cannot be reset"));
        }
        if let Some(first) = refused.first() {
            let why: Vec<String> = refused
                .iter()
                .map(|r| format!("{}/{}: {}", r.topic, r.partition, r.message))
                .collect();
            let message = format!(
                "{} of {} refused the reset (the others were reset): {}",
                count(refused.len(), "partition"),
                moves.len(),
                why.join("; ")
            );
            return Err(entry_error(first.error_code, message));
        }
    }
    match output {
        Output::Json => {
            let offsets: Vec<_> = moves
                .iter()
                .map(|m| {
                    json!({"topic": m.topic, "partition": m.partition, "old_offset": m.old, "new_offset": m.new})
                })
                .collect();
            say!("{}", json!({"group_id": group, "dry_run": plan.dry_run, "offsets": offsets}))?;
        }
        Output::Text => {
            let mut rows = vec![["TOPIC", "PARTITION", "OLD", "NEW"].map(String::from).to_vec()];
            for m in &moves {
                rows.push(vec![
                    m.topic.clone(),
                    m.partition.to_string(),
                    m.old.map_or_else(|| "-".to_string(), |o| o.to_string()),
                    m.new.to_string(),
                ]);
            }
            for line in human::table(&rows) {
                say!("{line}")?;
            }
            if plan.dry_run {
                say!("dry run: group {group}'s offsets did not change (run again without --dry-run to reset them)")?;
            } else {
                say!("reset {} of group {group}", count(moves.len(), "offset"))?;
            }
        }
    }
    Ok(())
}

fn delete(admin: &Admin, group: &str, if_exists: bool, output: Output) -> Result<(), CliError> {
    let results = block_on(admin.delete_groups(&[group.to_string()]))?;
    let r = results.into_iter().next().ok_or_else(|| {
        CliError::failed(format!("the broker gave no result for group {group:?}"))
    })?;
    match ErrorCode::from_u16(r.error_code) {
        ErrorCode::None => match output {
            Output::Json => say!("{}", json!({"deleted": group})),
            Output::Text => say!("deleted group {group} and its committed offsets"),
        },
        ErrorCode::GroupNotFound if if_exists => match output {
            Output::Json => say!("{}", json!({"absent": group})),
            Output::Text => say!("no group {group}; nothing changed"),
        },
        ErrorCode::GroupNotFound => {
            Err(group_not_found(group).hint("--if-exists accepts a missing group"))
        }
        ErrorCode::GroupNotEmpty => Err(group_not_empty(group, "it cannot be deleted")),
        _ => Err(entry_error(r.error_code, r.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_takes_the_ends_an_offset_a_time_or_a_shift_and_lists_the_forms_otherwise() {
        let now = 1_764_504_000_000;
        assert_eq!(ResetTo::parse("earliest", now), Ok(ResetTo::Earliest));
        assert_eq!(ResetTo::parse("latest", now), Ok(ResetTo::Latest));
        assert_eq!(ResetTo::parse("1500", now), Ok(ResetTo::Offset(1500)));
        assert_eq!(ResetTo::parse("@-10m", now), Ok(ResetTo::Time(now - 600_000)));
        assert_eq!(ResetTo::parse("shift:-2", now), Ok(ResetTo::Shift(-2)));
        assert_eq!(ResetTo::parse("shift:100", now), Ok(ResetTo::Shift(100)));
        for bad in ["", "begin", "shift:x", "-5", "99999999999999999999999"] {
            let e = ResetTo::parse(bad, now).expect_err(bad);
            assert!(e.message.contains(&format!("{bad:?}")), "{}", e.message);
            assert!(
                e.message.contains("shift:N") && e.message.contains("earliest"),
                "{}",
                e.message
            );
        }
        let e = ResetTo::parse("@yesterday", now).expect_err("bad time");
        assert!(e.message.contains("@-10m") && e.message.contains("yesterday"), "{}", e.message);
    }

    #[test]
    fn new_offsets_stay_within_the_log() {
        let b = Bounds { start: 10, end: 20, committed: Some(15), at_time: Some(12) };
        assert_eq!(new_offset(ResetTo::Earliest, b), 10);
        assert_eq!(new_offset(ResetTo::Latest, b), 20);
        assert_eq!(new_offset(ResetTo::Offset(17), b), 17);
        assert_eq!(new_offset(ResetTo::Offset(5), b), 10, "before the start: the start");
        assert_eq!(new_offset(ResetTo::Offset(99), b), 20, "past the end: the end");
        assert_eq!(new_offset(ResetTo::Time(0), b), 12);
        assert_eq!(new_offset(ResetTo::Shift(-2), b), 13);
        assert_eq!(new_offset(ResetTo::Shift(-100), b), 10);
        assert_eq!(new_offset(ResetTo::Shift(100), b), 20);
        let none = Bounds { committed: None, ..b };
        assert_eq!(new_offset(ResetTo::Shift(3), none), 13, "from the start without a commit");
    }

    #[test]
    fn topics_take_an_optional_partition_list() {
        assert_eq!(
            TopicSpec::parse("orders"),
            Ok(TopicSpec { topic: "orders".into(), partitions: None })
        );
        assert_eq!(
            TopicSpec::parse("orders:0,2,5"),
            Ok(TopicSpec { topic: "orders".into(), partitions: Some([0, 2, 5].into()) })
        );
        let e = TopicSpec::parse("orders:0,x").expect_err("bad list");
        assert!(e.message.contains("orders:0,2,5"), "{}", e.message);
    }
}
