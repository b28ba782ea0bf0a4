//! Rendering phase summaries: a fixed-width table for people, one JSON line per phase for
//! programs.

use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::Summary;

/// What was measured, repeated on every JSON line so each line stands alone.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// `sqlite`, `postgres`, or `external` (`--url` mode).
    pub backend: String,
    /// Concurrent workers.
    pub concurrency: usize,
    /// Requests each phase was allowed to send.
    pub requests_planned: u64,
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    run: &'a RunInfo,
    #[serde(flatten)]
    summary: &'a Summary,
}

/// One JSON object (no trailing newline) describing `summary` within `run`.
pub fn json_line(run: &RunInfo, summary: &Summary) -> String {
    serde_json::to_string(&Line { run, summary }).expect("summaries serialise")
}

/// A table with one row per phase; latencies are of successful requests.
pub fn table(run: &RunInfo, summaries: &[Summary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "backend={} concurrency={} requests/phase={} (latency in ms, successful requests only)",
        run.backend, run.concurrency, run.requests_planned
    );
    let _ = writeln!(
        out,
        "{:<12} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "phase", "requests", "errors", "ok req/s", "p50", "p90", "p99", "max"
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "{:<12} {:>9} {:>7} {:>10.1} {:>9} {:>9} {:>9} {:>9}",
            s.phase,
            s.requests,
            s.errors,
            s.throughput_rps,
            ms(s.p50_ms),
            ms(s.p90_ms),
            ms(s.p99_ms),
            ms(s.max_ms)
        );
    }
    for s in summaries.iter().filter(|s| s.errors > 0) {
        let kinds: Vec<String> = s
            .error_kinds
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let _ = writeln!(out, "errors in {}: {}", s.phase, kinds.join(" "));
    }
    out
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::{Failure, Samples};

    fn run() -> RunInfo {
        RunInfo {
            backend: "sqlite".into(),
            concurrency: 4,
            requests_planned: 3,
        }
    }

    #[test]
    fn json_line_is_flat_and_complete() {
        let mut s = Samples::default();
        s.record_ok(Duration::from_millis(2));
        s.record_failure(&Failure::Status(503));
        let line = json_line(&run(), &s.summarize("create", Duration::from_secs(1)));
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["phase"], "create");
        assert_eq!(v["backend"], "sqlite");
        assert_eq!(v["concurrency"], 4);
        assert_eq!(v["requests"], 2);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["error_kinds"]["http_503"], 1);
        assert_eq!(v["p99_ms"], 2.0);
        assert_eq!(v["throughput_rps"], 1.0);
    }

    #[test]
    fn table_shows_every_phase_and_names_the_errors() {
        let mut a = Samples::default();
        a.record_ok(Duration::from_millis(1));
        let mut b = Samples::default();
        b.record_failure(&Failure::Transport);
        let t = table(
            &run(),
            &[
                a.summarize("create", Duration::from_secs(1)),
                b.summarize("get", Duration::from_secs(1)),
            ],
        );
        assert!(t.contains("create"));
        assert!(t.lines().any(|l| l.starts_with("get") && l.contains(" - ")));
        assert!(t.contains("errors in get: transport=1"));
        assert!(!t.contains("errors in create"));
    }
}
