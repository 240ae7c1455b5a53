//! The writer as a RabbitMQ worker (`imgsearch writer`): consumes embedding results in batches,
//! writes each batch (vectors upserted and durable, then one catalog transaction; see the crate
//! docs for why a replay changes nothing) and acks the batch only after both.
//!
//! The results queue carries three reports (`protocol::Report`), settled in this order per batch:
//! - `started` (an embedder is about to run these jobs): one attempt of each counted in the
//!   catalog, once per run;
//! - `returned` (the broker gave a job back to an embedder: its holder died, or it failed for a
//!   transient reason): published again with its attempt, or, once the runs of it that started
//!   reached the attempt limit, failed as `crashed` and moved to the jobs' dead-letter queue. The
//!   count is the catalog's, of runs that started: a job is never charged for a worker that died
//!   holding it without running it, as RabbitMQ's own count would;
//! - `result`: written as below.
//!
//! - A store that is unreachable (Qdrant or Postgres away) holds the batch: the write is tried
//!   again with backoff, the messages stay unacked, nothing is dead-lettered for it.
//! - Another write error (a vector the collection refuses) fails those jobs with the reason and
//!   dead-letters their results, so the session ends and says why; if even that cannot be
//!   recorded, the batch is given back.
//! - A message that is not a report this version reads is dead-lettered with its reason.
//! - A lost broker connection: connect again with backoff; the unacked results come again.
//! - SIGTERM (`shutdown`): stop consuming, write and ack the batch in hand, close.
//!
//! Those decisions are `consume`'s, written against three small seams: [`Message`] (a delivery to
//! ack or give back), [`Inbox`] (the queue and its dead-letter exchange) and [`Store`] (where a
//! batch is written). RabbitMQ and the real stores implement them here; the unit tests below drive
//! `consume` with in-memory fakes, without a broker or a process.

use std::{future::Future, sync::Arc, time::Duration};

use backon::Retryable;
use broker::{Broker, BrokerConfig, BrokerError, Consumer, Delivery, Queue};
use catalog::JobStatus;
use protocol::{
    EmbedJob, EmbedResult, FailureKind, Outcome, Report,
    batch::{Batcher, Source},
};
use tokio_util::sync::CancellationToken;

use crate::{WriteError, WriteReport, Writer, metrics::METRICS};

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
    /// Returned jobs published again.
    pub requeued: u64,
    /// Returned jobs failed because their runs reached the limit.
    pub crashed: u64,
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
        match consume_rabbit(&broker, &writer, &options, &shutdown, &mut stats).await {
            Ok(()) => {
                let _ = broker.close().await;
                return Ok(stats);
            }
            Err(WorkerError::Broker(e)) if e.is_retryable() => tracing::warn!(error = %e, "lost the broker; connecting again"),
            Err(e) => return Err(e),
        }
    }
}

/// A report message as the writer settles it.
pub trait Message: Send + Sync {
    fn decode(&self) -> Result<Report, BrokerError>;
    fn queue_lag(&self) -> Duration;
    fn traceparent(&self) -> Option<String>;
    fn ack(&self) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// Back to the queue, for this or another writer.
    fn retry(&self) -> impl Future<Output = Result<(), BrokerError>> + Send;
}

/// The queue reports come from (a `Source` of messages; `None` when the connection is gone), where
/// a message that can never be written goes, and where returned jobs go again.
pub trait Inbox<M: Message>: Source<Item = Result<M, BrokerError>> + Send {
    /// Stop taking messages (shutdown); those prefetched and not yet taken go back to the queue.
    fn stop_consuming(&mut self) -> impl Future<Output = Result<(), BrokerError>> + Send;
    fn dead_letter(&self, message: &M, reason: &str) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// Runs of a job that may start without finishing before it is failed.
    fn attempt_limit(&self) -> i64;
    /// Publishes a returned job again (confirmed).
    fn requeue(&self, job: &EmbedJob, traceparent: Option<&str>) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// Puts a job given up into the jobs' dead-letter queue with its reason (confirmed).
    fn give_up(&self, job: &EmbedJob, traceparent: Option<&str>, reason: &str) -> impl Future<Output = Result<(), BrokerError>> + Send;
}

