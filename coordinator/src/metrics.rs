//! The coordinator's metrics, in the process's default Prometheus registry:
//! `imgsearch_coordinator_<name>_<unit>`.

use std::sync::LazyLock;

use prometheus::{Histogram, IntCounter, IntGaugeVec, exponential_buckets, register_histogram, register_int_counter, register_int_gauge_vec};

pub(crate) struct Metrics {
    pub jobs_published: IntCounter,
    /// one pipelined batch of publishes, until every confirm is in
    pub publish_seconds: Histogram,
    /// the watched session's jobs by status
    pub session_jobs: IntGaugeVec,
}

pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    jobs_published: register_int_counter!("imgsearch_coordinator_jobs_published_total", "jobs published to the jobs queue and confirmed").expect("registered once"),
    publish_seconds: register_histogram!(
        "imgsearch_coordinator_publish_batch_duration_seconds",
        "time to publish a batch of jobs and get every confirm",
        exponential_buckets(0.001, 2.0, 16).expect("valid buckets")
    )
    .expect("registered once"),
    session_jobs: register_int_gauge_vec!("imgsearch_coordinator_session_jobs", "the watched session's jobs, by status", &["status"]).expect("registered once"),
});

pub(crate) fn set_session_jobs(c: &crate::JobCounts) {
    for (status, n) in [("pending", c.pending), ("queued", c.queued), ("running", c.running), ("completed", c.completed), ("failed", c.failed), ("cancelled", c.cancelled)] {
        METRICS.session_jobs.with_label_values(&[status]).set(n);
    }
}
