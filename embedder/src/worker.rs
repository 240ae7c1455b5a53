//! The embedder as a RabbitMQ worker (`imgsearch embedder`): consumes jobs, batches them across
//! messages, embeds each batch, publishes one result per job with confirms, and only then acks the
//! jobs. It never acks a job whose result the broker has not confirmed, so a crash anywhere before
//! the ack redelivers the job, and the second result is identical in effect (see the writer).
//!
//! What happens to a job:
//! - before a batch runs, a `started` report names its jobs: the writer counts one attempt of each
//!   in the catalog (runs that really started, unlike RabbitMQ's count of returns, which charges a
//!   message for every death of a worker that merely held it);
//! - embedded, or failed for good (a corrupt file): its result is published, then it is acked;
//! - failed for a transient reason (I/O): given back after a pause; on its last allowed attempt
//!   (`attempt_limit`) a failed result is published and the job is moved to the dead-letter queue
//!   with its reason, so the catalog records the failure and the message can be inspected;
//! - given back by the broker (a worker died holding it, or it was given back to retry): not run
//!   here but handed to the writers as a `returned` report, then acked. The writer, which has the
//!   count, publishes it again, or fails it (`crashed`) and dead-letters it once its runs reached
//!   the limit: a file that kills every worker that opens it ends in the dead-letter queue, a
//!   healthy job is never charged for a worker that died before running it;
//! - not a job this version reads (a poison message): dead-lettered with the reason, nothing else;
//! - of a session paused or cancelled (a control on the `control` exchange): acked and dropped
//!   without work; resuming a paused session publishes its jobs again.
//!
//! A lost connection is not an error: the worker connects again with backoff and carries on (the
//! broker gave the unacked jobs back). SIGTERM (the `shutdown` token) stops consuming, finishes,
//! publishes and acks the batch in hand, and closes the connection.

use std::{
    collections::HashMap,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use broker::{Broker, BrokerConfig, BrokerError, ControlAction, Delivery, Queue};
use protocol::{
    EmbedJob, EmbedResult, FailureKind, Outcome, Report, RunStarted,
    batch::{Batcher, Source},
};
use tokio_util::sync::CancellationToken;

use crate::{BatchTimings, DecodedBatch, Embedder, metrics::METRICS};

/// A job message as the embedder settles it (a RabbitMQ delivery; an in-memory fake in tests).
pub trait JobMessage: Send + Sync + 'static {
    fn decode(&self) -> Result<EmbedJob, BrokerError>;
    /// Earlier deliveries of this message (0 the first time): above 0, the broker gave it back.
    fn delivery_count(&self) -> i64;
    fn queue_lag(&self) -> Duration;
    fn traceparent(&self) -> Option<String>;
    fn ack(&self) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// Back to the queue for another try.
    fn retry(&self) -> impl Future<Output = Result<(), BrokerError>> + Send;
}

/// The jobs queue (a `Source` of messages; `None` when the connection is gone).
pub trait JobInbox<M: JobMessage>: Source<Item = Result<M, BrokerError>> + Send {
    /// Stop taking jobs (shutdown); those prefetched and not yet taken go back to the queue.
    fn stop_consuming(&mut self) -> impl Future<Output = Result<(), BrokerError>> + Send;
}

/// Where reports to the writers go (confirmed), and where a job that can never succeed goes.
pub trait Outbox<M: JobMessage>: Send + Sync + 'static {
    /// The attempt of a job on which a transient failure fails it.
    fn attempt_limit(&self) -> i64;
    fn report(&self, reports: &[(Report, Option<String>)]) -> impl Future<Output = Result<(), BrokerError>> + Send;
    fn dead_letter(&self, job: &M, reason: &str) -> impl Future<Output = Result<(), BrokerError>> + Send;
}

/// Decode, then inference: the two halves of embedding a batch (blocking; run on blocking threads).
pub trait EmbedStage: Send + Sync + 'static {
    type Decoded: Send + 'static;
    fn decode(&self, jobs: Vec<EmbedJob>) -> Self::Decoded;
    /// One result per job, in order.
    fn infer(&self, decoded: Self::Decoded) -> (Vec<EmbedResult>, BatchTimings);
}

impl JobMessage for Delivery {
    fn decode(&self) -> Result<EmbedJob, BrokerError> {
        Delivery::decode(self, "embed job")
    }
    fn delivery_count(&self) -> i64 {
        Delivery::delivery_count(self)
    }
    fn queue_lag(&self) -> Duration {
        Delivery::queue_lag(self)
    }
    fn traceparent(&self) -> Option<String> {
        Delivery::traceparent(self)
    }
    fn ack(&self) -> impl Future<Output = Result<(), BrokerError>> + Send {
        Delivery::ack(self)
    }
    fn retry(&self) -> impl Future<Output = Result<(), BrokerError>> + Send {
        Delivery::retry(self)
    }
}

