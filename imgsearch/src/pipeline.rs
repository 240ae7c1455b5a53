//! The embedded wiring: feed -> embed -> write, three tasks joined by bounded channels, in one
//! process. The stages are the same library code the distributed processes run.
//!
//! The embed stage is two tasks: decode (the decode pool) and inference (ONNX Runtime), joined by a
//! channel of one batch, so decoding batch N+1 overlaps running the model on batch N.
//!
//! Downstream starts first; a full channel slows the stage before it (backpressure, never unbounded
//! memory). Cancelling (Ctrl-C) stops the feed; the batches already taken are embedded, written
//! and recorded, so a stop loses nothing and the next run resumes with the jobs left.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use embedder::{Batcher, DecodedBatch, Embedder};
use futures_util::{Stream, StreamExt, TryStreamExt};
use protocol::{EmbedJob, EmbedResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use writer::{WriteReport, Writer};

#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Images per inference batch (default 32).
    pub embed_batch: usize,
    /// Results per write batch (default 256).
    pub write_batch: usize,
    /// How long a partial batch waits for more before it goes (default 200 ms).
    pub max_wait: Duration,
    /// Decode the next batch while the model runs on the current one. Worth it when the model runs
    /// on a GPU; on CPU both halves want the same cores (bench/index.sh: 0.8-1.0x on 2 cores), so
    /// `imgsearch index` and `serve` turn it on only for a GPU (default off).
    pub overlap_decode: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions { embed_batch: 32, write_batch: 256, max_wait: Duration::from_millis(200), overlap_decode: false }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct RunStats {
    pub completed: usize,
    pub failed: usize,
    /// reason -> count
    pub failed_reasons: BTreeMap<String, usize>,
    /// up to 10 (reason, path) examples
    pub failed_examples: Vec<(String, String)>,
    /// embed batches by flush reason
    pub embed_flushes: BTreeMap<&'static str, usize>,
    pub interrupted: bool,
    pub elapsed: Duration,
}

/// A session's open jobs (pending, queued or running), read from the catalog a page at a time as
/// the pipeline takes them: a run of any size holds one page, not a message per asset. A page the
/// catalog could not read for a moment (busy, or its server restarting) is read again after a
/// wait, a few times, before the stream ends in the error (`page_read_backoff`).
pub fn open_jobs(catalog: catalog::Catalog, session: &catalog::Session) -> impl Stream<Item = Result<EmbedJob>> + Send + 'static {
    use backon::RetryableWithContext;
    use catalog::JobStatus::*;
    let pages = coordinator::JobPages::new(session, &[Pending, Queued, Running], 1000);
    futures_util::stream::try_unfold((catalog, pages), |state| async move {
        // a failed `next` moved nothing: a retry reads the same page
        let read = |(catalog, mut pages): (catalog::Catalog, coordinator::JobPages)| async move {
            let page = read_page(&catalog, &mut pages).await;
            ((catalog, pages), page)
        };
        let ((catalog, pages), page) = read
            .retry(page_read_backoff())
            .context(state)
            .when(coordinator::CoordinatorError::is_retryable)
            .notify(|e, wait| tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "reading the session's jobs failed; trying again"))
            .await;
        let page = page.context("cannot read the session's jobs")?;
        anyhow::Ok(page.map(|jobs| (futures_util::stream::iter(jobs.into_iter().map(anyhow::Ok)), (catalog, pages))))
    })
    .try_flatten()
}

/// Retries of a job page that failed with a retryable error: waits of 0.1, 0.2, 0.4, 0.8, 1.6 and
/// 3.2 s, each plus up to as much again of jitter: 6-13 s in all.
fn page_read_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default().with_min_delay(Duration::from_millis(100)).with_jitter().with_max_times(6)
}

async fn read_page(catalog: &catalog::Catalog, pages: &mut coordinator::JobPages) -> std::result::Result<Option<Vec<EmbedJob>>, coordinator::CoordinatorError> {
    // the tests make the catalog busy for a session whose root says so
    fail::fail_point!("pipeline.read_jobs", pages.session().root_path.contains("read-jobs-fail"), |_| Err(
        catalog::CatalogError::Busy("failpoint pipeline.read_jobs".into()).into()
    ));
    pages.next(catalog).await
}

