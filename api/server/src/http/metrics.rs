//! Prometheus metrics through the `metrics` facade and `metrics-exporter-prometheus`, which
//! writes the text exposition format (0.0.4) and escapes label values: request counts and a
//! latency histogram per route template, method and status, refusals and failed code checks,
//! and the log's and read models' positions, read at scrape time.
//!
//! Each server (each `Live`, so a reopen starts afresh, as a restart would) has a recorder of
//! its own rather than the process-wide one the facade's macros use, so several servers in one
//! process (the integration tests) keep their counts apart. Recording takes no lock shared by
//! all requests: the recorder's registry is sharded and its handles are atomics.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::http::Method;
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio::sync::watch;

use crate::workers::WorkerError;

const REQUESTS: &str = "roster_http_requests_total";
const REQUEST_DURATION: &str = "roster_http_request_duration_seconds";
const FAILED_CODE_CHECKS: &str = "roster_failed_code_checks_total";
const RATE_LIMITED: &str = "roster_code_checks_rate_limited_total";
const RATE_LIMIT_KEYS: &str = "roster_rate_limit_keys";
const COMMANDS_REFUSED: &str = "roster_commands_refused_total";
const LOG_HEAD: &str = "roster_log_head_position";
const READ_MODELS_POSITION: &str = "roster_read_models_position";

/// The latency histogram's upper bounds, in seconds: from a cached read (well under a
/// millisecond) to the request time limit (10 s by default).
const LATENCY_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often recorded latencies are folded into the histograms, so the samples kept between
/// two scrapes stay bounded however rarely the server is scraped.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Every family with its help text, described once at start.
const DESCRIPTIONS: &[(&str, &str)] = &[
    (REQUESTS, "HTTP requests answered, by route and status."),
    (
        REQUEST_DURATION,
        "Time to answer an HTTP request, by route, method and status class.",
    ),
    (
        FAILED_CODE_CHECKS,
        "Invitation codes that were unknown, malformed or forged.",
    ),
    (
        RATE_LIMITED,
        "Code checks refused with 429 because the client address or the acting principal had too many failed checks.",
    ),
    (
        RATE_LIMIT_KEYS,
        "Addresses and principals the failed-check limiter tracks.",
    ),
    (COMMANDS_REFUSED, "Commands the domain refused."),
    (LOG_HEAD, "The log's last acknowledged position."),
    (
        READ_MODELS_POSITION,
        "The position every read model has applied.",
    ),
];

