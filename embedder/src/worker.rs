//! The embedder as a RabbitMQ worker (`imgsearch embedder`): consumes jobs, batches them across
//! messages, embeds each batch, publishes one result per job with confirms, and only then acks the
//! jobs. It never acks a job whose result the broker has not confirmed, so a crash anywhere before
//! the ack redelivers the job, and the second result is identical in effect (see the writer).
//!
//! What happens to a job:
//! - embedded, or failed for good (a corrupt file): its result is published, then it is acked;
//! - failed for a transient reason (I/O): given back (counted by RabbitMQ as a delivery); on its
//!   last allowed delivery a failed result is published and the job is moved to the dead-letter
//!   queue with its reason, so the catalog records the failure and the message can be inspected;
//! - delivered for the last allowed time without ever finishing (a worker died on it each time): not
//!   tried again, failed with `delivery_limit` and dead-lettered the same way;
//! - not a job this version reads (a poison message): dead-lettered with the reason, nothing else;
//! - of a session paused or cancelled (a control on the `control` exchange): acked and dropped
//!   without work; resuming a paused session publishes its jobs again.
//!
//! A lost connection is not an error: the worker connects again with backoff and carries on (the
//! broker gave the unacked jobs back). SIGTERM (the `shutdown` token) stops consuming, finishes,
//! publishes and acks the batch in hand, and closes the connection.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use broker::{Broker, BrokerConfig, BrokerError, ControlAction, Delivery, Queue};
use protocol::{EmbedJob, EmbedResult, FailureKind, Outcome, batch::Batcher};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{DecodedBatch, Embedder, metrics::METRICS};

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Most images per inference batch (default 32).
    pub batch_size: usize,
    /// Longest a partial batch waits for more jobs (default 200 ms).
    pub max_wait: Duration,
    /// Decode the next batch while the model runs the current one (worth it on a GPU).
    pub overlap_decode: bool,
    /// The consumer tag, shown in RabbitMQ's management (default `embedder-<pid>`).
    pub tag: String,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions { batch_size: 32, max_wait: Duration::from_millis(200), overlap_decode: false, tag: format!("embedder-{}", std::process::id()) }
    }
}

impl WorkerOptions {
    /// Unacked jobs the broker may hand this worker: two batches, so the next one fills while the
    /// current one runs.
    pub fn prefetch(&self) -> u16 {
        (self.batch_size * 2).clamp(1, u16::MAX as usize) as u16
    }
}

/// What a worker did, for its exit line.
#[derive(Debug, Default, Clone)]
pub struct WorkerStats {
    pub embedded: u64,
    pub failed: u64,
    pub dropped: u64,
    pub dead_lettered: u64,
    pub retried: u64,
    pub connections: u64,
}

type Controls = Arc<std::sync::Mutex<HashMap<Uuid, ControlAction>>>;

/// Runs until `shutdown` fires; reconnects while the broker is away.
pub async fn run(config: &BrokerConfig, embedder: Arc<Embedder>, options: WorkerOptions, shutdown: CancellationToken) -> Result<WorkerStats, BrokerError> {
    let mut stats = WorkerStats::default();
    let controls: Controls = Default::default();
    loop {
        let broker = match broker::connect_with_backoff(config, &shutdown).await {
            None => return Ok(stats),
            Some(b) => b?,
        };
        stats.connections += 1;
        if stats.connections > 1 {
            METRICS.reconnects.inc();
        }
        tracing::info!(queue = %config.queue_name(Queue::Jobs), prefetch = options.prefetch(), "embedder consuming");
        let broker = Arc::new(broker);
        match consume(broker.clone(), &embedder, &options, &controls, &shutdown, &mut stats).await {
            Ok(()) => {
                let _ = broker.close().await;
                return Ok(stats);
            }
            Err(e) if e.is_retryable() => tracing::warn!(error = %e, "lost the broker or a publish was refused; connecting again"),
            Err(e) => return Err(e),
        }
    }
}

/// One job in hand: its delivery (to ack), what it asks, and its span (a child of the span that
/// published it, so the asset's trace goes on here).
struct Taken {
    delivery: Delivery,
    job: EmbedJob,
    span: tracing::Span,
}