/// Where a batch of results is written: vectors, then the catalog (see the crate docs); and where
/// the runs of jobs are counted.
pub trait Store: Sync {
    fn write_batch(&self, results: &[EmbedResult]) -> impl Future<Output = Result<WriteReport, WriteError>> + Send;
    /// Counts a started run of these jobs (`catalog::Catalog::record_started`).
    fn record_started(&self, run: i64, jobs: &[i64]) -> impl Future<Output = Result<u64, WriteError>> + Send;
    /// Each job's status and its runs that started.
    fn job_attempts(&self, jobs: &[i64]) -> impl Future<Output = Result<Vec<(i64, JobStatus, i32)>, WriteError>> + Send;
}

impl Message for Delivery {
    fn decode(&self) -> Result<Report, BrokerError> {
        Delivery::decode(self, "report")
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

/// The embeddings queue on one broker connection.
struct RabbitInbox<'a> {
    broker: &'a Broker,
    consumer: Consumer,
}

impl Source for RabbitInbox<'_> {
    type Item = Result<Delivery, BrokerError>;
    fn next(&mut self) -> impl Future<Output = Option<Self::Item>> + Send {
        self.consumer.next()
    }
}

impl Inbox<Delivery> for RabbitInbox<'_> {
    fn stop_consuming(&mut self) -> impl Future<Output = Result<(), BrokerError>> + Send {
        self.consumer.cancel()
    }
    fn dead_letter(&self, message: &Delivery, reason: &str) -> impl Future<Output = Result<(), BrokerError>> + Send {
        self.broker.dead_letter(Queue::Embeddings, message, reason)
    }
    fn attempt_limit(&self) -> i64 {
        self.broker.config().attempt_limit
    }
    fn requeue(&self, job: &EmbedJob, traceparent: Option<&str>) -> impl Future<Output = Result<(), BrokerError>> + Send {
        self.broker.publish(Queue::Jobs, job, traceparent)
    }
    fn give_up(&self, job: &EmbedJob, traceparent: Option<&str>, reason: &str) -> impl Future<Output = Result<(), BrokerError>> + Send {
        self.broker.dead_letter_message(Queue::Jobs, job, traceparent, reason)
    }
}

impl Store for Writer {
    fn write_batch(&self, results: &[EmbedResult]) -> impl Future<Output = Result<WriteReport, WriteError>> + Send {
        Writer::write_batch(self, results)
    }
    async fn record_started(&self, run: i64, jobs: &[i64]) -> Result<u64, WriteError> {
        Ok(self.catalog.record_started(run, jobs).await?)
    }
    async fn job_attempts(&self, jobs: &[i64]) -> Result<Vec<(i64, JobStatus, i32)>, WriteError> {
        Ok(self.catalog.job_attempts(jobs).await?)
    }
}

/// Consumes on one connection until shutdown (`Ok`, after the batch in hand) or until it fails.
async fn consume_rabbit(broker: &Broker, writer: &Writer, options: &WorkerOptions, shutdown: &CancellationToken, stats: &mut WorkerStats) -> Result<(), WorkerError> {
    let consumer = broker.consume(Queue::Embeddings, &options.tag, options.prefetch()).await?;
    let mut inbox = RabbitInbox { broker, consumer };
    consume(&mut inbox, writer, options, shutdown, stats).await?;
    inbox.consumer.close().await?;
    Ok(())
}

/// The writer's decisions: batch, decode (dead-letter what is not a result), write (holding the
/// batch while a store is away), then ack, or give the batch back; on shutdown, stop consuming and
/// write the batch in hand. `Ok` on shutdown; an error when the inbox ends or fails.
pub async fn consume<M: Message, I: Inbox<M>, S: Store>(
    inbox: &mut I,
    store: &S,
    options: &WorkerOptions,
    shutdown: &CancellationToken,
    stats: &mut WorkerStats,
) -> Result<(), WorkerError> {
    let mut batcher: Batcher<Result<M, BrokerError>> = Batcher::new(options.batch_size, options.max_wait);
    // (each result's span, a child of the embedder's, is made when its batch is written)
    loop {
        let flushed = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                // the batch in hand is written and acked; prefetched results not yet in it go back
                // to the queue when the channel closes
                inbox.stop_consuming().await?;
                if let Some((batch, reason)) = batcher.drain() {
                    settle(inbox, store, batch, reason.as_str(), shutdown, stats).await?;
                }
                return Ok(());
            }
            b = batcher.next_batch(inbox) => b,
        };
        let Some((batch, reason)) = flushed else {
            return Err(BrokerError::Unavailable { url: "the embeddings queue".into(), reason: "the consumer ended".into() }.into());
        };
        settle(inbox, store, batch, reason.as_str(), shutdown, stats).await?;
    }
}

