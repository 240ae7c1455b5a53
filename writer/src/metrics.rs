//! The writer's metrics, in the process's default Prometheus registry: `imgsearch_writer_<name>_<unit>`,
//! updated once per batch.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, exponential_buckets, register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
};

pub(crate) struct Metrics {
    /// results taken from the embeddings queue
    pub results_consumed: IntCounter,
    /// jobs by what the writer did: completed, failed, skipped (finished already or cancelled),
    /// dead_lettered (not a result this version reads)
    pub jobs_written: IntCounterVec,
    /// batches by flush reason (size, deadline, drained)
    pub batches: IntCounterVec,
    pub batch_size: Histogram,
    /// vector upsert and catalog commit time of one batch
    pub stage_seconds: HistogramVec,
    /// from the result's publish to its consumption
    pub queue_lag_seconds: Histogram,
    /// store errors a batch waited out (Qdrant or Postgres away)
    pub store_retries: IntCounter,
    pub reconnects: IntCounter,
}

pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    results_consumed: register_int_counter!("imgsearch_writer_results_consumed_total", "results taken from the embeddings queue").expect("registered once"),
    jobs_written: register_int_counter_vec!("imgsearch_writer_jobs_written_total", "jobs recorded, by outcome", &["outcome"]).expect("registered once"),
    batches: register_int_counter_vec!("imgsearch_writer_batches_total", "write batches, by flush reason", &["reason"]).expect("registered once"),
    batch_size: register_histogram!("imgsearch_writer_batch_size_results", "results per write batch", vec![1.0, 4.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0])
        .expect("registered once"),
    stage_seconds: register_histogram_vec!(
        "imgsearch_writer_batch_duration_seconds",
        "time of one batch, by stage (upsert, commit)",
        &["stage"],
        exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")
    )
    .expect("registered once"),
    queue_lag_seconds: register_histogram!(
        "imgsearch_writer_queue_lag_seconds",
        "from a result's publish to its consumption",
        exponential_buckets(0.001, 2.0, 20).expect("valid buckets")
    )
    .expect("registered once"),
    store_retries: register_int_counter!("imgsearch_writer_store_retries_total", "batch writes tried again after a store was unavailable").expect("registered once"),
    reconnects: register_int_counter!("imgsearch_writer_reconnects_total", "broker connections made again after one was lost").expect("registered once"),
});
