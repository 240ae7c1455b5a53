//! Writer, the *write* stage: takes a batch of embed results, upserts the vectors (waiting until
//! durable), then records jobs, evidence, the assets' `indexed_at` and the sessions' counters in one
//! catalog transaction. Only when both are done may the wiring ack the batch.
//!
//! Why a replayed batch changes nothing (exactly-once effects on an at-least-once queue): the point
//! id is the asset id, so a second upsert overwrites the same point with the same vector; the
//! catalog moves a job only forward (`pending|queued|running -> completed|failed`), so a job that is
//! already completed is reported as `already_done` and nothing is written; evidence is keyed by
//! (session, asset) with `ON CONFLICT DO NOTHING`; a session's counters move by the jobs the
//! transaction moved, so a replay that moves none adds nothing. A crash between the upsert and the
//! commit leaves a vector whose job is not done: the batch comes again, and the replay completes it.
//!
//! Before upserting, the batch asks the catalog which of its jobs are finished already (a
//! redelivery) or were cancelled (a cancelled session): those results are skipped, so a cancelled
//! session leaves no vector behind and a replay does not even rewrite the point.

mod metrics;
pub mod worker;

use std::sync::Arc;

use catalog::{Catalog, CatalogError, JobOutcome, JobResult, JobStatus, NewEvidence, RecordReport};
use protocol::{EmbedResult, Outcome};
use vectors::{AssetPoint, VectorError, VectorStore};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Vectors(#[from] VectorError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl WriteError {
    /// Whether waiting can help: a store is unreachable, or the catalog transaction lost a race
    /// (a deadlock with another writer). The batch is then held and tried again.
    pub fn is_unavailable(&self) -> bool {
        match self {
            WriteError::Vectors(e) => matches!(e, VectorError::Unavailable(..)),
            WriteError::Catalog(e) => e.is_retryable(),
        }
    }
}

pub struct Writer {
    pub catalog: Catalog,
    pub vectors: Arc<VectorStore>,
    /// The collection (or alias) the vectors go to.
    pub collection: String,
}

/// What a batch did.
#[derive(Debug, Default, Clone)]
pub struct WriteReport {
    pub upserted: usize,
    pub completed: usize,
    pub failed: Vec<(String, String)>,
    /// Results whose job was finished already or cancelled: nothing written.
    pub skipped: usize,
    pub record: RecordReport,
    /// How long the vector upsert and the catalog commit took.
    pub upsert_seconds: f64,
    pub commit_seconds: f64,
}

impl Writer {
    /// The catalog decides, inside the commit, whether a job was still open; the vectors were
    /// upserted before (a job is never completed without its vector). A job cancelled between
    /// the open-jobs read and the commit is refused there: its vector is withdrawn, unless its
    /// asset is indexed (then the vector is a fresh embedding of an indexed file and stays).
    async fn withdraw_refused(&self, results: &[EmbedResult], record: &RecordReport) -> Result<(), WriteError> {
        if record.refused.is_empty() {
            return Ok(());
        }
        let refused: std::collections::HashSet<i64> = record.refused.iter().map(|(id, _)| *id).collect();
        let assets: Vec<i64> = results.iter().filter(|r| refused.contains(&r.job_id) && matches!(r.outcome, Outcome::Embedded { .. })).map(|r| r.asset_id).collect();
        let stray: Vec<i64> = self.catalog.assets_by_ids(&assets).await?.into_iter().filter(|a| a.indexed_at.is_none()).map(|a| a.id).collect();
        if !stray.is_empty() {
            let n = self.vectors.delete_ids(&self.collection, &stray).await?;
            tracing::info!(withdrawn = n, "vectors of jobs cancelled during the write withdrawn");
        }
        Ok(())
    }

    pub async fn write_batch(&self, results: &[EmbedResult]) -> Result<WriteReport, WriteError> {
        let mut points = Vec::new();
        let mut job_results = Vec::with_capacity(results.len());
        let mut report = WriteReport::default();
        let ids: Vec<i64> = results.iter().map(|r| r.job_id).collect();
        let open: std::collections::HashSet<i64> = self
            .catalog
            .job_statuses(&ids)
            .await?
            .into_iter()
            .filter(|(_, s)| matches!(s, JobStatus::Pending | JobStatus::Queued | JobStatus::Running))
            .map(|(id, _)| id)
            .collect();
        for r in results.iter().filter(|r| open.contains(&r.job_id)) {
            let (outcome, checksum) = match &r.outcome {
                Outcome::Embedded { vector, checksum } => match protocol::vector_from_bytes(vector) {
                    Some(v) => {
                        points.push(AssetPoint {
                            asset_id: r.asset_id,
                            vector: v,
                            path: r.path.clone(),
                            created_at: r.created_at,
                            category_id: r.category_id,
                            model_version: r.evidence.model_version.clone(),
                        });
                        (JobOutcome::Completed, Some(checksum.clone()))
                    }
                    None => {
                        report.failed.push(("malformed_vector".into(), r.path.clone()));
                        (JobOutcome::Failed { error: format!("malformed vector of {} bytes", vector.len()), permanent: false }, None)
                    }
                },
                Outcome::Failed { reason, message, kind } => {
                    report.failed.push((reason.clone(), r.path.clone()));
                    (JobOutcome::Failed { error: format!("{reason}: {message}"), permanent: *kind == protocol::FailureKind::Permanent }, None)
                }
            };
            job_results.push(JobResult {
                job_id: r.job_id,
                outcome,
                processing_time_ms: Some(r.evidence.processing_time_ms),
                evidence: NewEvidence {
                    model_name: r.evidence.model_name.clone(),
                    model_version: r.evidence.model_version.clone(),
                    embedding_checksum: checksum,
                    device: Some(r.evidence.device.clone()),
                    metadata: r.evidence.metadata.clone(),
                },
            });
        }
        report.skipped = results.len() - job_results.len();
        report.upserted = points.len();
        // vectors first: a job is never recorded completed without its vector
        let t = std::time::Instant::now();
        if !points.is_empty() {
            self.vectors.upsert(&self.collection, points).await?;
        }
        report.upsert_seconds = t.elapsed().as_secs_f64();
        // test hook: the kill -9 test stops a writer here, after the upsert and before the commit
        fail::fail_point!("writer.before_commit");
        fail::fail_point!("writer.after_upsert", |_| -> Result<WriteReport, WriteError> { protocol::hang_at_failpoint("writer.after_upsert") });
        let t = std::time::Instant::now();
        if !job_results.is_empty() {
            report.record = self.catalog.record_results(&job_results).await?;
        }
        report.commit_seconds = t.elapsed().as_secs_f64();
        self.withdraw_refused(results, &report.record).await?;
        report.completed = job_results.iter().filter(|j| j.outcome == JobOutcome::Completed).count();
        // counted here, in the stage both wirings run, so `serve` and `imgsearch writer` report alike
        metrics::METRICS.jobs_written.with_label_values(&["completed"]).inc_by(report.completed as u64);
        metrics::METRICS.jobs_written.with_label_values(&["failed"]).inc_by(report.failed.len() as u64);
        metrics::METRICS.jobs_written.with_label_values(&["skipped"]).inc_by(report.skipped as u64);
        Ok(report)
    }
}
