//! `--report-dir`: `report.json` and plots a person would rather look at
//! than read: throughput over time and the latency percentile distribution
//! (SVG); for `rebalance`, the lag over time with its events marked.

use crate::load::LoadReport;
use crate::rebalance::RebalanceReport;
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