/// A batch of reports, by kind.
struct Decoded<M> {
    started: Vec<(M, protocol::RunStarted)>,
    returned: Vec<(M, EmbedJob)>,
    results: Vec<(M, EmbedResult)>,
}

/// Settles a batch: decodes it (a lost connection among it ends the batch: its unacked messages
/// come again; a message that is not a report this version reads is dead-lettered), counts the
/// started runs, decides each returned job, writes the results, and acks each message once its
/// effect is durable. `Ok` also when a shutdown came while a store was away (nothing acked then).
async fn settle<M: Message, I: Inbox<M>, S: Store>(
    inbox: &I,
    store: &S,
    batch: Vec<Result<M, BrokerError>>,
    reason: &str,
    shutdown: &CancellationToken,
    stats: &mut WorkerStats,
) -> Result<(), WorkerError> {
    let mut d = Decoded { started: Vec::new(), returned: Vec::new(), results: Vec::new() };
    for delivery in batch {
        let delivery = delivery?;
        METRICS.results_consumed.inc();
        METRICS.queue_lag_seconds.observe(delivery.queue_lag().as_secs_f64());
        match delivery.decode() {
            Ok(r) if r.v() != protocol::VERSION => {
                dead_letter(inbox, &delivery, &format!("malformed: report version {} is not the version this writer reads ({})", r.v(), protocol::VERSION), stats).await?
            }
            Ok(Report::Started(s)) => d.started.push((delivery, s)),
            Ok(Report::Returned(job)) => d.returned.push((delivery, job)),
            Ok(Report::Result(r)) => d.results.push((delivery, r)),
            Err(e) => dead_letter(inbox, &delivery, &format!("malformed: {e}"), stats).await?,
        }
    }
    // runs first: a job returned in the same batch is judged with this batch's runs counted
    for (delivery, started) in &d.started {
        let Some(counted) = available(shutdown, || store.record_started(started.run, &started.jobs)).await else { return Ok(()) };
        match counted {
            Ok(_) => delivery.ack().await?,
            Err(e) => {
                tracing::error!(error = %e, "cannot count a started run; giving it back");
                delivery.retry().await?;
            }
        }
    }
    let mut results = d.results;
    let mut given_up = Vec::new();
    if !d.returned.is_empty() {
        let ids: Vec<i64> = d.returned.iter().map(|(_, j)| j.job_id).collect();
        let Some(attempts) = available(shutdown, || store.job_attempts(&ids)).await else { return Ok(()) };
        let attempts: std::collections::HashMap<i64, (JobStatus, i32)> = match attempts {
            Ok(a) => a.into_iter().map(|(id, s, n)| (id, (s, n))).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the attempts of returned jobs; giving them back");
                for (delivery, _) in &d.returned {
                    delivery.retry().await?;
                }
                return write(inbox, store, results, reason, shutdown, stats).await;
            }
        };
        let limit = inbox.attempt_limit();
        for (delivery, job) in d.returned {
            match attempts.get(&job.job_id) {
                // finished, cancelled or deleted meanwhile: nothing to run
                None | Some((JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled, _)) => {
                    delivery.ack().await?;
                }
                Some((_, runs)) if *runs as i64 >= limit => {
                    let message = format!("{runs} runs of this job started and none finished: a worker may crash on this file");
                    tracing::warn!(job = job.job_id, path = %job.path, runs, "giving up a job that no worker finished");
                    inbox.give_up(&job, delivery.traceparent().as_deref(), &format!("crashed: {message}")).await?;
                    let failed = EmbedResult::for_job(
                        &job,
                        Outcome::Failed { reason: "crashed".into(), message, kind: FailureKind::Permanent },
                        protocol::EvidenceInfo {
                            model_name: String::new(),
                            model_version: String::new(),
                            device: String::new(),
                            metadata: serde_json::Value::Null,
                            processing_time_ms: 0,
                        },
                    );
                    stats.crashed += 1;
                    METRICS.jobs_written.with_label_values(&["crashed"]).inc();
                    given_up.push(job.job_id);
                    // recorded failed with the results, acked only after that commit
                    results.push((delivery, failed));
                }
                Some((_, runs)) => {
                    let again = EmbedJob { v: protocol::VERSION, attempt: *runs as u32 + 1, ..job };
                    inbox.requeue(&again, delivery.traceparent().as_deref()).await?;
                    delivery.ack().await?;
                    stats.requeued += 1;
                    METRICS.jobs_written.with_label_values(&["requeued"]).inc();
                }
            }
        }
    }
    write(inbox, store, results, reason, shutdown, stats).await
}