impl JobInbox<Delivery> for broker::Consumer {
    fn stop_consuming(&mut self) -> impl Future<Output = Result<(), BrokerError>> + Send {
        self.cancel()
    }
}

impl Outbox<Delivery> for Broker {
    fn attempt_limit(&self) -> i64 {
        self.config().attempt_limit
    }
    fn report(&self, reports: &[(Report, Option<String>)]) -> impl Future<Output = Result<(), BrokerError>> + Send {
        self.publish_batch(Queue::Embeddings, reports)
    }
    fn dead_letter(&self, job: &Delivery, reason: &str) -> impl Future<Output = Result<(), BrokerError>> + Send {
        Broker::dead_letter(self, Queue::Jobs, job, reason)
    }
}

impl EmbedStage for Embedder {
    type Decoded = DecodedBatch;
    fn decode(&self, jobs: Vec<EmbedJob>) -> DecodedBatch {
        Embedder::decode(self, jobs)
    }
    fn infer(&self, decoded: DecodedBatch) -> (Vec<EmbedResult>, BatchTimings) {
        Embedder::infer(self, decoded)
    }
}

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
    /// Jobs the broker gave back, handed to the writers.
    pub returned: u64,
    pub connections: u64,
}

/// The sessions this worker drops jobs of (paused or cancelled), as heard on the control exchange
/// over one connection. It lives exactly as long as the control subscription that fills it: a
/// Resume sent while this worker was disconnected went to a queue that is gone, so a pause heard
/// before is forgotten with the connection, never kept for good (a session whose embedders kept a
/// stale pause had its republished jobs dropped forever). A pause is best effort; the coordinator
/// publishes again whatever was dropped when the session resumes.
type Controls = HashMap<i64, ControlAction>;

/// Runs until `shutdown` fires; reconnects while the broker is away.
pub async fn run(config: &BrokerConfig, embedder: Arc<Embedder>, options: WorkerOptions, shutdown: CancellationToken) -> Result<WorkerStats, BrokerError> {
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
        tracing::info!(queue = %config.queue_name(Queue::Jobs), prefetch = options.prefetch(), "embedder consuming");
        let broker = Arc::new(broker);
        match consume_rabbit(broker.clone(), &embedder, &options, &shutdown, &mut stats).await {
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
struct Taken<M> {
    delivery: M,
    job: EmbedJob,
    span: tracing::Span,
}

/// A job's delivery, its attempt and its span, kept until the job is settled.
type InFlight<M> = (M, u32, tracing::Span);

/// Consumes on one broker connection until shutdown (`Ok`) or until the connection fails (`Err`).
async fn consume_rabbit(broker: Arc<Broker>, embedder: &Arc<Embedder>, options: &WorkerOptions, shutdown: &CancellationToken, stats: &mut WorkerStats) -> Result<(), BrokerError> {
    let mut jobs = broker.consume(Queue::Jobs, &options.tag, options.prefetch()).await?;
    let mut control = broker.subscribe_control(&format!("{}-control", options.tag)).await?;
    consume(&mut jobs, &mut control, &broker, embedder, options, shutdown, stats).await?;
    jobs.close().await
}

/// The embedder's decisions: batch the jobs, settle what cannot run (poison, dropped session,
/// returned by the broker), report each batch started, embed it, publish every result before acking its job, retry or
/// dead-letter transient failures, follow session controls, and on shutdown stop consuming and
/// finish the batch in hand. `Ok` on shutdown; an error when a source ends or fails.
#[allow(clippy::too_many_arguments)]
pub async fn consume<M: JobMessage, I: JobInbox<M>, C, O: Outbox<M>, E: EmbedStage>(
    jobs: &mut I,
    control: &mut C,
    outbox: &Arc<O>,
    embedder: &Arc<E>,
    options: &WorkerOptions,
    shutdown: &CancellationToken,
    stats: &mut WorkerStats,
) -> Result<(), BrokerError>
where
    C: Source<Item = Result<(String, ControlAction), BrokerError>> + Send,
{
    let mut batcher: Batcher<Result<M, BrokerError>> = Batcher::new(options.batch_size, options.max_wait);
    let mut stage = Inference::start(outbox, embedder, options.overlap_decode);
    let mut controls = Controls::new();
    let lost = |what: &str| BrokerError::Unavailable { url: "the broker".into(), reason: format!("the {what} consumer ended") };
    loop {
        let flushed = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                // stop taking jobs; the batch in hand is finished and acked; prefetched jobs not
                // yet in a batch go back to the queue when the channel closes
                jobs.stop_consuming().await?;
                if let Some((batch, reason)) = batcher.drain() {
                    let batch = take_batch(outbox.as_ref(), batch, &controls, stats).await?;
                    run_isolating(&mut stage, outbox.as_ref(), embedder, batch, reason, stats).await?;
                }
                stage.finish(stats).await?;
                return Ok(());
            }
            c = control.next() => match c {
                Some(Ok((session, action))) => {
                    if let Ok(id) = session.parse::<i64>() {
                        tracing::info!(session = %id, ?action, "session control");
                        match action {
                            ControlAction::Resume => { controls.remove(&id); }
                            other => { controls.insert(id, other); }
                        }
                    }
                    None
                }
                Some(Err(e)) => return Err(e),
                None => return Err(lost("control")),
            },
            b = batcher.next_batch(jobs) => match b {
                Some(flushed) => Some(flushed),
                None => return Err(lost("jobs")),
            },
        };
        if let Some((batch, reason)) = flushed {
            let batch = take_batch(outbox.as_ref(), batch, &controls, stats).await?;
            run_isolating(&mut stage, outbox.as_ref(), embedder, batch, reason, stats).await?;
        }
    }
}

