//! Writer, the *write* stage: takes a batch of embed results, upserts the vectors (waiting until
//! durable), then records jobs, evidence, the assets' `indexed_at` and the sessions' counters in one
//! catalog transaction. Only when both are done may the wiring ack the batch.
//!
//! Why a replayed batch changes nothing (exactly-once effects on an at-least-once queue): the point
//! id is the asset id, so a second upsert overwrites the same point with the same vector; the
//! catalog moves a job only forward (`pending|queued|running -> completed|failed`), so a job that is
//! already completed is reported as `already_done` and nothing is written; evidence is keyed by
//! (session, asset) with `ON CONFLICT DO NOTHING`; counters are recounted from the jobs, never
//! incremented. A crash between the upsert and the commit leaves a vector whose job is not done:
//! the batch comes again, and the replay completes it.

use std::sync::Arc;

use catalog::{Catalog, CatalogError, JobOutcome, JobResult, NewEvidence, RecordReport};
use protocol::{EmbedResult, Outcome};
use vectors::{AssetPoint, VectorError, VectorStore};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Vectors(#[from] VectorError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
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
    pub record: RecordReport,
}

impl Writer {
    pub async fn write_batch(&self, results: &[EmbedResult]) -> Result<WriteReport, WriteError> {
        let mut points = Vec::new();
        let mut job_results = Vec::with_capacity(results.len());
        let mut report = WriteReport::default();
        for r in results {
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
                        (JobOutcome::Failed { error: format!("malformed vector of {} bytes", vector.len()) }, None)
                    }
                },
                Outcome::Failed { reason, message, .. } => {
                    report.failed.push((reason.clone(), r.path.clone()));
                    (JobOutcome::Failed { error: format!("{reason}: {message}") }, None)
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
        report.upserted = points.len();
        // vectors first: a job is never recorded completed without its vector
        self.vectors.upsert(&self.collection, points).await?;
        report.record = self.catalog.record_results(&job_results).await?;
        report.completed = job_results.iter().filter(|j| j.outcome == JobOutcome::Completed).count();
        Ok(report)
    }
}