/// Runs `f` once; while it says a store is unavailable, again with backoff. `None` when `shutdown`
/// fires while waiting (the first try always runs: a SIGTERM drain writes the batch in hand).
async fn available<T, F, Fut>(shutdown: &CancellationToken, f: F) -> Option<Result<T, WriteError>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, WriteError>>,
{
    match f().await {
        Err(e) if e.is_unavailable() => {
            tracing::warn!(error = %e, "a store is unavailable; holding the batch");
            METRICS.store_retries.inc();
            let retried = f.retry(broker::reconnect_backoff()).when(WriteError::is_unavailable).notify(|e, wait| {
                METRICS.store_retries.inc();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "a store is unavailable; holding the batch");
            });
            tokio::select! {
                r = retried => Some(r),
                // stopping while a store is away: the unacked batch comes again to the next writer
                _ = shutdown.cancelled() => None,
            }
        }
        other => Some(other),
    }
}

async fn dead_letter<M: Message, I: Inbox<M>>(inbox: &I, delivery: &M, reason: &str, stats: &mut WorkerStats) -> Result<(), BrokerError> {
    tracing::warn!(reason, "dead-lettering a message that is not a report");
    inbox.dead_letter(delivery, reason).await?;
    METRICS.jobs_written.with_label_values(&["dead_lettered"]).inc();
    stats.dead_lettered += 1;
    Ok(())
}

