//! `--report-dir`: `report.json` and plots a person would rather look at
//! than read: throughput over time and the latency percentile distribution
//! (SVG); for `rebalance`, the lag over time with its events marked; for
//! `verify`, operations and latency over time with the faults shaded.

use crate::load::LoadReport;
use crate::rebalance::RebalanceReport;
use crate::verify::timeline::Timeline;
use plotters::prelude::*;
use std::path::Path;

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// Writes `report.json`, `throughput.svg` and `latency.svg` into `dir`.
pub fn write(dir: &Path, json: &serde_json::Value, report: &LoadReport) -> Result<(), String> {
    write_json(dir, json)?;
    throughput(&dir.join("throughput.svg"), report)?;
    latency(&dir.join("latency.svg"), report)
}

/// Writes `report.json` and `lag.svg` into `dir`.
pub fn write_rebalance(
    dir: &Path,
    json: &serde_json::Value,
    report: &RebalanceReport,
) -> Result<(), String> {
    write_json(dir, json)?;
    lag(&dir.join("lag.svg"), report)
}

/// Writes `report.json` and `timeline.svg` into `dir`.
pub fn write_verify(
    dir: &Path,
    json: &serde_json::Value,
    timeline: &Timeline,
) -> Result<(), String> {
    write_json(dir, json)?;
    verify_timeline(&dir.join("timeline.svg"), timeline)
}

fn write_json(dir: &Path, json: &serde_json::Value) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let path = dir.join("report.json");
    let text = serde_json::to_string_pretty(json).map_err(|e| err(&path, e))?;
    std::fs::write(&path, text).map_err(|e| err(&path, e))
}