/// Where recordings come from, as the recorder is told (it keeps no use for it).
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// One route's counter and latency histogram for one method and status.
struct RouteHandles {
    method: Method,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

/// One server's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    recorder: PrometheusRecorder,
    /// Each route's handles, by method and status, registered at its first request: a
    /// request then finds them under a read lock, with no label built or hashed (building
    /// the keys per request cost a tenth of `/healthz`'s throughput).
    routes: RwLock<HashMap<String, Vec<RouteHandles>>>,
    handle: PrometheusHandle,
    commands_refused: Counter,
    rate_limit_keys: Gauge,
    log_head: Gauge,
    read_models_position: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let builder = PrometheusBuilder::new();
        // Without buckets the exporter would write the latencies as a summary.
        let builder = builder
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), LATENCY_BUCKETS_S)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "latency buckets refused: latencies are a summary");
                PrometheusBuilder::new()
            });
        let recorder = builder.build_recorder();
        for (name, help) in DESCRIPTIONS {
            let name = KeyName::from_const_str(name);
            let help = SharedString::const_str(help);
            if name.as_str().ends_with("_total") {
                recorder.describe_counter(name, None, help);
            } else if name.as_str() == REQUEST_DURATION {
                recorder.describe_histogram(name, None, help);
            } else {
                recorder.describe_gauge(name, None, help);
            }
        }
        // Registered now, so that they are scraped (as 0) before anything moves them.
        let gauge =
            |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), &METADATA);
        let inner = Inner {
            commands_refused: recorder
                .register_counter(&Key::from_static_name(COMMANDS_REFUSED), &METADATA),
            rate_limit_keys: gauge(RATE_LIMIT_KEYS),
            log_head: gauge(LOG_HEAD),
            read_models_position: gauge(READ_MODELS_POSITION),
            handle: recorder.handle(),
            routes: RwLock::new(HashMap::new()),
            recorder,
        };
        Metrics(Arc::new(inner))
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.0
            .recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// One request answered: counted by route template and status, and its latency by route
    /// template, method and status class.
    pub fn request(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let record = |handles: &RouteHandles| {
            handles.requests.increment(1);
            handles.duration.record(elapsed.as_secs_f64());
        };
        {
            let routes = self.0.routes.read().unwrap_or_else(PoisonError::into_inner);
            let found = routes.get(route).and_then(|handles| {
                handles
                    .iter()
                    .find(|h| h.status == status && h.method == *method)
            });
            if let Some(handles) = found {
                record(handles);
                return;
            }
        }
        let handles = RouteHandles {
            method: method.clone(),
            status,
            requests: self.counter(
                REQUESTS,
                vec![
                    Label::new("route", route.to_string()),
                    Label::new("status", status.to_string()),
                ],
            ),
            duration: self.0.recorder.register_histogram(
                &Key::from_parts(
                    REQUEST_DURATION,
                    vec![
                        Label::new("route", route.to_string()),
                        Label::new("method", method.as_str().to_string()),
                        Label::new("status_class", status_class(status)),
                    ],
                ),
                &METADATA,
            ),
        };
        record(&handles);
        let mut routes = self
            .0
            .routes
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let known = routes.entry(route.to_string()).or_default();
        // Another request may have registered them meanwhile: the recorder gave it the same
        // metrics, so one entry is kept.
        if !known
            .iter()
            .any(|h| h.status == status && h.method == *method)
        {
            known.push(handles);
        }
    }

    /// A code check that failed (an unknown, malformed or forged code), by route family.
    pub fn failed_code_check(&self, family: &'static str) {
        self.counter(FAILED_CODE_CHECKS, vec![Label::new("family", family)])
            .increment(1);
    }

    /// A code check refused with 429 before the code was looked at, by family and limit.
    pub fn rate_limited(&self, family: &'static str, scope: &'static str) {
        let labels = vec![Label::new("family", family), Label::new("limit", scope)];
        self.counter(RATE_LIMITED, labels).increment(1);
    }

    /// The addresses and principals the limiter tracks, as of its last failure.
    pub fn rate_limit_keys(&self, keys: usize) {
        self.0
            .rate_limit_keys
            .set(sample(u64::try_from(keys).unwrap_or(u64::MAX)));
    }

    pub fn command_refused(&self) {
        self.0.commands_refused.increment(1);
    }

    /// The exposition, with the positions as they are now.
    pub fn render(&self, log_head: u64, read_models_position: u64) -> String {
        self.0.log_head.set(sample(log_head));
        self.0
            .read_models_position
            .set(sample(read_models_position));
        let text = self.0.handle.render();
        // The exporter puts a blank line after each family; without them every line is a
        // comment or a sample, as the exposition has always been.
        let mut out = String::with_capacity(text.len());
        for line in text.lines().filter(|line| !line.is_empty()) {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Until `stop`: folds the recorded latencies into the histograms every few seconds.
    pub async fn upkeep(self, mut stop: watch::Receiver<bool>) -> Result<(), WorkerError> {
        loop {
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
                () = tokio::time::sleep(UPKEEP_INTERVAL) => self.0.handle.run_upkeep(),
            }
        }
    }
}

/// `2xx`, `4xx`, …: the histogram's status label, so its series stay few.
fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// A count or position as a Prometheus sample, which is a float64: exact below 2^53, which no
/// log or limiter here comes near.
#[allow(clippy::cast_precision_loss)]
fn sample(value: u64) -> f64 {
    value as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_each_route_has_its_histogram() {
        let metrics = Metrics::new();
        metrics.request("/v1/a\"b\\c", &Method::GET, 200, Duration::from_millis(3));
        metrics.request(
            "/v1/resources",
            &Method::POST,
            201,
            Duration::from_millis(7),
        );
        metrics.failed_code_check("native");
        let text = metrics.render(4, 3);
        for expected in [
            "# TYPE roster_http_requests_total counter",
            r#"roster_http_requests_total{route="/v1/a\"b\\c",status="200"} 1"#,
            r#"roster_http_requests_total{route="/v1/resources",status="201"} 1"#,
            "# TYPE roster_http_request_duration_seconds histogram",
            r#"roster_http_request_duration_seconds_bucket{route="/v1/resources",method="POST",status_class="2xx",le="0.01"} 1"#,
            r#"roster_http_request_duration_seconds_bucket{route="/v1/resources",method="POST",status_class="2xx",le="0.005"} 0"#,
            r#"roster_http_request_duration_seconds_count{route="/v1/a\"b\\c",method="GET",status_class="2xx"} 1"#,
            r#"roster_failed_code_checks_total{family="native"} 1"#,
            "roster_commands_refused_total 0",
            "roster_rate_limit_keys 0",
            "roster_log_head_position 4",
            "roster_read_models_position 3",
        ] {
            assert!(
                text.lines().any(|line| line == expected),
                "missing {expected:?} in\n{text}"
            );
        }
        assert!(!text.lines().any(str::is_empty), "{text}");
    }

    #[test]
    fn two_servers_count_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.command_refused();
        assert!(a.render(0, 0).contains("roster_commands_refused_total 1"));
        assert!(b.render(0, 0).contains("roster_commands_refused_total 0"));
    }
}