/// A job's delivery and span, kept until the job is settled.
type InFlight = (Delivery, tracing::Span);

/// Consumes on one connection until shutdown (`Ok`) or until the connection fails (`Err`).
async fn consume(
    broker: Arc<Broker>,
    embedder: &Arc<Embedder>,
    options: &WorkerOptions,
    controls: &Controls,
    shutdown: &CancellationToken,
    stats: &mut WorkerStats,
) -> Result<(), BrokerError> {
    let mut jobs = broker.consume(Queue::Jobs, &options.tag, options.prefetch()).await?;
    let mut control = broker.subscribe_control(&format!("{}-control", options.tag)).await?;
    let mut batcher: Batcher<Result<Delivery, BrokerError>> = Batcher::new(options.batch_size, options.max_wait);
    let mut stage = Inference::start(&broker, embedder, options.overlap_decode);
    let lost = |what: &str| BrokerError::Unavailable { url: broker.config().url.clone(), reason: format!("the {what} consumer ended") };
    loop {
        let flushed = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                // stop taking jobs; the batch in hand is finished and acked; prefetched jobs not
                // yet in a batch go back to the queue when the channel closes
                jobs.cancel().await?;
                if let Some((batch, reason)) = batcher.drain() {
                    let batch = take_batch(&broker, batch, controls, stats).await?;
                    if !batch.is_empty() {
                        stage.run(&broker, embedder, batch, reason, stats).await?;
                    }
                }
                stage.finish(stats).await?;
                jobs.close().await?;
                return Ok(());
            }
            c = control.next() => match c {
                Some(Ok((session, action))) => {
                    if let Ok(id) = session.parse::<Uuid>() {
                        tracing::info!(session = %id, ?action, "session control");
                        let mut map = controls.lock().expect("controls lock");
                        match action {
                            ControlAction::Resume => { map.remove(&id); }
                            other => { map.insert(id, other); }
                        }
                    }
                    None
                }
                Some(Err(e)) => return Err(e),
                None => return Err(lost("control")),
            },
            b = batcher.next_batch(&mut jobs) => match b {
                Some(flushed) => Some(flushed),
                None => return Err(lost("jobs")),
            },
        };
        if let Some((batch, reason)) = flushed {
            let batch = take_batch(&broker, batch, controls, stats).await?;
            if !batch.is_empty() {
                stage.run(&broker, embedder, batch, reason, stats).await?;
            }
        }
    }
}

/// The jobs of a batch of deliveries, each looked at by `take`; a lost connection among them ends
/// the batch (its unacked jobs come again).
async fn take_batch(broker: &Broker, batch: Vec<Result<Delivery, BrokerError>>, controls: &Controls, stats: &mut WorkerStats) -> Result<Vec<Taken>, BrokerError> {
    let mut taken = Vec::with_capacity(batch.len());
    for delivery in batch {
        taken.extend(take(broker, delivery?, controls, stats).await?);
    }
    Ok(taken)
}

/// Where a decoded batch goes: inference right here, or (overlap) a task of its own, one batch
/// behind, so the next batch decodes while this one runs the model.
enum Inference {
    Inline,
    Overlapped { tx: tokio::sync::mpsc::Sender<(Vec<InFlight>, DecodedBatch)>, task: tokio::task::JoinHandle<Result<WorkerStats, BrokerError>> },
}

impl Inference {
    fn start(broker: &Arc<Broker>, embedder: &Arc<Embedder>, overlap: bool) -> Self {
        if !overlap {
            return Inference::Inline;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<InFlight>, DecodedBatch)>(1);
        let (broker, embedder) = (broker.clone(), embedder.clone());
        let task = tokio::spawn(async move {
            let mut stats = WorkerStats::default();
            while let Some((deliveries, decoded)) = rx.recv().await {
                finish(&broker, &embedder, deliveries, decoded, &mut stats).await?;
            }
            Ok(stats)
        });
        Inference::Overlapped { tx, task }
    }

