//! The embedder's metrics, in the process's default Prometheus registry (the binary serves it at
//! `/metrics`): `imgsearch_embedder_<name>_<unit>`, labels from small fixed sets, updated once per
//! batch.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, exponential_buckets, register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
};

pub(crate) struct Metrics {
    /// jobs taken from the queue
    pub jobs_consumed: IntCounter,
    /// jobs acked, by outcome: embedded, failed (a failed result was published), dropped (a paused
    /// or cancelled session), dead_lettered
    pub jobs_acked: IntCounterVec,
    /// jobs that failed, by reason (corrupt, io, malformed, delivery_limit, ...)
    pub jobs_failed: IntCounterVec,
    /// jobs given back for another try (a transient failure)
    pub jobs_retried: IntCounter,
    /// batches by flush reason (size, deadline, drained)
    pub batches: IntCounterVec,
    pub batch_size: Histogram,
    /// decode and inference time of one batch
    pub stage_seconds: HistogramVec,
    /// from the job's publish to its consumption
    pub queue_lag_seconds: Histogram,
    /// connections made after the first (the broker went away)
    pub reconnects: IntCounter,
}

pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    jobs_consumed: register_int_counter!("imgsearch_embedder_jobs_consumed_total", "jobs taken from the jobs queue").expect("registered once"),
    jobs_acked: register_int_counter_vec!("imgsearch_embedder_jobs_acked_total", "jobs acked, by outcome", &["outcome"]).expect("registered once"),
    jobs_failed: register_int_counter_vec!("imgsearch_embedder_jobs_failed_total", "jobs that failed, by reason", &["reason"]).expect("registered once"),
    jobs_retried: register_int_counter!("imgsearch_embedder_jobs_retried_total", "jobs given back after a transient failure").expect("registered once"),
    batches: register_int_counter_vec!("imgsearch_embedder_batches_total", "embed batches, by flush reason", &["reason"]).expect("registered once"),
    batch_size: register_histogram!("imgsearch_embedder_batch_size_images", "images per embed batch", vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
        .expect("registered once"),
    stage_seconds: register_histogram_vec!(
        "imgsearch_embedder_batch_duration_seconds",
        "time of one batch, by stage (decode, inference, publish)",
        &["stage"],
        exponential_buckets(0.001, 2.0, 16).expect("valid buckets")
    )
    .expect("registered once"),
    queue_lag_seconds: register_histogram!(
        "imgsearch_embedder_queue_lag_seconds",
        "from a job's publish to its consumption",
        exponential_buckets(0.001, 2.0, 20).expect("valid buckets")
    )
    .expect("registered once"),
    reconnects: register_int_counter!("imgsearch_embedder_reconnects_total", "broker connections made again after one was lost").expect("registered once"),
});