/// Records produced but not yet delivered, over time; a vertical mark and
/// the kind's name at each event.
fn lag(path: &Path, report: &RebalanceReport) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let t_max = report.lag.last().map_or(1.0, |p| p.elapsed_s).max(1.0);
    let y_max = report.lag.iter().map(|p| p.records as f64).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption("Consumer lag over time", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(|e| err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("elapsed (s)")
        .y_desc("records produced, not yet delivered")
        .draw()
        .map_err(|e| err(path, e))?;
    for (at_s, kind) in &report.event_times_s {
        let color = match *kind {
            "kill" => RED,
            "join" => GREEN,
            _ => MAGENTA,
        };
        chart
            .draw_series(LineSeries::new([(*at_s, 0.0), (*at_s, y_max)], color.stroke_width(1)))
            .map_err(|e| err(path, e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                kind.to_string(),
                (*at_s, y_max * 0.97),
                ("sans-serif", 12).into_font().color(&color),
            )))
            .map_err(|e| err(path, e))?;
    }
    let points: Vec<(f64, f64)> =
        report.lag.iter().map(|p| (p.elapsed_s, p.records as f64)).collect();
    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
        .map_err(|e| err(path, e))?
        .label("lag (records)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

/// A shade per fault kind, the same in both panels.
fn fault_color(kind: &str) -> RGBColor {
    match kind {
        _ if kind.contains('+') => RGBColor(210, 210, 210),
        _ if kind.starts_with("kill") => RGBColor(255, 190, 190),
        "pause" => RGBColor(255, 225, 170),
        "isolate" | "split" | "oneway" => RGBColor(200, 215, 255),
        "linkdown" => RGBColor(215, 200, 255),
        _ => RGBColor(225, 240, 200),
    }
}

/// Above: produces acknowledged and not, and records read, per second;
/// below: produce latency (p50, p99) per second on a log scale. Each fault
/// window is shaded in both, named in the upper one.
fn verify_timeline(path: &Path, timeline: &Timeline) -> Result<(), String> {
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let (upper, lower) = root.split_vertically(400);
    // A fault healed after the last operation still shows whole.
    let t_max = timeline
        .faults
        .iter()
        .map(|w| w.end_s)
        .fold(timeline.seconds.len() as f64, f64::max)
        .max(1.0);
    let seconds = &timeline.seconds;
    let ops_max = seconds
        .iter()
        .map(|s| (s.acknowledged + s.not_acknowledged).max(s.reads) as f64)
        .fold(1.0, f64::max)
        * 1.15;
    let mut ops = ChartBuilder::on(&upper)
        .caption("Operations and faults over time", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_max, 0.0..ops_max)
        .map_err(|e| err(path, e))?;
    ops.configure_mesh().y_desc("operations / s").draw().map_err(|e| err(path, e))?;
    for w in &timeline.faults {
        ops.draw_series(std::iter::once(Rectangle::new(
            [(w.start_s, 0.0), (w.end_s, ops_max)],
            fault_color(&w.kind).filled(),
        )))
        .map_err(|e| err(path, e))?;
        ops.draw_series(std::iter::once(Text::new(
            w.kind.clone(),
            (w.start_s, ops_max * 0.98),
            ("sans-serif", 11).into_font().color(&BLACK),
        )))
        .map_err(|e| err(path, e))?;
    }
    // Each second drawn at its middle.
    let at = |s: &crate::verify::timeline::Second| s.at_s as f64 + 0.5;
    let series = [
        (
            "produces acknowledged",
            GREEN,
            seconds.iter().map(|s| (at(s), s.acknowledged as f64)).collect::<Vec<_>>(),
        ),
        (
            "produces failed or unknown",
            RED,
            seconds.iter().map(|s| (at(s), s.not_acknowledged as f64)).collect(),
        ),
        ("records read", BLUE, seconds.iter().map(|s| (at(s), s.reads as f64)).collect()),
    ];
    for (name, color, points) in series {
        ops.draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(path, e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    ops.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(path, e))?;

    let latency_max = seconds.iter().map(|s| s.latency_p99_ms).fold(10.0, f64::max) * 1.5;
    let mut latency = ChartBuilder::on(&lower)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_max, (0.1..latency_max).log_scale())
        .map_err(|e| err(path, e))?;
    latency
        .configure_mesh()
        .x_desc("elapsed (s)")
        .y_desc("produce latency (ms)")
        .draw()
        .map_err(|e| err(path, e))?;
    for w in &timeline.faults {
        latency
            .draw_series(std::iter::once(Rectangle::new(
                [(w.start_s, 0.1), (w.end_s, latency_max)],
                fault_color(&w.kind).filled(),
            )))
            .map_err(|e| err(path, e))?;
    }
    let answered = |s: &&crate::verify::timeline::Second| s.acknowledged + s.not_acknowledged > 0;
    let series = [
        (
            "p50",
            BLACK,
            seconds
                .iter()
                .filter(answered)
                .map(|s| (at(s), s.latency_p50_ms.max(0.1)))
                .collect::<Vec<_>>(),
        ),
        (
            "p99",
            MAGENTA,
            seconds.iter().filter(answered).map(|s| (at(s), s.latency_p99_ms.max(0.1))).collect(),
        ),
    ];
    for (name, color, points) in series {
        latency
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(path, e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    latency
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

fn throughput(path: &Path, report: &LoadReport) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let t_max = report.timeline.last().map_or(1.0, |p| p.elapsed_s).max(1.0);
    let y_max =
        report.timeline.iter().map(|p| p.produced_per_s.max(p.consumed_per_s)).fold(1.0, f64::max)
            * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("Throughput over time", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(|e| err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("elapsed (s)")
        .y_desc("messages / s")
        .draw()
        .map_err(|e| err(path, e))?;
    let series = [
        (
            "produced (acknowledged)",
            RED,
            report.timeline.iter().map(|p| (p.elapsed_s, p.produced_per_s)).collect::<Vec<_>>(),
        ),
        (
            "consumed",
            BLUE,
            report.timeline.iter().map(|p| (p.elapsed_s, p.consumed_per_s)).collect::<Vec<_>>(),
        ),
    ];
    for (name, color, points) in series {
        if points.iter().all(|(_, y)| *y == 0.0) {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(path, e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

/// Percentiles on an axis that spreads the tail: x = log10(1 / (1 - p)).
fn tail_x(percentile: f64) -> f64 {
    (1.0 / (1.0 - (percentile / 100.0)).max(1e-5)).log10()
}

fn latency(path: &Path, report: &LoadReport) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let y_max = report
        .produce_percentiles
        .iter()
        .chain(&report.e2e_percentiles)
        .map(|(_, us)| *us as f64 / 1000.0)
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency by percentile", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..5.0, 0.0..y_max)
        .map_err(|e| err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .x_labels(6)
        .x_label_formatter(&|x| match *x as i64 {
            0 => "0".into(),
            1 => "90".into(),
            2 => "99".into(),
            3 => "99.9".into(),
            4 => "99.99".into(),
            _ => "max".into(),
        })
        .y_desc("latency (ms)")
        .draw()
        .map_err(|e| err(path, e))?;
    let series = [
        ("produce ack", RED, &report.produce_percentiles),
        ("end to end", BLUE, &report.e2e_percentiles),
    ];
    for (name, color, points) in series {
        if points.is_empty() {
            continue;
        }
        let line: Vec<(f64, f64)> =
            points.iter().map(|(p, us)| (tail_x(*p).min(5.0), *us as f64 / 1000.0)).collect();
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(|e| err(path, e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}