    /// Decodes a batch, then infers, publishes and acks it (here, or in the inference task).
    async fn run(
        &mut self,
        broker: &Broker,
        embedder: &Arc<Embedder>,
        batch: Vec<Taken>,
        reason: protocol::batch::FlushReason,
        stats: &mut WorkerStats,
    ) -> Result<(), BrokerError> {
        crate::count_batch(reason, batch.len());
        let reason = reason.as_str();
        let (deliveries, jobs): (Vec<InFlight>, Vec<EmbedJob>) = batch.into_iter().map(|t| ((t.delivery, t.span), t.job)).unzip();
        let e = embedder.clone();
        let span = tracing::info_span!("decode_batch", images = jobs.len(), reason);
        let decoded = tokio::task::spawn_blocking(move || span.in_scope(|| e.decode(jobs))).await.expect("decoding does not panic");
        match self {
            Inference::Inline => finish(broker, embedder, deliveries, decoded, stats).await,
            Inference::Overlapped { tx, .. } => {
                if tx.send((deliveries, decoded)).await.is_err() {
                    // the inference task stopped: its error says why
                    let Inference::Overlapped { task, .. } = std::mem::replace(self, Inference::Inline) else { unreachable!() };
                    return task.await.expect("the inference task does not panic").map(|_| ());
                }
                Ok(())
            }
        }
    }

    /// Waits for the batches still in the inference task.
    async fn finish(self, stats: &mut WorkerStats) -> Result<(), BrokerError> {
        if let Inference::Overlapped { tx, task } = self {
            drop(tx);
            let s = task.await.expect("the inference task does not panic")?;
            stats.embedded += s.embedded;
            stats.failed += s.failed;
            stats.retried += s.retried;
            stats.dead_lettered += s.dead_lettered;
        }
        Ok(())
    }
}

/// Looks at one delivery: a job is kept for the batch; a poison message, a job of a dropped session
/// or one delivered too often is settled here (`None`).
async fn take(broker: &Broker, delivery: Delivery, controls: &Controls, stats: &mut WorkerStats) -> Result<Option<Taken>, BrokerError> {
    METRICS.jobs_consumed.inc();
    METRICS.queue_lag_seconds.observe(delivery.queue_lag().as_secs_f64());
    let job: EmbedJob = match delivery.decode::<EmbedJob>("embed job") {
        Ok(job) if job.v == protocol::VERSION => job,
        Ok(job) => {
            return poison(broker, &delivery, &format!("embed job version {} is not the version this embedder reads ({})", job.v, protocol::VERSION), stats).await.map(|_| None);
        }
        Err(e) => return poison(broker, &delivery, &e.to_string(), stats).await.map(|_| None),
    };
    let dropped = controls.lock().expect("controls lock").get(&job.session_id).copied();
    if let Some(action) = dropped {
        tracing::debug!(job = %job.job_id, ?action, "dropping a job of a stopped session");
        delivery.ack().await?;
        METRICS.jobs_acked.with_label_values(&["dropped"]).inc();
        stats.dropped += 1;
        return Ok(None);
    }
    let limit = broker.config().delivery_limit;
    if delivery.delivery_count() >= limit {
        // every earlier delivery ended without an ack: a worker died on this job each time
        let message = format!("the job was delivered {} times without finishing; a worker may crash on this file", delivery.delivery_count());
        let result = failed_result(&job, "delivery_limit", &message);
        broker.publish(Queue::Embeddings, &result, delivery.traceparent().as_deref()).await?;
        broker.dead_letter(Queue::Jobs, &delivery, &format!("delivery_limit: {message}")).await?;
        METRICS.jobs_failed.with_label_values(&["delivery_limit"]).inc();
        METRICS.jobs_acked.with_label_values(&["dead_lettered"]).inc();
        stats.dead_lettered += 1;
        return Ok(None);
    }
    let span = tracing::info_span!(parent: None, "embed_job", job_id = %job.job_id, asset_id = %job.asset_id, session_id = %job.session_id);
    broker::trace::set_parent(&span, delivery.traceparent().as_deref());
    Ok(Some(Taken { delivery, job, span }))
}

async fn poison(broker: &Broker, delivery: &Delivery, reason: &str, stats: &mut WorkerStats) -> Result<(), BrokerError> {
    tracing::warn!(reason, "dead-lettering a message that is not a job");
    broker.dead_letter(Queue::Jobs, delivery, &format!("malformed: {reason}")).await?;
    METRICS.jobs_failed.with_label_values(&["malformed"]).inc();
    METRICS.jobs_acked.with_label_values(&["dead_lettered"]).inc();
    stats.dead_lettered += 1;
    Ok(())
}