/// Writes a batch (waiting out an unreachable store), then acks it.
#[tracing::instrument(name = "write_batch", skip_all, fields(results = batch.len(), reason))]
async fn write<M: Message, I: Inbox<M>, S: Store>(
    inbox: &I,
    writer: &S,
    batch: Vec<(M, EmbedResult)>,
    reason: &str,
    shutdown: &CancellationToken,
    stats: &mut WorkerStats,
) -> Result<(), WorkerError> {
    if batch.is_empty() {
        return Ok(());
    }
    METRICS.batches.with_label_values(&[reason]).inc();
    METRICS.batch_size.observe(batch.len() as f64);
    let (deliveries, results): (Vec<M>, Vec<EmbedResult>) = batch.into_iter().unzip();
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
    let Some(report) = available(shutdown, || writer.write_batch(&results)).await else { return Ok(()) };
    let report = match report {
        Ok(r) => r,
        Err(e) => return write_refused(inbox, writer, deliveries, &results, &e, stats).await,
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

/// A batch the stores refuse for good (not a store away: a vector the collection refuses): its jobs
/// are failed with the reason and its results dead-lettered, so the session ends and says why
/// (given back, they would come again and again, then sit in the dead-letter queue with their jobs
/// open). If even the failures cannot be recorded, the batch is given back.
async fn write_refused<M: Message, I: Inbox<M>, S: Store>(
    inbox: &I,
    writer: &S,
    deliveries: Vec<M>,
    results: &[EmbedResult],
    error: &WriteError,
    stats: &mut WorkerStats,
) -> Result<(), WorkerError> {
    tracing::error!(error = %error, results = deliveries.len(), "the stores refuse a batch; failing its jobs");
    let failed: Vec<EmbedResult> = results
        .iter()
        .map(|r| EmbedResult {
            outcome: Outcome::Failed { reason: "write_refused".into(), message: error.to_string(), kind: FailureKind::Transient },
            evidence: protocol::EvidenceInfo { metadata: serde_json::Value::Null, ..r.evidence.clone() },
            ..r.clone()
        })
        .collect();
    match writer.write_batch(&failed).await {
        Ok(report) => {
            for d in &deliveries {
                inbox.dead_letter(d, &format!("write_refused: {error}")).await?;
            }
            stats.failed += report.failed.len() as u64;
            stats.dead_lettered += deliveries.len() as u64;
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record the refused batch either; giving it back");
            for d in &deliveries {
                d.retry().await?;
            }
            Ok(())
        }
    }
}

/// The writer's decisions, driven with in-memory fakes of the inbox, its messages and the store: no
/// broker, no database, no process. Each test waits on conditions the fakes signal, never on time
/// (the backoff runs on tokio's paused clock where a test needs it).
#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use protocol::{EmbedJob, EvidenceInfo, Outcome};
    use tokio::sync::{Notify, mpsc};
    use vectors::VectorError;

    use super::*;

    /// What happened to each message, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        Acked(u32),
        Retried(u32),
        DeadLettered(u32, String),
        /// A returned job published again with this attempt.
        Requeued(i64, u32),
        /// A job moved to the jobs' dead-letter queue, with the reason.
        GaveUp(i64, String),
        StoppedConsuming,
    }

    type Log = Arc<Mutex<Vec<Event>>>;

    struct FakeMessage {
        id: u32,
        body: Result<Report, String>,
        log: Log,
    }

    impl Message for FakeMessage {
        fn decode(&self) -> Result<Report, BrokerError> {
            self.body.clone().map_err(|reason| BrokerError::Malformed { what: "report", reason })
        }
        fn queue_lag(&self) -> Duration {
            Duration::ZERO
        }
        fn traceparent(&self) -> Option<String> {
            None
        }
        async fn ack(&self) -> Result<(), BrokerError> {
            self.log.lock().unwrap().push(Event::Acked(self.id));
            Ok(())
        }
        async fn retry(&self) -> Result<(), BrokerError> {
            self.log.lock().unwrap().push(Event::Retried(self.id));
            Ok(())
        }
    }

    struct FakeInbox {
        rx: mpsc::Receiver<Result<FakeMessage, BrokerError>>,
        log: Log,
        /// Messages handed to the worker so far, and a signal on each.
        taken: Arc<(AtomicUsize, Notify)>,
    }

    impl Source for FakeInbox {
        type Item = Result<FakeMessage, BrokerError>;
        async fn next(&mut self) -> Option<Self::Item> {
            let item = self.rx.recv().await;
            if item.is_some() {
                self.taken.0.fetch_add(1, Ordering::SeqCst);
                self.taken.1.notify_waiters();
            }
            item
        }
    }

    impl Inbox<FakeMessage> for FakeInbox {
        async fn stop_consuming(&mut self) -> Result<(), BrokerError> {
            self.log.lock().unwrap().push(Event::StoppedConsuming);
            Ok(())
        }
        async fn dead_letter(&self, message: &FakeMessage, reason: &str) -> Result<(), BrokerError> {
            self.log.lock().unwrap().push(Event::DeadLettered(message.id, reason.to_owned()));
            Ok(())
        }
        fn attempt_limit(&self) -> i64 {
            3
        }
        async fn requeue(&self, job: &EmbedJob, _: Option<&str>) -> Result<(), BrokerError> {
            self.log.lock().unwrap().push(Event::Requeued(job.job_id, job.attempt));
            Ok(())
        }
        async fn give_up(&self, job: &EmbedJob, _: Option<&str>, reason: &str) -> Result<(), BrokerError> {
            self.log.lock().unwrap().push(Event::GaveUp(job.job_id, reason.to_owned()));
            Ok(())
        }
    }

    /// How a fake store refuses writes for good.
    #[derive(Clone, Copy, PartialEq)]
    enum Broken {
        No,
        /// Refuses vectors (a batch with an embedded result), records failures.
        Vectors,
        /// Refuses every write.
        Everything,
    }

    /// A store that is unavailable for its first `away` calls (forever when `usize::MAX`), or refuses
    /// writes for good (`broken`); it signals every call. Jobs it knows are open, their runs counted
    /// once per run id.
    struct FakeStore {
        away: usize,
        broken: Broken,
        calls: Arc<(AtomicUsize, Notify)>,
        /// (job id, outcome) written, in order.
        written: Mutex<Vec<(i64, String)>>,
        /// job id -> (runs counted, last run id)
        runs: Mutex<std::collections::HashMap<i64, (i32, i64)>>,
    }

    impl FakeStore {
        fn new(away: usize, broken: Broken) -> Self {
            FakeStore { away, broken, calls: Default::default(), written: Mutex::new(Vec::new()), runs: Default::default() }
        }
        fn ids(&self) -> Vec<i64> {
            self.written.lock().unwrap().iter().map(|(id, _)| *id).collect()
        }
    }

    impl Store for FakeStore {
        async fn write_batch(&self, results: &[EmbedResult]) -> Result<WriteReport, WriteError> {
            let call = self.calls.0.fetch_add(1, Ordering::SeqCst);
            self.calls.1.notify_waiters();
            let embedded = results.iter().any(|r| matches!(r.outcome, Outcome::Embedded { .. }));
            if self.broken == Broken::Everything || (self.broken == Broken::Vectors && embedded) {
                return Err(WriteError::Vectors(VectorError::InvalidRequest("wrong dimension".into())));
            }
            if call < self.away {
                return Err(WriteError::Vectors(VectorError::Unavailable("qdrant is restarting".into())));
            }
            let mut report = WriteReport::default();
            for r in results {
                let outcome = match &r.outcome {
                    Outcome::Embedded { .. } => "completed".to_owned(),
                    Outcome::Failed { reason, .. } => {
                        report.failed.push((reason.clone(), r.path.clone()));
                        format!("failed:{reason}")
                    }
                };
                self.written.lock().unwrap().push((r.job_id, outcome));
            }
            report.completed = results.len() - report.failed.len();
            Ok(report)
        }
        async fn record_started(&self, run: i64, jobs: &[i64]) -> Result<u64, WriteError> {
            let mut runs = self.runs.lock().unwrap();
            let mut counted = 0;
            for id in jobs {
                let entry = runs.entry(*id).or_insert((0, 0));
                if entry.1 != run {
                    *entry = (entry.0 + 1, run);
                    counted += 1;
                }
            }
            Ok(counted)
        }
        async fn job_attempts(&self, jobs: &[i64]) -> Result<Vec<(i64, JobStatus, i32)>, WriteError> {
            let runs = self.runs.lock().unwrap();
            let done: Vec<i64> = self.ids();
            Ok(jobs.iter().map(|id| (*id, if done.contains(id) { JobStatus::Completed } else { JobStatus::Running }, runs.get(id).map_or(0, |r| r.0))).collect())
        }
    }

    fn result() -> EmbedResult {
        let job = a_job();
        let evidence = EvidenceInfo { model_name: "m".into(), model_version: "1".into(), device: "cpu".into(), metadata: serde_json::Value::Null, processing_time_ms: 1 };
        EmbedResult::for_job(&job, Outcome::Embedded { vector: protocol::vector_to_bytes(&[1.0, 0.0]), checksum: "c".into() }, evidence)
    }

    fn a_job() -> EmbedJob {
        EmbedJob {
            v: protocol::VERSION,
            job_id: protocol::next_test_id(),
            asset_id: protocol::next_test_id(),
            session_id: protocol::next_test_id(),
            path: "/photos/a.jpg".into(),
            created_at: Default::default(),
            category_id: None,
            attempt: 1,
        }
    }

    struct Harness {
        tx: mpsc::Sender<Result<FakeMessage, BrokerError>>,
        log: Log,
        taken: Arc<(AtomicUsize, Notify)>,
    }

    impl Harness {
        fn new() -> (Harness, FakeInbox) {
            let (tx, rx) = mpsc::channel(64);
            let log = Log::default();
            let taken: Arc<(AtomicUsize, Notify)> = Default::default();
            (Harness { tx, log: log.clone(), taken: taken.clone() }, FakeInbox { rx, log, taken })
        }

        async fn send(&self, id: u32, body: Result<EmbedResult, String>) {
            self.report(id, body.map(Report::Result)).await;
        }

        async fn report(&self, id: u32, body: Result<Report, String>) {
            self.tx.send(Ok(FakeMessage { id, body, log: self.log.clone() })).await.unwrap();
        }

        fn events(&self) -> Vec<Event> {
            self.log.lock().unwrap().clone()
        }
    }

    /// Waits until `counter` reaches `n` (each change is signalled on its `Notify`).
    async fn until(counter: &(AtomicUsize, Notify), n: usize) {
        loop {
            let notified = counter.1.notified();
            if counter.0.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }

    fn options(batch_size: usize, max_wait: Duration) -> WorkerOptions {
        WorkerOptions { batch_size, max_wait, tag: "test".into() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_away_holds_the_batch_unacked_until_it_is_back() {
        let (h, mut inbox) = Harness::new();
        let store = FakeStore::new(3, Broken::No);
        h.send(1, Ok(result())).await;
        h.send(2, Ok(result())).await;
        let mut stats = WorkerStats::default();
        let shutdown = CancellationToken::new();
        let opts = options(2, Duration::from_millis(200));
        let consumer = consume(&mut inbox, &store, &opts, &shutdown, &mut stats);
        let (done, ()) = tokio::join!(consumer, async {
            until(&store.calls, 4).await;
            drop(h.tx);
        });
        // the inbox ended after the batch: the worker reports it (it would connect again)
        assert!(matches!(done, Err(WorkerError::Broker(BrokerError::Unavailable { .. }))), "{done:?}");
        assert_eq!(store.calls.0.load(Ordering::SeqCst), 4, "three refusals, then the write");
        assert_eq!(h.log.lock().unwrap().clone(), [Event::Acked(1), Event::Acked(2)], "acked once, only after the write");
        assert_eq!(stats.completed, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_that_is_not_a_result_is_dead_lettered_and_the_rest_written() {
        let (h, mut inbox) = Harness::new();
        let store = FakeStore::new(0, Broken::No);
        h.send(1, Err("expected value at line 1 column 1".into())).await;
        let mut old = result();
        old.v = 99;
        h.send(2, Ok(old)).await;
        h.send(3, Ok(result())).await;
        let Harness { tx, log, .. } = h;
        drop(tx);
        let mut stats = WorkerStats::default();
        let done = consume(&mut inbox, &store, &options(3, Duration::from_millis(200)), &CancellationToken::new(), &mut stats).await;
        assert!(done.is_err(), "the inbox ended");
        let events = log.lock().unwrap().clone();
        assert_eq!(
            events,
            [
                Event::DeadLettered(1, "malformed: message is not a valid report: expected value at line 1 column 1".into()),
                Event::DeadLettered(2, format!("malformed: report version 99 is not the version this writer reads ({})", protocol::VERSION)),
                Event::Acked(3),
            ]
        );
        assert_eq!((stats.dead_lettered, stats.completed), (2, 1));
    }

    /// Vectors the collection refuses for good: the jobs are failed with the reason (the session
    /// ends and says why) and the results dead-lettered, instead of coming back forever.
    #[tokio::test(start_paused = true)]
    async fn a_batch_the_stores_refuse_fails_its_jobs_and_is_dead_lettered() {
        let (h, mut inbox) = Harness::new();
        let store = FakeStore::new(0, Broken::Vectors);
        let (a, b) = (result(), result());
        h.send(1, Ok(a.clone())).await;
        h.send(2, Ok(b.clone())).await;
        let Harness { tx, log, .. } = h;
        drop(tx);
        let mut stats = WorkerStats::default();
        let _ = consume(&mut inbox, &store, &options(2, Duration::from_millis(200)), &CancellationToken::new(), &mut stats).await;
        let reason = "write_refused: invalid vector store request: wrong dimension";
        assert_eq!(log.lock().unwrap().clone(), [Event::DeadLettered(1, reason.into()), Event::DeadLettered(2, reason.into())]);
        assert_eq!(
            store.written.lock().unwrap().clone(),
            [(a.job_id, "failed:write_refused".to_owned()), (b.job_id, "failed:write_refused".to_owned())],
            "each job recorded failed with the reason"
        );
        assert_eq!(store.calls.0.load(Ordering::SeqCst), 2, "not a store that is away: the write is not tried again, the failure recorded");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_whose_failure_cannot_be_recorded_either_is_given_back() {
        let (h, mut inbox) = Harness::new();
        let store = FakeStore::new(0, Broken::Everything);
        h.send(1, Ok(result())).await;
        let Harness { tx, log, .. } = h;
        drop(tx);
        let _ = consume(&mut inbox, &store, &options(1, Duration::from_millis(200)), &CancellationToken::new(), &mut WorkerStats::default()).await;
        assert_eq!(log.lock().unwrap().clone(), [Event::Retried(1)], "given back, never acked");
    }

    /// The writer decides what becomes of a job the broker gave back, from the runs of it that
    /// really started (counted once per run, however often the report comes): published again
    /// with its attempt while under the limit (3 here), then failed as `crashed` and moved to the
    /// dead-letter queue. A returned job already finished is only acked.
    #[tokio::test(start_paused = true)]
    async fn a_returned_job_goes_again_until_the_runs_that_started_reach_the_limit() {
        let (h, mut inbox) = Harness::new();
        let store = FakeStore::new(0, Broken::No);
        let (job, done) = (a_job(), result());
        let started = |run: i64, jobs: Vec<i64>| Ok(Report::Started(protocol::RunStarted { v: protocol::VERSION, run, jobs }));
        h.report(1, started(11, vec![job.job_id])).await;
        // the same report again (a writer died after its commit): not a second run
        h.report(2, started(11, vec![job.job_id])).await;
        h.report(3, Ok(Report::Returned(job.clone()))).await;
        h.send(4, Ok(done.clone())).await;
        h.report(5, Ok(Report::Returned(EmbedJob { job_id: done.job_id, ..a_job() }))).await;
        h.report(6, started(12, vec![job.job_id])).await;
        h.report(7, started(13, vec![job.job_id])).await;
        h.report(8, Ok(Report::Returned(job.clone()))).await;
        let Harness { tx, log, .. } = h;
        drop(tx);
        let mut stats = WorkerStats::default();
        let _ = consume(&mut inbox, &store, &options(1, Duration::from_millis(200)), &CancellationToken::new(), &mut stats).await;
        let reason = "crashed: 3 runs of this job started and none finished: a worker may crash on this file";
        assert_eq!(
            log.lock().unwrap().clone(),
            [
                Event::Acked(1),
                Event::Acked(2),
                Event::Requeued(job.job_id, 2),
                Event::Acked(3),
                Event::Acked(4),
                Event::Acked(5),
                Event::Acked(6),
                Event::Acked(7),
                Event::GaveUp(job.job_id, reason.into()),
                Event::Acked(8),
            ]
        );
        assert_eq!(store.written.lock().unwrap().clone(), [(done.job_id, "completed".to_owned()), (job.job_id, "failed:crashed".to_owned())]);
        assert_eq!((stats.requeued, stats.crashed), (1, 1));
    }

    /// Shutdown while a batch is half full: consuming stops, then the batch in hand is written and
    /// acked (the drain writes; it does not give up because the token is already cancelled).
    #[tokio::test]
    async fn shutdown_writes_and_acks_the_batch_in_hand() {
        let (h, mut inbox) = Harness::new();
        let store = FakeStore::new(0, Broken::No);
        h.send(1, Ok(result())).await;
        h.send(2, Ok(result())).await;
        let shutdown = CancellationToken::new();
        let mut stats = WorkerStats::default();
        // the batch would wait an hour for more: only the shutdown can end it
        let opts = options(10, Duration::from_secs(3600));
        let consumer = consume(&mut inbox, &store, &opts, &shutdown, &mut stats);
        let (done, ()) = tokio::join!(consumer, async {
            until(&h.taken, 2).await;
            shutdown.cancel();
        });
        assert!(done.is_ok(), "{done:?}");
        assert_eq!(h.events(), [Event::StoppedConsuming, Event::Acked(1), Event::Acked(2)]);
        assert_eq!(store.ids().len(), 2);
    }

    /// Shutdown while the store is away: the batch stays unacked (the broker gives it to the next
    /// writer), nothing is dead-lettered or given back.
    #[tokio::test]
    async fn shutdown_while_the_store_is_away_leaves_the_batch_to_the_next_writer() {
        let (h, mut inbox) = Harness::new();
        let store = FakeStore::new(usize::MAX, Broken::No);
        h.send(1, Ok(result())).await;
        let shutdown = CancellationToken::new();
        let mut stats = WorkerStats::default();
        let opts = options(1, Duration::from_secs(3600));
        let consumer = consume(&mut inbox, &store, &opts, &shutdown, &mut stats);
        let (done, ()) = tokio::join!(consumer, async {
            until(&store.calls, 2).await;
            shutdown.cancel();
        });
        assert!(done.is_ok(), "{done:?}");
        assert_eq!(h.events(), [Event::StoppedConsuming], "no ack, no retry, no dead letter");
    }
}