/// Runs the jobs through embed and write; `on_write` sees every written batch (progress). The jobs
/// are taken as the embed stage asks for them; when reading them fails, what was taken is embedded
/// and written, and the error is returned.
pub async fn run(
    jobs: impl Stream<Item = Result<EmbedJob>>,
    embedder: Arc<Embedder>,
    writer: Arc<Writer>,
    options: PipelineOptions,
    cancel: CancellationToken,
    on_write: impl Fn(&WriteReport) + Send + 'static,
) -> Result<RunStats> {
    let started = Instant::now();
    let (job_tx, job_rx) = mpsc::channel::<EmbedJob>(options.embed_batch * 2);
    let (result_tx, result_rx) = mpsc::channel::<EmbedResult>(options.write_batch * 2);

    let write = tokio::spawn(write_stage(result_rx, writer, options.clone(), on_write));
    let embed = tokio::spawn(embed_stage(job_rx, result_tx, embedder, options.clone()));
    let mut interrupted = false;
    let mut feed_error = None;
    let mut jobs = std::pin::pin!(jobs);
    loop {
        let job = tokio::select! {
            biased;
            _ = cancel.cancelled() => { interrupted = true; break; }
            job = jobs.next() => job,
        };
        let job = match job {
            None => break,
            Some(Err(e)) => {
                feed_error = Some(e);
                break;
            }
            Some(Ok(job)) => job,
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => { interrupted = true; break; }
            sent = job_tx.send(job) => if sent.is_err() { break },
        }
    }
    drop(job_tx);
    let flushes = embed.await.context("the embed stage panicked")??;
    let mut stats = write.await.context("the write stage panicked")??;
    stats.embed_flushes = flushes;
    stats.interrupted = interrupted;
    stats.elapsed = started.elapsed();
    match feed_error {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// Batches jobs and decodes each batch on the decode pool; the decoded batch goes to `infer_stage`
/// through a channel of one, so the next batch decodes while the current one runs the model.
async fn embed_stage(mut rx: mpsc::Receiver<EmbedJob>, tx: mpsc::Sender<EmbedResult>, embedder: Arc<Embedder>, options: PipelineOptions) -> Result<BTreeMap<&'static str, usize>> {
    let (decoded_tx, decoded_rx) = mpsc::channel::<DecodedBatch>(1);
    // without overlap, this stage runs inference itself, one batch after the other
    let (infer, sequential_tx) = if options.overlap_decode { (Some(tokio::spawn(infer_stage(decoded_rx, tx, embedder.clone()))), None) } else { (None, Some(tx)) };
    let mut batcher = Batcher::new(options.embed_batch, options.max_wait);
    let mut flushes = BTreeMap::new();
    while let Some((batch, reason)) = batcher.next_batch(&mut rx).await {
        *flushes.entry(reason.as_str()).or_default() += 1;
        embedder::count_batch(reason, batch.len());
        let e = embedder.clone();
        let decoded = tokio::task::spawn_blocking(move || e.decode(batch)).await.context("a decode batch panicked")?;
        match &sequential_tx {
            None => {
                if decoded_tx.send(decoded).await.is_err() {
                    break;
                }
            }
            Some(tx) => send_results(&embedder, decoded, tx).await?,
        }
    }
    drop(decoded_tx);
    if let Some(infer) = infer {
        infer.await.context("the inference stage panicked")??;
    }
    Ok(flushes)
}

async fn send_results(embedder: &Arc<Embedder>, decoded: DecodedBatch, tx: &mpsc::Sender<EmbedResult>) -> Result<()> {
    let e = embedder.clone();
    let (results, timings) = tokio::task::spawn_blocking(move || e.infer(decoded)).await.context("an inference batch panicked")?;
    tracing::debug!(images = timings.images, failed = timings.failed, decode_ms = timings.decode_ms, inference_ms = timings.inference_ms, "embedded a batch");
    for r in results {
        if tx.send(r).await.is_err() {
            anyhow::bail!("the write stage stopped");
        }
    }
    Ok(())
}

async fn infer_stage(mut rx: mpsc::Receiver<DecodedBatch>, tx: mpsc::Sender<EmbedResult>, embedder: Arc<Embedder>) -> Result<()> {
    while let Some(decoded) = rx.recv().await {
        send_results(&embedder, decoded, &tx).await?;
    }
    Ok(())
}

async fn write_stage(mut rx: mpsc::Receiver<EmbedResult>, writer: Arc<Writer>, options: PipelineOptions, on_write: impl Fn(&WriteReport)) -> Result<RunStats> {
    let mut batcher = Batcher::new(options.write_batch, options.max_wait);
    let mut stats = RunStats::default();
    while let Some((batch, _reason)) = batcher.next_batch(&mut rx).await {
        let report = writer.write_batch(&batch).await.context("cannot write a batch of results")?;
        stats.completed += report.completed;
        stats.failed += report.failed.len();
        for (reason, path) in &report.failed {
            *stats.failed_reasons.entry(reason.clone()).or_default() += 1;
            if stats.failed_examples.len() < 10 {
                stats.failed_examples.push((reason.clone(), path.clone()));
            }
        }
        on_write(&report);
    }
    Ok(stats)
}
