//! Latency and throughput summaries.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency histogram in microseconds, 1 µs to 100 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 100_000_000, 3) {
        Ok(h) => h,
        Err(e) => panic!("histogram bounds are constants and valid: {e}"),
    }
}

/// Records `us`, clamping to the histogram's range so nothing is dropped.
pub fn record_us(histogram: &mut Histogram<u64>, us: u64) {
    let clamped = us.clamp(1, histogram.high());
    histogram.saturating_record(clamped);
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyUs {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    pub count: u64,
}

impl LatencyUs {
    pub fn of(h: &Histogram<u64>) -> LatencyUs {
        LatencyUs {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            count: h.len(),
        }
    }
}

impl std::fmt::Display for LatencyUs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} samples)",
            self.p50, self.p99, self.p999, self.max, self.count
        )
    }
}

/// Human-readable bytes per second.
pub fn rate(bytes_per_s: f64) -> String {
    if bytes_per_s >= 1e9 {
        format!("{:.2} GB/s", bytes_per_s / 1e9)
    } else {
        format!("{:.1} MB/s", bytes_per_s / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_give_the_percentiles_of_all_samples() {
        let mut a = latency_histogram();
        let mut b = latency_histogram();
        for us in 1..=500 {
            record_us(&mut a, us);
        }
        for us in 501..=1000 {
            record_us(&mut b, us);
        }
        a.add(&b).expect("same bounds");
        let l = LatencyUs::of(&a);
        assert_eq!(l.count, 1000);
        assert!((499..=501).contains(&l.p50), "p50 {}", l.p50);
        assert!((989..=991).contains(&l.p99), "p99 {}", l.p99);
        assert_eq!(l.max, 1000);
    }

    #[test]
    fn out_of_range_samples_are_clamped_not_lost() {
        let mut h = latency_histogram();
        record_us(&mut h, 0);
        record_us(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
    }
}
