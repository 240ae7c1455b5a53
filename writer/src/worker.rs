//! The writer as a RabbitMQ worker (`imgsearch writer`): consumes embedding results in batches,
//! writes each batch (vectors upserted and durable, then one catalog transaction; see the crate
//! docs for why a replay changes nothing) and acks the batch only after both.
//!
//! - A store that is unreachable (Qdrant or Postgres away) holds the batch: the write is tried
//!   again with backoff, the messages stay unacked, nothing is dead-lettered for it.
//! - Another write error gives the batch back to the queue (counted as deliveries; past the limit
//!   RabbitMQ moves the messages to the dead-letter queue).
//! - A message that is not a result this version reads is dead-lettered with its reason.
//! - A lost broker connection: connect again with backoff; the unacked results come again.
//! - SIGTERM (`shutdown`): stop consuming, write and ack the batch in hand, close.

use std::sync::Arc;

use backon::Retryable;
use broker::{Broker, BrokerConfig, BrokerError, Delivery, Queue};
use protocol::{EmbedResult, batch::Batcher};
use tokio_util::sync::CancellationToken;

use crate::{WriteError, Writer, metrics::METRICS};

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Most results per write batch (default 256).
    pub batch_size: usize,
    /// Longest a partial batch waits for more (default 200 ms).
    pub max_wait: std::time::Duration,
    /// The consumer tag (default `writer-<pid>`).
    pub tag: String,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions { batch_size: 256, max_wait: std::time::Duration::from_millis(200), tag: format!("writer-{}", std::process::id()) }
    }
}

impl WorkerOptions {
    /// Unacked results the broker may hand this worker: two batches.
    pub fn prefetch(&self) -> u16 {
        (self.batch_size * 2).clamp(1, u16::MAX as usize) as u16
    }
}

#[derive(Debug, Default, Clone)]
pub struct WorkerStats {
    pub completed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub connections: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Runs until `shutdown` fires; reconnects while the broker is away.
pub async fn run(config: &BrokerConfig, writer: Arc<Writer>, options: WorkerOptions, shutdown: CancellationToken) -> Result<WorkerStats, WorkerError> {
    let mut stats = WorkerStats::default();
    loop {
        let broker = match broker::connect_with_backoff(config, &shutdown).await {
            None => return Ok(stats),
            Some(b) => b?,
        };
        stats.connections += 1;
        if stats.connections > 1 {
            METRICS.reconnects.inc();
        }
        tracing::info!(queue = %config.queue_name(Queue::Embeddings), prefetch = options.prefetch(), "writer consuming");
        match consume(&broker, &writer, &options, &shutdown, &mut stats).await {
            Ok(()) => {
                let _ = broker.close().await;
                return Ok(stats);
            }
            Err(WorkerError::Broker(e)) if e.is_retryable() => tracing::warn!(error = %e, "lost the broker; connecting again"),
            Err(e) => return Err(e),
        }
    }
}

async fn consume(broker: &Broker, writer: &Writer, options: &WorkerOptions, shutdown: &CancellationToken, stats: &mut WorkerStats) -> Result<(), WorkerError> {
    let mut results = broker.consume(Queue::Embeddings, &options.tag, options.prefetch()).await?;
    let mut batcher: Batcher<Result<Delivery, BrokerError>> = Batcher::new(options.batch_size, options.max_wait);
    // (each result's span, a child of the embedder's, is made when its batch is written)
    loop {
        let flushed = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                // the batch in hand is written and acked; prefetched results not yet in it go back
                // to the queue when the channel closes
                results.cancel().await?;
                if let Some((batch, reason)) = batcher.drain() {
                    let batch = decode_batch(broker, batch, stats).await?;
                    write(writer, batch, reason.as_str(), shutdown, stats).await?;
                }
                results.close().await?;
                return Ok(());
            }
            b = batcher.next_batch(&mut results) => b,
        };
        let Some((batch, reason)) = flushed else {
            return Err(BrokerError::Unavailable { url: broker.config().url.clone(), reason: "the embeddings consumer ended".into() }.into());
        };
        let batch = decode_batch(broker, batch, stats).await?;
        if !batch.is_empty() {
            write(writer, batch, reason.as_str(), shutdown, stats).await?;
        }
    }
}