/// A failed result for a job that was never embedded.
fn failed_result(job: &EmbedJob, reason: &str, message: &str) -> EmbedResult {
    EmbedResult::for_job(
        job,
        Outcome::Failed { reason: reason.into(), message: message.into(), kind: FailureKind::Transient },
        protocol::EvidenceInfo { model_name: String::new(), model_version: String::new(), device: String::new(), metadata: serde_json::json!(null), processing_time_ms: 0 },
    )
}

/// Inference, then the results published (confirmed), then the jobs acked or given back.
#[tracing::instrument(name = "infer_batch", skip_all, fields(images = deliveries.len()))]
async fn finish(broker: &Broker, embedder: &Arc<Embedder>, deliveries: Vec<InFlight>, decoded: DecodedBatch, stats: &mut WorkerStats) -> Result<(), BrokerError> {
    let e = embedder.clone();
    let (results, timings) = tokio::task::spawn_blocking(move || e.infer(decoded)).await.expect("inference does not panic");
    METRICS.stage_seconds.with_label_values(&["decode"]).observe(timings.decode_ms / 1e3);
    METRICS.stage_seconds.with_label_values(&["inference"]).observe(timings.inference_ms / 1e3);
    // test hook: the kill -9 test stops an embedder here, mid-batch, before anything is published
    fail::fail_point!("embedder.after_inference", |_| -> Result<(), BrokerError> { protocol::hang_at_failpoint("embedder.after_inference") });

    let limit = broker.config().delivery_limit;
    let mut publish = Vec::new();
    let mut settle = Vec::new();
    for (result, (delivery, span)) in results.into_iter().zip(deliveries) {
        let transient = matches!(&result.outcome, Outcome::Failed { kind: FailureKind::Transient, .. });
        let last_try = delivery.delivery_count() + 1 >= limit;
        let action = match (&result.outcome, transient, last_try) {
            (_, true, false) => Settle::Retry,
            (Outcome::Failed { reason, message, .. }, true, true) => Settle::DeadLetter(format!("{reason}: {message}")),
            (Outcome::Failed { reason, .. }, ..) => Settle::Failed(reason.clone()),
            (Outcome::Embedded { .. }, ..) => Settle::Embedded,
        };
        if !matches!(action, Settle::Retry) {
            // the result carries the job's span: the writer's span continues the same trace
            publish.push((result, broker::trace::traceparent_of(&span).or_else(|| delivery.traceparent())));
        }
        settle.push((delivery, action, span));
    }
    let t = Instant::now();
    broker.publish_batch(Queue::Embeddings, &publish).await?;
    METRICS.stage_seconds.with_label_values(&["publish"]).observe(t.elapsed().as_secs_f64());
    // each job's span ends once the job is settled
    for (delivery, action, _span) in settle {
        match action {
            Settle::Embedded => {
                delivery.ack().await?;
                METRICS.jobs_acked.with_label_values(&["embedded"]).inc();
                stats.embedded += 1;
            }
            Settle::Failed(reason) => {
                delivery.ack().await?;
                METRICS.jobs_failed.with_label_values(&[reason.as_str()]).inc();
                METRICS.jobs_acked.with_label_values(&["failed"]).inc();
                stats.failed += 1;
            }
            Settle::Retry => {
                delivery.retry().await?;
                METRICS.jobs_retried.inc();
                stats.retried += 1;
            }
            Settle::DeadLetter(reason) => {
                broker.dead_letter(Queue::Jobs, &delivery, &reason).await?;
                METRICS.jobs_failed.with_label_values(&[reason.split(':').next().unwrap_or("transient")]).inc();
                METRICS.jobs_acked.with_label_values(&["dead_lettered"]).inc();
                stats.dead_lettered += 1;
            }
        }
    }
    tracing::debug!(images = timings.images, failed = timings.failed, decode_ms = timings.decode_ms, inference_ms = timings.inference_ms, "batch done");
    Ok(())
}

enum Settle {
    Embedded,
    Failed(String),
    Retry,
    DeadLetter(String),
}
