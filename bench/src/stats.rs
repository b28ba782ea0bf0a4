//! Latency samples of one phase and their summary: counts, error kinds, throughput and
//! nearest-rank percentiles over a sorted `Vec` (exact, no bucketing).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Why one request did not count as a success.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// The server answered with a status outside 2xx.
    Status(u16),
    /// The request did not finish within the per-request timeout.
    Timeout,
    /// The connection could not be made or broke (refused, reset, closed early).
    Transport,
    /// A 2xx answer whose body was not what the phase needs (e.g. no `id`).
    BadBody,
    /// An MCP tool call answered with `isError: true`.
    ToolError,
    /// An agent run that ended failed, with its category.
    Run(String),
}

impl Failure {
    /// The key under which this failure is counted in a report (`http_429`, `timeout`, …).
    pub fn key(&self) -> String {
        match self {
            Failure::Status(code) => format!("http_{code}"),
            Failure::Timeout => "timeout".to_owned(),
            Failure::Transport => "transport".to_owned(),
            Failure::BadBody => "bad_body".to_owned(),
            Failure::ToolError => "tool_error".to_owned(),
            Failure::Run(category) => format!("run_{category}"),
        }
    }
}

/// What one worker (or a whole phase, after [`Samples::merge`]) observed.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    /// Latencies of successful requests, in microseconds, unsorted.
    ok_micros: Vec<u64>,
    /// Failures by [`Failure::key`].
    failures: BTreeMap<String, u64>,
}

impl Samples {
    /// Records a successful request and how long it took (send to last body byte).
    pub fn record_ok(&mut self, latency: Duration) {
        self.ok_micros
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records a failed request.
    pub fn record_failure(&mut self, failure: &Failure) {
        *self.failures.entry(failure.key()).or_default() += 1;
    }

    /// Adds another worker's samples to these.
    pub fn merge(&mut self, other: Samples) {
        self.ok_micros.extend(other.ok_micros);
        for (k, n) in other.failures {
            *self.failures.entry(k).or_default() += n;
        }
    }

    /// Requests recorded, successful or not.
    pub fn requests(&self) -> u64 {
        self.ok_micros.len() as u64 + self.failures.values().sum::<u64>()
    }

    /// Summarises the phase `phase` that took `elapsed` of wall time.
    pub fn summarize(mut self, phase: &str, elapsed: Duration) -> Summary {
        self.ok_micros.sort_unstable();
        let ok = self.ok_micros.len() as u64;
        let errors = self.failures.values().sum::<u64>();
        let secs = elapsed.as_secs_f64();
        let ms = |p: f64| percentile(&self.ok_micros, p).map(micros_to_ms);
        let mean_ms = if self.ok_micros.is_empty() {
            None
        } else {
            let total: u128 = self.ok_micros.iter().map(|&m| u128::from(m)).sum();
            Some(round3(total as f64 / self.ok_micros.len() as f64 / 1000.0))
        };
        Summary {
            phase: phase.to_owned(),
            requests: ok + errors,
            ok,
            errors,
            error_kinds: self.failures,
            elapsed_s: round3(secs),
            throughput_rps: if secs > 0.0 {
                round3(ok as f64 / secs)
            } else {
                0.0
            },
            mean_ms,
            p50_ms: ms(50.0),
            p90_ms: ms(90.0),
            p99_ms: ms(99.0),
            max_ms: self.ok_micros.last().copied().map(micros_to_ms),
        }
    }
}

/// The outcome of one phase. Latency figures cover successful requests only (a fast 429 must
/// not make a server look quick); failures are counted in `errors` and `error_kinds`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Phase name (`create`, `get`).
    pub phase: String,
    /// Requests sent and finished (successes plus errors).
    pub requests: u64,
    /// Requests answered with 2xx and a usable body.
    pub ok: u64,
    /// Requests that failed for any reason.
    pub errors: u64,
    /// Failures by kind (`http_500`, `timeout`, `transport`, `bad_body`).
    pub error_kinds: BTreeMap<String, u64>,
    /// Wall time of the phase, in seconds.
    pub elapsed_s: f64,
    /// Successful requests per second of wall time.
    pub throughput_rps: f64,
    /// Mean latency of successful requests, in milliseconds.
    pub mean_ms: Option<f64>,
    /// Median latency of successful requests, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 90th percentile latency, in milliseconds.
    pub p90_ms: Option<f64>,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: Option<f64>,
    /// Slowest successful request, in milliseconds.
    pub max_ms: Option<f64>,
}

