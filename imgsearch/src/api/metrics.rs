//! Prometheus metrics of the serving process: `imgsearch_<stage>_<name>_<unit>`, rendered at
//! `/metrics` in the text format. Only what is the API's own lives here (requests, search time);
//! the stages it runs count in their crates' metrics (`imgsearch_embedder_*`, `imgsearch_writer_*`),
//! one name per quantity whichever process runs them.

use std::sync::Arc;

use axum::{
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

use super::ApiState;

pub(crate) struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    pub search_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(Opts::new("imgsearch_api_requests_total", "HTTP requests by route and status"), &["route", "status"]).expect("valid metric");
        let http_seconds = HistogramVec::new(HistogramOpts::new("imgsearch_api_request_duration_seconds", "HTTP request latency by route"), &["route"]).expect("valid metric");
        let search_seconds = Histogram::with_opts(
            HistogramOpts::new("imgsearch_search_query_duration_seconds", "vector search plus catalog hydration")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )
        .expect("valid metric");
        for c in [Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>, Box::new(http_seconds.clone()), Box::new(search_seconds.clone())] {
            registry.register(c).expect("metric registered once");
        }
        Metrics { registry, http_requests, http_seconds, search_seconds }
    }
}

/// Counts and times every request by its route template (not the raw path: bounded labels).
pub(crate) async fn track(State(s): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    s.metrics.http_seconds.with_label_values(&[route.as_str()]).observe(started.elapsed().as_secs_f64());
    s.metrics.http_requests.with_label_values(&[route.as_str(), resp.status().as_str()]).inc();
    resp
}

pub(crate) async fn render(State(s): State<Arc<ApiState>>) -> impl IntoResponse {
    let mut out = Vec::new();
    TextEncoder::new().encode(&s.metrics.registry.gather(), &mut out).expect("text encoding never fails");
    out.extend(render_default());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// The process-wide registry, where the stage crates (coordinator, embedder, writer) count.
pub(crate) fn render_default() -> Vec<u8> {
    let mut out = Vec::new();
    TextEncoder::new().encode(&prometheus::gather(), &mut out).expect("text encoding never fails");
    out
}