/// The jobs of a batch of deliveries, each looked at by `take`; a lost connection among them ends
/// the batch (its unacked jobs come again).
async fn take_batch<M: JobMessage, O: Outbox<M>>(
    outbox: &O,
    batch: Vec<Result<M, BrokerError>>,
    controls: &Controls,
    stats: &mut WorkerStats,
) -> Result<Vec<Taken<M>>, BrokerError> {
    let mut taken = Vec::with_capacity(batch.len());
    for delivery in batch {
        taken.extend(take(outbox, delivery?, controls, stats).await?);
    }
    Ok(taken)
}

/// Runs a batch, each job that ran before and did not finish (`attempt` above 1) in a batch of its
/// own, after the others: a file that kills the worker then takes down no other job with it again,
/// and a healthy job that shared a batch with it once is not charged for its next crashes.
async fn run_isolating<M: JobMessage, O: Outbox<M>, E: EmbedStage>(
    stage: &mut Inference<M, E::Decoded>,
    outbox: &O,
    embedder: &Arc<E>,
    batch: Vec<Taken<M>>,
    reason: protocol::batch::FlushReason,
    stats: &mut WorkerStats,
) -> Result<(), BrokerError> {
    let (again, fresh): (Vec<Taken<M>>, Vec<Taken<M>>) = batch.into_iter().partition(|t| t.job.attempt > 1);
    if !fresh.is_empty() {
        stage.run(outbox, embedder, fresh, reason, stats).await?;
    }
    for one in again {
        stage.run(outbox, embedder, vec![one], reason, stats).await?;
    }
    Ok(())
}

/// Where a decoded batch goes: inference right here, or (overlap) a task of its own, one batch
/// behind, so the next batch decodes while this one runs the model.
enum Inference<M, D> {
    Inline,
    Overlapped { tx: tokio::sync::mpsc::Sender<(Vec<InFlight<M>>, D)>, task: tokio::task::JoinHandle<Result<WorkerStats, BrokerError>> },
}

impl<M: JobMessage, D: Send + 'static> Inference<M, D> {
    fn start<O: Outbox<M>, E: EmbedStage<Decoded = D>>(outbox: &Arc<O>, embedder: &Arc<E>, overlap: bool) -> Self {
        if !overlap {
            return Inference::Inline;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<InFlight<M>>, D)>(1);
        let (outbox, embedder) = (outbox.clone(), embedder.clone());
        let task = tokio::spawn(async move {
            let mut stats = WorkerStats::default();
            while let Some((deliveries, decoded)) = rx.recv().await {
                finish(outbox.as_ref(), &embedder, deliveries, decoded, &mut stats).await?;
            }
            Ok(stats)
        });
        Inference::Overlapped { tx, task }
    }

    /// Decodes a batch, then infers, publishes and acks it (here, or in the inference task).
    async fn run<O: Outbox<M>, E: EmbedStage<Decoded = D>>(
        &mut self,
        outbox: &O,
        embedder: &Arc<E>,
        batch: Vec<Taken<M>>,
        reason: protocol::batch::FlushReason,
        stats: &mut WorkerStats,
    ) -> Result<(), BrokerError> {
        crate::count_batch(reason, batch.len());
        let reason = reason.as_str();
        // the writers count this run as an attempt of each job before any file is opened: a file
        // that kills the worker is charged for it, the jobs it merely held are not
        let started = RunStarted { v: protocol::VERSION, run: uuid::Uuid::new_v4().as_u64_pair().0 as i64, jobs: batch.iter().map(|t| t.job.job_id).collect() };
        outbox.report(&[(Report::Started(started), None)]).await?;
        let (deliveries, jobs): (Vec<InFlight<M>>, Vec<EmbedJob>) = batch.into_iter().map(|t| ((t.delivery, t.job.attempt, t.span), t.job)).unzip();
        // test hook: a file named `*poison*` kills the embedder that opens it, as a decoder that
        // crashes the process would
        fail::fail_point!("embedder.poison", jobs.iter().any(|j| j.path.contains("poison")), |_| -> Result<(), BrokerError> {
            eprintln!("failpoint embedder.poison reached: aborting");
            std::process::abort()
        });
        let e = embedder.clone();
        let span = tracing::info_span!("decode_batch", images = jobs.len(), reason);
        let decoded = tokio::task::spawn_blocking(move || span.in_scope(|| e.decode(jobs))).await.expect("decoding does not panic");
        match self {
            Inference::Inline => finish(outbox, embedder, deliveries, decoded, stats).await,
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
            stats.returned += s.returned;
        }
        Ok(())
    }
}

