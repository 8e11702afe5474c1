//! What a `rebalance` member process tells its parent, one line each on
//! its standard output (text: a few hundred thousand lines a second parse
//! well within a core, and a person can read a member's output):
//!
//! ```text
//! A <unix_ns> <p>,<p>,…           partitions gained (rebalance listener)
//! R <unix_ns> <p>,<p>,…           partitions given up
//! D <unix_ns> <partition> <producer> <seq>   a record delivered
//! C <latency_us>                  a commit_sync that succeeded
//! F <message>                     a commit_sync that failed
//! L <unix_ns>                     left the group (close returned)
//! E <message>                     the member failed and stops
//! ```
//!
//! The parent writes `leave` to a member's standard input to make it leave
//! cleanly; the end of its input (the parent gone) means the same.

use std::fmt::Write;

/// A parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberMessage {
    Assigned { at_ns: u64, partitions: Vec<u32> },
    Revoked { at_ns: u64, partitions: Vec<u32> },
    Delivered { at_ns: u64, partition: u32, producer: u32, seq: u64 },
    Committed { latency_us: u64 },
    CommitFailed { message: String },
    Left { at_ns: u64 },
    Failed { message: String },
}

/// What the parent writes to make a member leave.
pub const LEAVE_COMMAND: &str = "leave";

/// Appends `message` as one line to `out`.
pub fn encode(message: &MemberMessage, out: &mut String) {
    match message {
        MemberMessage::Assigned { at_ns, partitions } => {
            push(out, format_args!("A {at_ns} "));
            push_list(out, partitions);
        }
        MemberMessage::Revoked { at_ns, partitions } => {
            push(out, format_args!("R {at_ns} "));
            push_list(out, partitions);
        }
        MemberMessage::Delivered { at_ns, partition, producer, seq } => {
            push(out, format_args!("D {at_ns} {partition} {producer} {seq}"));
        }
        MemberMessage::Committed { latency_us } => push(out, format_args!("C {latency_us}")),
        MemberMessage::CommitFailed { message } => {
            push(out, format_args!("F {}", one_line(message)));
        }
        MemberMessage::Left { at_ns } => push(out, format_args!("L {at_ns}")),
        MemberMessage::Failed { message } => push(out, format_args!("E {}", one_line(message))),
    }
    out.push('\n');
}

fn push(out: &mut String, args: std::fmt::Arguments<'_>) {
    // Formatting into a String fails only if a Display impl does; ours are
    // numbers and strings.
    if out.write_fmt(args).is_err() {
        unreachable!("formatting numbers and strings into a String");
    }
}

fn push_list(out: &mut String, partitions: &[u32]) {
    for (i, p) in partitions.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        push(out, format_args!("{sep}{p}"));
    }
}

fn one_line(message: &str) -> String {
    message.replace(['\n', '\r'], " ")
}

/// Parses one line (without its newline).
pub fn parse(line: &str) -> Result<MemberMessage, String> {
    let bad = || format!("a member said {line:?}, which is not a member message");
    let (tag, rest) = line.split_once(' ').ok_or_else(bad)?;
    let number =
        |s: Option<&str>| -> Result<u64, String> { s.and_then(|s| s.parse().ok()).ok_or_else(bad) };
    let list = |s: Option<&str>| -> Result<Vec<u32>, String> {
        match s {
            None | Some("") => Ok(Vec::new()),
            Some(s) => s.split(',').map(|p| p.parse().map_err(|_| bad())).collect(),
        }
    };
    let mut fields = rest.split(' ');
    Ok(match tag {
        "A" | "R" => {
            let at_ns = number(fields.next())?;
            let partitions = list(fields.next())?;
            if tag == "A" {
                MemberMessage::Assigned { at_ns, partitions }
            } else {
                MemberMessage::Revoked { at_ns, partitions }
            }
        }
        "D" => MemberMessage::Delivered {
            at_ns: number(fields.next())?,
            partition: u32::try_from(number(fields.next())?).map_err(|_| bad())?,
            producer: u32::try_from(number(fields.next())?).map_err(|_| bad())?,
            seq: number(fields.next())?,
        },
        "C" => MemberMessage::Committed { latency_us: number(fields.next())? },
        "F" => MemberMessage::CommitFailed { message: rest.to_string() },
        "L" => MemberMessage::Left { at_ns: number(fields.next())? },
        "E" => MemberMessage::Failed { message: rest.to_string() },
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_back_as_written() {
        let messages = [
            MemberMessage::Assigned { at_ns: 17, partitions: vec![0, 3, 11] },
            MemberMessage::Revoked { at_ns: 18, partitions: vec![] },
            MemberMessage::Delivered { at_ns: 19, partition: 2, producer: 0, seq: 1 << 40 },
            MemberMessage::Committed { latency_us: 512 },
            MemberMessage::CommitFailed { message: "not assigned:\nt/1".into() },
            MemberMessage::Left { at_ns: 20 },
            MemberMessage::Failed { message: "broker gone".into() },
        ];
        let mut text = String::new();
        for m in &messages {
            encode(m, &mut text);
        }
        let back: Vec<MemberMessage> = text.lines().map(|l| parse(l).expect("parses")).collect();
        assert_eq!(back.len(), messages.len(), "one line each, newlines in messages folded");
        assert_eq!(back[..4], messages[..4]);
        assert_eq!(back[4], MemberMessage::CommitFailed { message: "not assigned: t/1".into() });
        assert_eq!(back[5..], messages[5..]);
    }

    #[test]
    fn garbage_is_an_error_that_quotes_the_line() {
        for line in ["", "D 1 2", "Z 1", "A x 1", "D 1 2 3 -4"] {
            let e = parse(line).expect_err(line);
            assert!(e.contains(&format!("{line:?}")), "{e}");
        }
    }
}