/// The nearest-rank `p`th percentile (0 < p ≤ 100) of ascending `sorted`: the smallest sample
/// such that at least p% of samples are ≤ it. `None` when there are no samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn micros_to_ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_nothing_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn percentile_of_one_sample_is_that_sample() {
        for p in [0.0, 1.0, 50.0, 99.0, 100.0] {
            assert_eq!(percentile(&[7], p), Some(7));
        }
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        // 10 samples: p99 rounds up to the 10th, p50 is the 5th.
        let w: Vec<u64> = (1..=10).map(|x| x * 10).collect();
        assert_eq!(percentile(&w, 99.0), Some(100));
        assert_eq!(percentile(&w, 50.0), Some(50));
        assert_eq!(percentile(&w, 51.0), Some(60));
    }

    #[test]
    fn percentile_clamps_out_of_range_p() {
        let v = [1, 2, 3];
        assert_eq!(percentile(&v, -5.0), Some(1));
        assert_eq!(percentile(&v, 500.0), Some(3));
    }

    #[test]
    fn summary_sorts_and_converts_to_ms() {
        let mut s = Samples::default();
        // Recorded out of order, 1..=1000 ms.
        for ms in (1..=1000u64).rev() {
            s.record_ok(Duration::from_millis(ms));
        }
        let sum = s.summarize("create", Duration::from_secs(2));
        assert_eq!(sum.requests, 1000);
        assert_eq!(sum.ok, 1000);
        assert_eq!(sum.errors, 0);
        assert_eq!(sum.p50_ms, Some(500.0));
        assert_eq!(sum.p90_ms, Some(900.0));
        assert_eq!(sum.p99_ms, Some(990.0));
        assert_eq!(sum.max_ms, Some(1000.0));
        assert_eq!(sum.mean_ms, Some(500.5));
        assert_eq!(sum.throughput_rps, 500.0);
    }

    #[test]
    fn errors_count_as_requests_but_not_as_throughput_or_latency() {
        let mut s = Samples::default();
        s.record_ok(Duration::from_micros(1500));
        s.record_failure(&Failure::Status(500));
        s.record_failure(&Failure::Status(500));
        s.record_failure(&Failure::Status(429));
        s.record_failure(&Failure::Timeout);
        assert_eq!(s.requests(), 5);
        let sum = s.summarize("get", Duration::from_millis(500));
        assert_eq!(sum.requests, 5);
        assert_eq!(sum.ok, 1);
        assert_eq!(sum.errors, 4);
        assert_eq!(sum.throughput_rps, 2.0);
        assert_eq!(sum.max_ms, Some(1.5));
        assert_eq!(sum.p50_ms, Some(1.5));
        let kinds: Vec<(&str, u64)> = sum
            .error_kinds
            .iter()
            .map(|(k, n)| (k.as_str(), *n))
            .collect();
        assert_eq!(
            kinds,
            vec![("http_429", 1), ("http_500", 2), ("timeout", 1)]
        );
    }

    #[test]
    fn merge_adds_workers_together() {
        let mut a = Samples::default();
        a.record_ok(Duration::from_millis(3));
        a.record_failure(&Failure::Transport);
        let mut b = Samples::default();
        b.record_ok(Duration::from_millis(1));
        b.record_failure(&Failure::Transport);
        b.record_failure(&Failure::BadBody);
        a.merge(b);
        let sum = a.summarize("create", Duration::from_secs(1));
        assert_eq!(sum.requests, 5);
        assert_eq!(sum.ok, 2);
        assert_eq!(sum.error_kinds.get("transport"), Some(&2));
        assert_eq!(sum.error_kinds.get("bad_body"), Some(&1));
        assert_eq!(sum.p50_ms, Some(1.0));
        assert_eq!(sum.max_ms, Some(3.0));
    }

    #[test]
    fn an_empty_phase_has_no_latency_and_no_throughput() {
        let sum = Samples::default().summarize("get", Duration::ZERO);
        assert_eq!(sum.requests, 0);
        assert_eq!(sum.throughput_rps, 0.0);
        assert_eq!(sum.p50_ms, None);
        assert_eq!(sum.mean_ms, None);
        assert_eq!(sum.max_ms, None);
    }
}
