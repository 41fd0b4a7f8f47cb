//! Prometheus metrics, in the text exposition format: a few counters kept in memory and the
//! log's and read models' positions read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    /// (route template, status) → count.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Code checks that failed (unknown, malformed or forged codes), by route family.
    failed_code_checks: Mutex<BTreeMap<&'static str, u64>>,
    /// Code checks refused with 429 before the code was looked at, by family and limit.
    rate_limited: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Addresses and principals the limiter tracks, as of its last failure.
    pub rate_limit_keys: AtomicU64,
    pub commands_refused: AtomicU64,
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16) {
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *requests.entry((route.to_string(), status)).or_insert(0) += 1;
    }

    pub fn failed_code_check(&self, family: &'static str) {
        let mut failed = self
            .failed_code_checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *failed.entry(family).or_insert(0) += 1;
    }

    pub fn rate_limited(&self, family: &'static str, scope: &'static str) {
        let mut limited = self
            .rate_limited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *limited.entry((family, scope)).or_insert(0) += 1;
    }

    pub fn render(&self, log_head: u64, read_models_position: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP roster_http_requests_total HTTP requests answered, by route and status."
        );
        let _ = writeln!(out, "# TYPE roster_http_requests_total counter");
        for ((route, status), count) in self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "roster_http_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
                escape(route)
            );
        }
        let _ = writeln!(out, "# HELP roster_failed_code_checks_total Invitation codes that were unknown, malformed or forged.");
        let _ = writeln!(out, "# TYPE roster_failed_code_checks_total counter");
        for (family, count) in self
            .failed_code_checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "roster_failed_code_checks_total{{family=\"{family}\"}} {count}"
            );
        }
        let _ = writeln!(out, "# HELP roster_code_checks_rate_limited_total Code checks refused with 429 because the client address or the acting principal had too many failed checks.");
        let _ = writeln!(out, "# TYPE roster_code_checks_rate_limited_total counter");
        for ((family, scope), count) in self
            .rate_limited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "roster_code_checks_rate_limited_total{{family=\"{family}\",limit=\"{scope}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP roster_rate_limit_keys Addresses and principals the failed-check limiter tracks."
        );
        let _ = writeln!(out, "# TYPE roster_rate_limit_keys gauge");
        let _ = writeln!(
            out,
            "roster_rate_limit_keys {}",
            self.rate_limit_keys.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP roster_commands_refused_total Commands the domain refused."
        );
        let _ = writeln!(out, "# TYPE roster_commands_refused_total counter");
        let _ = writeln!(
            out,
            "roster_commands_refused_total {}",
            self.commands_refused.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP roster_log_head_position The log's last acknowledged position."
        );
        let _ = writeln!(out, "# TYPE roster_log_head_position gauge");
        let _ = writeln!(out, "roster_log_head_position {log_head}");
        let _ = writeln!(
            out,
            "# HELP roster_read_models_position The position every read model has applied."
        );
        let _ = writeln!(out, "# TYPE roster_read_models_position gauge");
        let _ = writeln!(out, "roster_read_models_position {read_models_position}");
        out
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"")
}
