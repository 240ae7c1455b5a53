//! Embedder, the *embed* stage: decodes and preprocesses a batch of jobs on a bounded CPU pool, runs
//! the image tower once for the batch, and answers each job with an `EmbedResult` (the vector and its
//! evidence, or the reason the file failed). It reads image files and runs the model; it never
//! writes to a store, and it knows nothing of the queue that feeds it.
//!
//! A bad file never fails the batch: it becomes a `Failed` result with a fixed reason label
//! (`corrupt`, `unsupported_format`, `too_large`, `extreme_aspect`, `empty`, `decoder_panic`,
//! `decode_timeout`, `not_a_regular_file`: permanent; `io`, `busy`: transient), and the other images
//! of the batch are embedded. Each decode runs guarded (clip's `guard`): no file can panic, hang or
//! exhaust the worker.

mod metrics;
pub mod worker;

use std::{sync::Arc, time::Instant};

use clip::{ClipModel, ImageError, ImageInfo, PreparedImage, Preprocessor, embedding_checksum};
pub use protocol::batch::{Batcher, FlushReason};
use protocol::{EmbedJob, EmbedResult, EvidenceInfo, FailureKind, Outcome};
use rayon::prelude::*;
use serde_json::json;

/// Runs whole batches; share it behind an `Arc` and call it from blocking threads.
pub struct Embedder {
    model: Arc<ClipModel>,
    preprocessor: Preprocessor,
    pool: rayon::ThreadPool,
    environment: serde_json::Value,
}

/// A batch decoded and waiting for inference.
pub struct DecodedBatch {
    jobs: Vec<EmbedJob>,
    ok: Vec<PreparedImage>,
    slots: Vec<(Result<ImageInfo, ImageError>, f64)>,
    decode_ms: f64,
}

/// What one batch took, for metrics and logs.
#[derive(Debug, Clone, Default)]
pub struct BatchTimings {
    pub images: usize,
    pub failed: usize,
    pub decode_ms: f64,
    pub inference_ms: f64,
}

/// Counts one embed batch (by flush reason, and its size), in both wirings.
pub fn count_batch(reason: FlushReason, images: usize) {
    metrics::METRICS.batches.with_label_values(&[reason.as_str()]).inc();
    metrics::METRICS.batch_size.observe(images as f64);
}

fn failure_kind(e: &ImageError) -> FailureKind {
    if e.is_transient() { FailureKind::Transient } else { FailureKind::Permanent }
}

impl Embedder {
    /// `decode_threads`: the size of the decode pool (0: one per core).
    pub fn new(model: Arc<ClipModel>, decode_threads: usize, fast_jpeg: bool) -> Self {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(decode_threads).thread_name(|i| format!("decode-{i}")).build().expect("a decode thread pool");
        let environment = json!({
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "imgsearch": env!("CARGO_PKG_VERSION"),
            "fastJpeg": fast_jpeg,
        });
        let preprocessor = model.preprocessor().clone().with_fast_jpeg(fast_jpeg);
        Embedder { model, preprocessor, pool, environment }
    }

    pub fn model(&self) -> &ClipModel {
        &self.model
    }

    /// Embeds a batch (blocking). Every job gets exactly one result, in the order given.
    pub fn embed_batch(&self, jobs: Vec<EmbedJob>) -> (Vec<EmbedResult>, BatchTimings) {
        let decoded = self.decode(jobs);
        self.infer(decoded)
    }

    /// The first half of `embed_batch`: decode and preprocess on the decode pool (blocking). Run it
    /// for the next batch while `infer` runs the current one.
    pub fn decode(&self, jobs: Vec<EmbedJob>) -> DecodedBatch {
        let started = Instant::now();
        let prepared: Vec<(Result<PreparedImage, ImageError>, f64)> = self.pool.install(|| {
            jobs.par_iter()
                .map(|job| {
                    let t = Instant::now();
                    let r = self.preprocessor.prepare_file(&protocol::paths::from_stored(&job.path));
                    (r, t.elapsed().as_secs_f64() * 1e3)
                })
                .collect()
        });
        let decode_ms = started.elapsed().as_secs_f64() * 1e3;
        // the decoded pixels move into the batch; each job keeps its image info or its error
        let mut ok: Vec<PreparedImage> = Vec::with_capacity(prepared.len());
        let mut slots: Vec<(Result<ImageInfo, ImageError>, f64)> = Vec::with_capacity(prepared.len());
        for (r, ms) in prepared {
            match r {
                Ok(p) => {
                    slots.push((Ok(p.info.clone()), ms));
                    ok.push(p);
                }
                Err(e) => slots.push((Err(e), ms)),
            }
        }
        DecodedBatch { jobs, ok, slots, decode_ms }
    }

    /// The second half: one inference for the decoded images, a result per job (blocking).
    pub fn infer(&self, batch: DecodedBatch) -> (Vec<EmbedResult>, BatchTimings) {
        let DecodedBatch { jobs, ok, slots, decode_ms } = batch;
        let t = Instant::now();
        let vectors = if ok.is_empty() { Ok(None) } else { self.model.embed_images(&ok).map(Some) };
        let inference_ms = t.elapsed().as_secs_f64() * 1e3;
        let device = self.model.image_device();
        let per_image_inference = if ok.is_empty() { 0.0 } else { inference_ms / ok.len() as f64 };
        let mut row = 0;
        let mut results = Vec::with_capacity(jobs.len());
        let mut failed = 0;
        for (job, (prep, prep_ms)) in jobs.iter().zip(slots) {
            let (outcome, image_meta, embedding_meta) = match (&prep, &vectors) {
                (Ok(p), Ok(Some(m))) => {
                    let v = m.row(row).to_vec();
                    row += 1;
                    let checksum = embedding_checksum(&v);
                    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    let embedding = json!({"dim": v.len(), "norm": norm, "checksum": checksum});
                    (Outcome::Embedded { vector: protocol::vector_to_bytes(&v), checksum }, serde_json::to_value(p).unwrap_or_default(), embedding)
                }
                (Ok(_), Ok(None)) => unreachable!("vectors exist when an image was prepared"),
                (Ok(p), Err(e)) => {
                    // the runtime failed for the whole batch: transient, every image is retried
                    (Outcome::Failed { reason: "inference".into(), message: e.to_string(), kind: FailureKind::Transient }, serde_json::to_value(p).unwrap_or_default(), json!(null))
                }
                (Err(e), _) => (Outcome::Failed { reason: e.reason().into(), message: e.to_string(), kind: failure_kind(e) }, json!(null), json!(null)),
            };
            if matches!(outcome, Outcome::Failed { .. }) {
                failed += 1;
            }
            let infer_ms = if prep.is_ok() { per_image_inference } else { 0.0 };
            results.push(EmbedResult::for_job(
                job,
                outcome,
                EvidenceInfo {
                    model_name: self.model.name.clone(),
                    model_version: self.model.version.clone(),
                    device: device.clone(),
                    metadata: json!({
                        "image": image_meta,
                        "embedding": embedding_meta,
                        "environment": self.environment,
                        "timing": {"preprocessMs": prep_ms, "inferenceMs": infer_ms, "batchSize": jobs.len(), "batchInferenceMs": inference_ms},
                    }),
                    processing_time_ms: (prep_ms + infer_ms).round() as i64,
                },
            ));
        }
        (results, BatchTimings { images: jobs.len(), failed, decode_ms, inference_ms })
    }
}