/// Looks at one delivery: a job is kept for the batch; a poison message, a job of a dropped session
/// or one the broker gave back is settled here (`None`).
async fn take<M: JobMessage, O: Outbox<M>>(outbox: &O, delivery: M, controls: &Controls, stats: &mut WorkerStats) -> Result<Option<Taken<M>>, BrokerError> {
    METRICS.jobs_consumed.inc();
    METRICS.queue_lag_seconds.observe(delivery.queue_lag().as_secs_f64());
    let job: EmbedJob = match delivery.decode() {
        Ok(job) if job.v == protocol::VERSION => job,
        Ok(job) => {
            return poison(outbox, &delivery, &format!("embed job version {} is not the version this embedder reads ({})", job.v, protocol::VERSION), stats).await.map(|_| None);
        }
        Err(e) => return poison(outbox, &delivery, &e.to_string(), stats).await.map(|_| None),
    };
    let dropped = controls.get(&job.session_id).copied();
    if let Some(action) = dropped {
        tracing::debug!(job = %job.job_id, ?action, "dropping a job of a stopped session");
        delivery.ack().await?;
        METRICS.jobs_acked.with_label_values(&["dropped"]).inc();
        stats.dropped += 1;
        return Ok(None);
    }
    if delivery.delivery_count() > 0 {
        // the broker gave it back: its holder died (running it or not), or it was given back to be
        // retried. Only the catalog knows how many runs of it started: the writer decides.
        tracing::debug!(job = %job.job_id, deliveries = delivery.delivery_count(), "a returned job: handing it to the writers");
        outbox.report(&[(Report::Returned(job), delivery.traceparent())]).await?;
        delivery.ack().await?;
        METRICS.jobs_acked.with_label_values(&["returned"]).inc();
        stats.returned += 1;
        return Ok(None);
    }
    let span = tracing::info_span!(parent: None, "embed_job", job_id = %job.job_id, asset_id = %job.asset_id, session_id = %job.session_id);
    broker::trace::set_parent(&span, delivery.traceparent().as_deref());
    Ok(Some(Taken { delivery, job, span }))
}

async fn poison<M: JobMessage, O: Outbox<M>>(outbox: &O, delivery: &M, reason: &str, stats: &mut WorkerStats) -> Result<(), BrokerError> {
    tracing::warn!(reason, "dead-lettering a message that is not a job");
    outbox.dead_letter(delivery, &format!("malformed: {reason}")).await?;
    METRICS.jobs_failed.with_label_values(&["malformed"]).inc();
    METRICS.jobs_acked.with_label_values(&["dead_lettered"]).inc();
    stats.dead_lettered += 1;
    Ok(())
}

/// Inference, then the results published (confirmed), then the jobs acked or given back.
#[tracing::instrument(name = "infer_batch", skip_all, fields(images = deliveries.len()))]
async fn finish<M: JobMessage, O: Outbox<M>, E: EmbedStage>(
    outbox: &O,
    embedder: &Arc<E>,
    deliveries: Vec<InFlight<M>>,
    decoded: E::Decoded,
    stats: &mut WorkerStats,
) -> Result<(), BrokerError> {
    let e = embedder.clone();
    let (results, timings) = tokio::task::spawn_blocking(move || e.infer(decoded)).await.expect("inference does not panic");
    METRICS.stage_seconds.with_label_values(&["decode"]).observe(timings.decode_ms / 1e3);
    METRICS.stage_seconds.with_label_values(&["inference"]).observe(timings.inference_ms / 1e3);
    // test hook: the kill -9 test stops an embedder here, mid-batch, before anything is published
    fail::fail_point!("embedder.after_inference", |_| -> Result<(), BrokerError> { protocol::hang_at_failpoint("embedder.after_inference") });

    let limit = outbox.attempt_limit();
    let mut publish = Vec::new();
    let mut settle = Vec::new();
    for (result, (delivery, attempt, span)) in results.into_iter().zip(deliveries) {
        let transient = matches!(&result.outcome, Outcome::Failed { kind: FailureKind::Transient, .. });
        let last_try = attempt as i64 >= limit;
        let action = match (&result.outcome, transient, last_try) {
            (_, true, false) => Settle::Retry,
            (Outcome::Failed { reason, message, .. }, true, true) => Settle::DeadLetter(format!("{reason}: {message}")),
            (Outcome::Failed { reason, .. }, ..) => Settle::Failed(reason.clone()),
            (Outcome::Embedded { .. }, ..) => Settle::Embedded,
        };
        if !matches!(action, Settle::Retry) {
            // the result carries the job's span: the writer's span continues the same trace
            publish.push((Report::Result(result), broker::trace::traceparent_of(&span).or_else(|| delivery.traceparent())));
        }
        settle.push((delivery, attempt, action, span));
    }
    let t = Instant::now();
    outbox.report(&publish).await?;
    METRICS.stage_seconds.with_label_values(&["publish"]).observe(t.elapsed().as_secs_f64());
    // each job's span ends once the job is settled
    for (delivery, attempt, action, _span) in settle {
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
                // back to the queue after a pause that doubles with each attempt (an I/O hiccup, a
                // GPU out of memory, need time, not five instant tries); the worker goes on
                // meanwhile. Returned, it goes through a writer, which publishes it again.
                let wait = retry_delay(attempt.saturating_sub(1) as i64);
                METRICS.jobs_retried.inc();
                stats.retried += 1;
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Err(e) = delivery.retry().await {
                        tracing::warn!(error = %e, "could not give a job back; the broker returns it when the connection closes");
                    }
                });
            }
            Settle::DeadLetter(reason) => {
                outbox.dead_letter(&delivery, &reason).await?;
                METRICS.jobs_failed.with_label_values(&[reason.split(':').next().unwrap_or("transient")]).inc();
                METRICS.jobs_acked.with_label_values(&["dead_lettered"]).inc();
                stats.dead_lettered += 1;
            }
        }
    }
    tracing::debug!(images = timings.images, failed = timings.failed, decode_ms = timings.decode_ms, inference_ms = timings.inference_ms, "batch done");
    Ok(())
}

