//! Numbers for people: sizes (`12.3 MiB`), durations (`3h 12m`), points
//! in time (RFC 3339) and aligned columns. JSON output never uses these:
//! it carries exact bytes and milliseconds.

use std::time::{Duration, UNIX_EPOCH};

/// A size in binary units with one decimal: `0 B`, `512 B`, `1.0 KiB`,
/// `12.3 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    // Past 1023.95 the one-decimal rounding would print 1024.0.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration as its two largest units: `850ms`, `42s`, `5m 3s`,
/// `3h 12m`, `2d 4h`.
pub fn duration_ms(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] =
        [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let Some(first) = UNITS.iter().position(|(unit_ms, _)| ms >= *unit_ms) else {
        return format!("{ms}ms");
    };
    let (unit_ms, name) = UNITS[first];
    let mut text = format!("{}{name}", ms / unit_ms);
    if let Some((next_ms, next_name)) = UNITS.get(first + 1) {
        let rest = ms % unit_ms / next_ms;
        if rest > 0 {
            text.push_str(&format!(" {rest}{next_name}"));
        }
    }
    text
}

/// A point in time (ms since the epoch) as RFC 3339 in UTC, with
/// milliseconds: `2026-11-30T12:00:00.250Z`.
pub fn time_ms(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => format!("{ms} ms before the epoch"),
    }
}

/// Rows as lines of left-aligned columns two spaces apart (the last
/// column unpadded, so lines carry no trailing blanks).
pub fn table(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
                }
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units_with_one_decimal() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(12_897_485), "12.3 MiB");
        assert_eq!(bytes((1 << 20) - 1), "1.0 MiB", "never 1024.0 KiB");
        assert_eq!(bytes(5 << 40), "5.0 TiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn durations_show_their_two_largest_units() {
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(42_000), "42s");
        assert_eq!(duration_ms(303_000), "5m 3s");
        assert_eq!(duration_ms(3_600_000), "1h");
        assert_eq!(duration_ms(11_520_000 + 59_999), "3h 12m");
        assert_eq!(duration_ms(2 * 86_400_000 + 4 * 3_600_000), "2d 4h");
    }

    #[test]
    fn times_are_rfc3339_utc_and_tables_align() {
        assert_eq!(time_ms(1_764_504_000_250), "2025-11-30T12:00:00.250Z");
        let rows = [
            vec!["TOPIC".to_string(), "SIZE".into()],
            vec!["orders".to_string(), "1.0 KiB".into()],
        ];
        assert_eq!(table(&rows), ["TOPIC   SIZE", "orders  1.0 KiB"]);
    }
}