/// The results of a batch of deliveries; a lost connection among them ends the batch (its unacked
/// messages come again), a message that is not a result this version reads is dead-lettered.
async fn decode_batch(broker: &Broker, batch: Vec<Result<Delivery, BrokerError>>, stats: &mut WorkerStats) -> Result<Vec<(Delivery, EmbedResult)>, WorkerError> {
    let mut results = Vec::with_capacity(batch.len());
    for delivery in batch {
        let delivery = delivery?;
        METRICS.results_consumed.inc();
        METRICS.queue_lag_seconds.observe(delivery.queue_lag().as_secs_f64());
        match delivery.decode::<EmbedResult>("embedding result") {
            Ok(r) if r.v == protocol::VERSION => results.push((delivery, r)),
            Ok(r) => dead_letter(broker, &delivery, &format!("malformed: result version {} is not the version this writer reads ({})", r.v, protocol::VERSION), stats).await?,
            Err(e) => dead_letter(broker, &delivery, &format!("malformed: {e}"), stats).await?,
        }
    }
    Ok(results)
}

async fn dead_letter(broker: &Broker, delivery: &Delivery, reason: &str, stats: &mut WorkerStats) -> Result<(), BrokerError> {
    tracing::warn!(reason, "dead-lettering a message that is not a result");
    broker.dead_letter(Queue::Embeddings, delivery, reason).await?;
    METRICS.jobs_written.with_label_values(&["dead_lettered"]).inc();
    stats.dead_lettered += 1;
    Ok(())
}

/// Writes a batch (waiting out an unreachable store), then acks it.
#[tracing::instrument(name = "write_batch", skip_all, fields(results = batch.len(), reason))]
async fn write(writer: &Writer, batch: Vec<(Delivery, EmbedResult)>, reason: &str, shutdown: &CancellationToken, stats: &mut WorkerStats) -> Result<(), WorkerError> {
    METRICS.batches.with_label_values(&[reason]).inc();
    METRICS.batch_size.observe(batch.len() as f64);
    let (deliveries, results): (Vec<Delivery>, Vec<EmbedResult>) = batch.into_iter().unzip();
    // one span per job, continuing the asset's trace from the embedder; ends when the job is acked
    let _job_spans: Vec<tracing::Span> = deliveries
        .iter()
        .zip(&results)
        .map(|(d, r)| {
            let span = tracing::info_span!(parent: None, "write_job", job_id = %r.job_id, asset_id = %r.asset_id);
            broker::trace::set_parent(&span, d.traceparent().as_deref());
            span
        })
        .collect();
    // the first attempt always runs (a SIGTERM drain writes the batch in hand); only waiting out an
    // unavailable store gives way to shutdown
    let report = match writer.write_batch(&results).await {
        Err(e) if e.is_unavailable() => {
            tracing::warn!(error = %e, "a store is unavailable; holding the batch");
            METRICS.store_retries.inc();
            let attempt = || writer.write_batch(&results);
            let retried = attempt.retry(broker::reconnect_backoff()).when(WriteError::is_unavailable).notify(|e, wait| {
                METRICS.store_retries.inc();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "a store is unavailable; holding the batch");
            });
            tokio::select! {
                r = retried => r,
                // stopping while a store is away: the unacked batch comes again to the next writer
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
        other => other,
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, results = deliveries.len(), "cannot write a batch; giving it back");
            for d in &deliveries {
                d.retry().await?;
            }
            return Ok(());
        }
    };
    METRICS.stage_seconds.with_label_values(&["upsert"]).observe(report.upsert_seconds);
    METRICS.stage_seconds.with_label_values(&["commit"]).observe(report.commit_seconds);
    for d in &deliveries {
        d.ack().await?;
    }
    let failed = report.failed.len() as u64;
    let completed = report.completed as u64;
    stats.completed += completed;
    stats.failed += failed;
    stats.skipped += report.skipped as u64;
    tracing::debug!(completed, failed, skipped = report.skipped, upsert_s = report.upsert_seconds, commit_s = report.commit_seconds, "batch written");
    Ok(())
}