/// How long a job that failed for a transient reason waits before it goes back to the queue:
/// 200 ms after its first attempt, doubling with each one, at most 10 s.
pub fn retry_delay(earlier_attempts: i64) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << earlier_attempts.clamp(0, 6))).min(Duration::from_secs(10))
}

enum Settle {
    Embedded,
    Failed(String),
    Retry,
    DeadLetter(String),
}

/// The embedder's decisions, driven with in-memory fakes of the jobs queue, the control exchange,
/// the outbox and the model: no broker, no ONNX Runtime, no process. Tests wait on conditions the
/// fakes signal, never on time.
#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use tokio::sync::{Notify, mpsc};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        Acked(u32),
        Retried(u32),
        DeadLettered(u32, String),
        /// A result published: the job's path and its outcome (`embedded` or `failed:<reason>`).
        Published(String, String),
        /// A batch of this many jobs reported started.
        Started(usize),
        /// A job handed to the writers as returned (its path).
        Returned(String),
        StoppedConsuming,
    }

    /// Everything that happened, in order, with a signal on each change.
    #[derive(Default)]
    struct Log {
        events: Mutex<Vec<Event>>,
        changed: Notify,
    }

    impl Log {
        fn push(&self, e: Event) {
            self.events.lock().unwrap().push(e);
            self.changed.notify_waiters();
        }
        fn events(&self) -> Vec<Event> {
            self.events.lock().unwrap().clone()
        }
        async fn until(&self, done: impl Fn(&[Event]) -> bool) {
            loop {
                let changed = self.changed.notified();
                if done(&self.events()) {
                    return;
                }
                changed.await;
            }
        }
    }

    struct FakeJob {
        id: u32,
        body: Result<EmbedJob, String>,
        deliveries: i64,
        log: Arc<Log>,
    }

    impl JobMessage for FakeJob {
        fn decode(&self) -> Result<EmbedJob, BrokerError> {
            self.body.clone().map_err(|reason| BrokerError::Malformed { what: "embed job", reason })
        }
        fn delivery_count(&self) -> i64 {
            self.deliveries
        }
        fn queue_lag(&self) -> Duration {
            Duration::ZERO
        }
        fn traceparent(&self) -> Option<String> {
            None
        }
        async fn ack(&self) -> Result<(), BrokerError> {
            self.log.push(Event::Acked(self.id));
            Ok(())
        }
        async fn retry(&self) -> Result<(), BrokerError> {
            self.log.push(Event::Retried(self.id));
            Ok(())
        }
    }

    struct FakeInbox {
        rx: mpsc::Receiver<Result<FakeJob, BrokerError>>,
        log: Arc<Log>,
        taken: Arc<AtomicUsize>,
    }

    impl Source for FakeInbox {
        type Item = Result<FakeJob, BrokerError>;
        /// Counts the calls as they start: once the n+1th waits, n items were handed out.
        async fn next(&mut self) -> Option<Self::Item> {
            self.taken.fetch_add(1, Ordering::SeqCst);
            self.log.changed.notify_waiters();
            self.rx.recv().await
        }
    }

    impl JobInbox<FakeJob> for FakeInbox {
        async fn stop_consuming(&mut self) -> Result<(), BrokerError> {
            self.log.push(Event::StoppedConsuming);
            Ok(())
        }
    }

    struct FakeOutbox {
        limit: i64,
        log: Arc<Log>,
    }

    impl Outbox<FakeJob> for FakeOutbox {
        fn attempt_limit(&self) -> i64 {
            self.limit
        }
        async fn report(&self, reports: &[(Report, Option<String>)]) -> Result<(), BrokerError> {
            for (r, _) in reports {
                self.log.push(match r {
                    Report::Result(r) => {
                        let outcome = match &r.outcome {
                            Outcome::Embedded { .. } => "embedded".to_owned(),
                            Outcome::Failed { reason, .. } => format!("failed:{reason}"),
                        };
                        Event::Published(r.path.clone(), outcome)
                    }
                    Report::Started(s) => Event::Started(s.jobs.len()),
                    Report::Returned(job) => Event::Returned(job.path.clone()),
                });
            }
            Ok(())
        }
        async fn dead_letter(&self, job: &FakeJob, reason: &str) -> Result<(), BrokerError> {
            self.log.push(Event::DeadLettered(job.id, reason.to_owned()));
            Ok(())
        }
    }

    /// A model by file name: `io` fails transiently, `corrupt` for good, anything else embeds.
    #[derive(Default)]
    struct FakeModel {
        inferred: AtomicUsize,
    }

    impl EmbedStage for FakeModel {
        type Decoded = Vec<EmbedJob>;
        fn decode(&self, jobs: Vec<EmbedJob>) -> Vec<EmbedJob> {
            jobs
        }
        fn infer(&self, jobs: Vec<EmbedJob>) -> (Vec<EmbedResult>, BatchTimings) {
            self.inferred.fetch_add(jobs.len(), Ordering::SeqCst);
            let results = jobs
                .iter()
                .map(|job| {
                    let outcome = if job.path.ends_with("io") {
                        Outcome::Failed { reason: "io".into(), message: "cannot read image".into(), kind: FailureKind::Transient }
                    } else if job.path.ends_with("corrupt") {
                        Outcome::Failed { reason: "corrupt".into(), message: "bad huffman code".into(), kind: FailureKind::Permanent }
                    } else {
                        Outcome::Embedded { vector: protocol::vector_to_bytes(&[1.0]), checksum: "c".into() }
                    };
                    failed_result(job, "x", "y").with_outcome(outcome)
                })
                .collect();
            (results, BatchTimings { images: jobs.len(), ..Default::default() })
        }
    }

    /// A result for `job` (the fake model sets its outcome).
    fn failed_result(job: &EmbedJob, reason: &str, message: &str) -> EmbedResult {
        EmbedResult::for_job(
            job,
            Outcome::Failed { reason: reason.into(), message: message.into(), kind: FailureKind::Transient },
            protocol::EvidenceInfo { model_name: String::new(), model_version: String::new(), device: String::new(), metadata: serde_json::json!(null), processing_time_ms: 0 },
        )
    }

    trait WithOutcome {
        fn with_outcome(self, outcome: Outcome) -> Self;
    }

    impl WithOutcome for EmbedResult {
        fn with_outcome(mut self, outcome: Outcome) -> Self {
            self.outcome = outcome;
            self
        }
    }

    fn job(session: i64, path: &str) -> EmbedJob {
        EmbedJob {
            v: protocol::VERSION,
            job_id: protocol::next_test_id(),
            asset_id: protocol::next_test_id(),
            session_id: session,
            path: path.into(),
            created_at: Default::default(),
            category_id: None,
            attempt: 1,
        }
    }

    struct Harness {
        jobs: mpsc::Sender<Result<FakeJob, BrokerError>>,
        controls: mpsc::Sender<Result<(String, ControlAction), BrokerError>>,
        log: Arc<Log>,
        taken: Arc<AtomicUsize>,
        model: Arc<FakeModel>,
        shutdown: CancellationToken,
    }

    impl Harness {
        async fn job(&self, id: u32, body: Result<EmbedJob, String>, deliveries: i64) {
            self.jobs.send(Ok(FakeJob { id, body, deliveries, log: self.log.clone() })).await.unwrap();
        }
    }

    /// Starts `consume` on fakes (delivery limit 5) in a task; the harness feeds it.
    type Running = tokio::task::JoinHandle<(Result<(), BrokerError>, WorkerStats)>;

    fn start(batch_size: usize, max_wait: Duration) -> (Harness, Running) {
        let (jobs_tx, jobs_rx) = mpsc::channel(64);
        let (controls_tx, mut controls_rx) = mpsc::channel(64);
        let log = Arc::new(Log::default());
        let taken = Arc::new(AtomicUsize::new(0));
        let model = Arc::new(FakeModel::default());
        let shutdown = CancellationToken::new();
        let mut inbox = FakeInbox { rx: jobs_rx, log: log.clone(), taken: taken.clone() };
        let outbox = Arc::new(FakeOutbox { limit: 5, log: log.clone() });
        let options = WorkerOptions { batch_size, max_wait, overlap_decode: false, tag: "test".into() };
        let (m, stop) = (model.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            let mut stats = WorkerStats::default();
            let done = consume(&mut inbox, &mut controls_rx, &outbox, &m, &options, &stop, &mut stats).await;
            (done, stats)
        });
        (Harness { jobs: jobs_tx, controls: controls_tx, log, taken, model, shutdown }, task)
    }

    #[tokio::test]
    async fn every_result_is_published_before_its_job_is_acked_and_poison_is_dead_lettered() {
        let (h, task) = start(3, Duration::from_secs(3600));
        let s = protocol::next_test_id();
        h.job(1, Ok(job(s, "1-ok")), 0).await;
        h.job(2, Ok(job(s, "2-corrupt")), 0).await;
        h.job(3, Err("expected value at line 1 column 1".into()), 0).await;
        h.log.until(|e| e.contains(&Event::Acked(2))).await;
        assert_eq!(
            h.log.events(),
            [
                Event::DeadLettered(3, "malformed: message is not a valid embed job: expected value at line 1 column 1".into()),
                Event::Started(2),
                Event::Published("1-ok".into(), "embedded".into()),
                Event::Published("2-corrupt".into(), "failed:corrupt".into()),
                Event::Acked(1),
                Event::Acked(2),
            ]
        );
        h.shutdown.cancel();
        let (done, stats) = task.await.unwrap();
        assert!(done.is_ok());
        assert_eq!((stats.embedded, stats.failed, stats.dead_lettered), (1, 1, 1));
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_then_dead_lettered_on_its_last_attempt() {
        let (h, task) = start(2, Duration::from_secs(3600));
        let s = protocol::next_test_id();
        h.job(1, Ok(job(s, "1-io")), 0).await;
        h.job(2, Ok(EmbedJob { attempt: 5, ..job(s, "2-io") }), 0).await;
        h.log.until(|e| !e.is_empty()).await;
        // job 1's pause starts after its run started
        let ran = std::time::Instant::now();
        h.log.until(|e| e.len() >= 5).await;
        assert!(ran.elapsed() >= retry_delay(0), "job 1 went back only after its pause");
        assert_eq!(
            h.log.events(),
            [Event::Started(1), Event::Started(1), Event::Published("2-io".into(), "failed:io".into()), Event::DeadLettered(2, "io: cannot read image".into()), Event::Retried(1)],
            "job 2 (run alone: it ran before), on its fifth attempt, is recorded failed and dead-lettered; job 1 goes back for another try after a pause"
        );
        h.shutdown.cancel();
        assert_eq!(task.await.unwrap().1.retried, 1);
    }

    /// Jobs that ran before and did not finish run one per batch, after the fresh ones: a file that
    /// kills the worker takes no healthy job down with it a second time.
    #[tokio::test]
    async fn jobs_that_ran_before_run_alone() {
        let (h, task) = start(4, Duration::from_secs(3600));
        let s = protocol::next_test_id();
        h.job(1, Ok(EmbedJob { attempt: 2, ..job(s, "1-ok") }), 0).await;
        h.job(2, Ok(job(s, "2-ok")), 0).await;
        h.job(3, Ok(EmbedJob { attempt: 3, ..job(s, "3-ok") }), 0).await;
        h.job(4, Ok(job(s, "4-ok")), 0).await;
        h.log.until(|e| e.iter().filter(|e| matches!(e, Event::Acked(_))).count() == 4).await;
        let started: Vec<Event> = h.log.events().into_iter().filter(|e| matches!(e, Event::Started(_))).collect();
        assert_eq!(started, [Event::Started(2), Event::Started(1), Event::Started(1)], "the fresh two together, then each of the others alone");
        h.shutdown.cancel();
        assert_eq!(task.await.unwrap().1.embedded, 4);
    }

    #[test]
    fn transient_retries_wait_longer_each_time() {
        let waits: Vec<u64> = (0..9).map(|n| retry_delay(n).as_millis() as u64).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]);
    }

    #[tokio::test]
    async fn a_job_the_broker_gave_back_goes_to_the_writers_without_running() {
        let (h, task) = start(1, Duration::from_secs(3600));
        let s = protocol::next_test_id();
        // given back after its holder died: whether that holder ran it, only the catalog knows
        h.job(1, Ok(job(s, "1-ok")), 1).await;
        h.job(2, Ok(job(s, "2-ok")), 0).await;
        h.log.until(|e| e.contains(&Event::Acked(2))).await;
        assert_eq!(
            h.log.events(),
            [Event::Returned("1-ok".into()), Event::Acked(1), Event::Started(1), Event::Published("2-ok".into(), "embedded".into()), Event::Acked(2)],
            "handed over (confirmed) before its ack, and not run here"
        );
        assert_eq!(h.model.inferred.load(Ordering::SeqCst), 1, "only the fresh job ran");
        h.shutdown.cancel();
        let (done, stats) = task.await.unwrap();
        done.unwrap();
        assert_eq!((stats.returned, stats.embedded), (1, 1));
    }

    #[tokio::test]
    async fn a_paused_session_drops_its_jobs_until_it_is_resumed() {
        let (h, task) = start(1, Duration::from_secs(3600));
        let (paused, other) = (protocol::next_test_id(), protocol::next_test_id());
        // a control ready together with a job is always taken first
        h.controls.send(Ok((paused.to_string(), ControlAction::Pause))).await.unwrap();
        h.job(1, Ok(job(paused, "1-ok")), 0).await;
        h.log.until(|e| e.contains(&Event::Acked(1))).await;
        h.job(2, Ok(job(other, "2-ok")), 0).await;
        h.log.until(|e| e.contains(&Event::Acked(2))).await;
        h.controls.send(Ok((paused.to_string(), ControlAction::Resume))).await.unwrap();
        h.job(3, Ok(job(paused, "3-ok")), 0).await;
        h.log.until(|e| e.contains(&Event::Acked(3))).await;
        assert_eq!(
            h.log.events(),
            [
                Event::Acked(1),
                Event::Started(1),
                Event::Published("2-ok".into(), "embedded".into()),
                Event::Acked(2),
                Event::Started(1),
                Event::Published("3-ok".into(), "embedded".into()),
                Event::Acked(3),
            ],
            "job 1 is dropped without work: acked, no result"
        );
        h.shutdown.cancel();
        assert_eq!(task.await.unwrap().1.dropped, 1);
    }

    /// A session paused, then resumed while this worker was disconnected (the Resume went to a
    /// control queue that is gone with the connection): on the new connection its jobs are embedded,
    /// not dropped for good.
    #[tokio::test]
    async fn a_resume_missed_while_disconnected_does_not_leave_the_session_paused() {
        let log = Arc::new(Log::default());
        let (model, outbox) = (Arc::new(FakeModel::default()), Arc::new(FakeOutbox { limit: 5, log: log.clone() }));
        let options = WorkerOptions { batch_size: 1, max_wait: Duration::from_secs(3600), overlap_decode: false, tag: "test".into() };
        let (shutdown, mut stats) = (CancellationToken::new(), WorkerStats::default());
        let session = protocol::next_test_id();
        let fake = |id: u32, path: &str| Ok(FakeJob { id, body: Ok(job(session, path)), deliveries: 0, log: log.clone() });

        // connection 1: the pause is heard and a job of the session dropped; then the broker goes
        let (jobs_tx, jobs_rx) = mpsc::channel(8);
        let (controls_tx, mut controls_rx) = mpsc::channel(8);
        let mut inbox = FakeInbox { rx: jobs_rx, log: log.clone(), taken: Arc::new(AtomicUsize::new(0)) };
        controls_tx.send(Ok((session.to_string(), ControlAction::Pause))).await.unwrap();
        jobs_tx.send(fake(1, "1-ok")).await.unwrap();
        drop(jobs_tx);
        let lost = consume(&mut inbox, &mut controls_rx, &outbox, &model, &options, &shutdown, &mut stats).await;
        assert!(lost.is_err(), "the connection ended");
        assert_eq!(log.events(), [Event::Acked(1)], "dropped while paused");

        // connection 2: the Resume was sent meanwhile, to the queue that went with connection 1
        let (jobs_tx, jobs_rx) = mpsc::channel(8);
        let (_controls_tx, mut controls_rx) = mpsc::channel::<Result<(String, ControlAction), BrokerError>>(8);
        let mut inbox = FakeInbox { rx: jobs_rx, log: log.clone(), taken: Arc::new(AtomicUsize::new(0)) };
        jobs_tx.send(fake(2, "2-ok")).await.unwrap();
        let run = tokio::spawn({
            let (outbox, model, shutdown) = (outbox.clone(), model.clone(), shutdown.clone());
            async move { consume(&mut inbox, &mut controls_rx, &outbox, &model, &options, &shutdown, &mut stats).await }
        });
        log.until(|e| e.contains(&Event::Acked(2))).await;
        assert_eq!(log.events()[1..], [Event::Started(1), Event::Published("2-ok".into(), "embedded".into()), Event::Acked(2)], "embedded on the new connection");
        shutdown.cancel();
        run.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_finishes_the_batch_in_hand() {
        let (h, task) = start(10, Duration::from_secs(3600));
        let s = protocol::next_test_id();
        h.job(1, Ok(job(s, "1-ok")), 0).await;
        h.job(2, Ok(job(s, "2-ok")), 0).await;
        // both taken into a batch that would wait an hour for more: the third call is waiting
        let taken = h.taken.clone();
        h.log.until(|_| taken.load(Ordering::SeqCst) >= 3).await;
        h.shutdown.cancel();
        let (done, stats) = task.await.unwrap();
        assert!(done.is_ok());
        assert_eq!(
            h.log.events(),
            [
                Event::StoppedConsuming,
                Event::Started(2),
                Event::Published("1-ok".into(), "embedded".into()),
                Event::Published("2-ok".into(), "embedded".into()),
                Event::Acked(1),
                Event::Acked(2),
            ]
        );
        assert_eq!(stats.embedded, 2);
    }
}
