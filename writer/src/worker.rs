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
//!
//! Those decisions are `consume`'s, written against three small seams: [`Message`] (a delivery to
//! ack or give back), [`Inbox`] (the queue and its dead-letter exchange) and [`Store`] (where a
//! batch is written). RabbitMQ and the real stores implement them here; the unit tests below drive
//! `consume` with in-memory fakes, without a broker or a process.

use std::{future::Future, sync::Arc, time::Duration};

use backon::Retryable;
use broker::{Broker, BrokerConfig, BrokerError, Consumer, Delivery, Queue};
use protocol::{
    EmbedResult,
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

/// A result message as the writer settles it.
pub trait Message: Send + Sync {
    fn decode(&self) -> Result<EmbedResult, BrokerError>;
    fn queue_lag(&self) -> Duration;
    fn traceparent(&self) -> Option<String>;
    fn ack(&self) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// Back to the queue, for this or another writer.
    fn retry(&self) -> impl Future<Output = Result<(), BrokerError>> + Send;
}

/// The queue results come from (a `Source` of messages; `None` when the connection is gone), and
/// where a message that can never be written goes.
pub trait Inbox<M: Message>: Source<Item = Result<M, BrokerError>> + Send {
    /// Stop taking messages (shutdown); those prefetched and not yet taken go back to the queue.
    fn stop_consuming(&mut self) -> impl Future<Output = Result<(), BrokerError>> + Send;
    fn dead_letter(&self, message: &M, reason: &str) -> impl Future<Output = Result<(), BrokerError>> + Send;
}

/// Where a batch of results is written: vectors, then the catalog (see the crate docs).
pub trait Store: Sync {
    fn write_batch(&self, results: &[EmbedResult]) -> impl Future<Output = Result<WriteReport, WriteError>> + Send;
}

impl Message for Delivery {
    fn decode(&self) -> Result<EmbedResult, BrokerError> {
        Delivery::decode(self, "embedding result")
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
}

impl Store for Writer {
    fn write_batch(&self, results: &[EmbedResult]) -> impl Future<Output = Result<WriteReport, WriteError>> + Send {
        Writer::write_batch(self, results)
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
                    let batch = decode_batch(inbox, batch, stats).await?;
                    write(store, batch, reason.as_str(), shutdown, stats).await?;
                }
                return Ok(());
            }
            b = batcher.next_batch(inbox) => b,
        };
        let Some((batch, reason)) = flushed else {
            return Err(BrokerError::Unavailable { url: "the embeddings queue".into(), reason: "the consumer ended".into() }.into());
        };
        let batch = decode_batch(inbox, batch, stats).await?;
        if !batch.is_empty() {
            write(store, batch, reason.as_str(), shutdown, stats).await?;
        }
    }
}

/// The results of a batch of deliveries; a lost connection among them ends the batch (its unacked
/// messages come again), a message that is not a result this version reads is dead-lettered.
async fn decode_batch<M: Message, I: Inbox<M>>(inbox: &I, batch: Vec<Result<M, BrokerError>>, stats: &mut WorkerStats) -> Result<Vec<(M, EmbedResult)>, WorkerError> {
    let mut results = Vec::with_capacity(batch.len());
    for delivery in batch {
        let delivery = delivery?;
        METRICS.results_consumed.inc();
        METRICS.queue_lag_seconds.observe(delivery.queue_lag().as_secs_f64());
        match delivery.decode() {
            Ok(r) if r.v == protocol::VERSION => results.push((delivery, r)),
            Ok(r) => dead_letter(inbox, &delivery, &format!("malformed: result version {} is not the version this writer reads ({})", r.v, protocol::VERSION), stats).await?,
            Err(e) => dead_letter(inbox, &delivery, &format!("malformed: {e}"), stats).await?,
        }
    }
    Ok(results)
}

async fn dead_letter<M: Message, I: Inbox<M>>(inbox: &I, delivery: &M, reason: &str, stats: &mut WorkerStats) -> Result<(), BrokerError> {
    tracing::warn!(reason, "dead-lettering a message that is not a result");
    inbox.dead_letter(delivery, reason).await?;
    METRICS.jobs_written.with_label_values(&["dead_lettered"]).inc();
    stats.dead_lettered += 1;
    Ok(())
}

/// Writes a batch (waiting out an unreachable store), then acks it.
#[tracing::instrument(name = "write_batch", skip_all, fields(results = batch.len(), reason))]
async fn write<M: Message, S: Store>(writer: &S, batch: Vec<(M, EmbedResult)>, reason: &str, shutdown: &CancellationToken, stats: &mut WorkerStats) -> Result<(), WorkerError> {
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
        StoppedConsuming,
    }

    type Log = Arc<Mutex<Vec<Event>>>;

    struct FakeMessage {
        id: u32,
        body: Result<EmbedResult, String>,
        log: Log,
    }

    impl Message for FakeMessage {
        fn decode(&self) -> Result<EmbedResult, BrokerError> {
            self.body.clone().map_err(|reason| BrokerError::Malformed { what: "embedding result", reason })
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
    }

    /// A store that is unavailable for its first `away` calls (forever when `usize::MAX`), or fails
    /// for good with `broken`; it signals every call.
    struct FakeStore {
        away: usize,
        broken: bool,
        calls: Arc<(AtomicUsize, Notify)>,
        written: Mutex<Vec<i64>>,
    }

    impl FakeStore {
        fn new(away: usize, broken: bool) -> Self {
            FakeStore { away, broken, calls: Default::default(), written: Mutex::new(Vec::new()) }
        }
    }

    impl Store for FakeStore {
        async fn write_batch(&self, results: &[EmbedResult]) -> Result<WriteReport, WriteError> {
            let call = self.calls.0.fetch_add(1, Ordering::SeqCst);
            self.calls.1.notify_waiters();
            if self.broken {
                return Err(WriteError::Vectors(VectorError::InvalidRequest("wrong dimension".into())));
            }
            if call < self.away {
                return Err(WriteError::Vectors(VectorError::Unavailable("qdrant is restarting".into())));
            }
            self.written.lock().unwrap().extend(results.iter().map(|r| r.job_id));
            Ok(WriteReport { completed: results.len(), ..Default::default() })
        }
    }

    fn result() -> EmbedResult {
        let job = EmbedJob {
            v: protocol::VERSION,
            job_id: protocol::next_test_id(),
            asset_id: protocol::next_test_id(),
            session_id: protocol::next_test_id(),
            path: "/photos/a.jpg".into(),
            created_at: Default::default(),
            category_id: None,
            attempt: 1,
        };
        let evidence = EvidenceInfo { model_name: "m".into(), model_version: "1".into(), device: "cpu".into(), metadata: serde_json::Value::Null, processing_time_ms: 1 };
        EmbedResult::for_job(&job, Outcome::Embedded { vector: protocol::vector_to_bytes(&[1.0, 0.0]), checksum: "c".into() }, evidence)
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
        let store = FakeStore::new(3, false);
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
        let store = FakeStore::new(0, false);
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
                Event::DeadLettered(1, "malformed: message is not a valid embedding result: expected value at line 1 column 1".into()),
                Event::DeadLettered(2, format!("malformed: result version 99 is not the version this writer reads ({})", protocol::VERSION)),
                Event::Acked(3),
            ]
        );
        assert_eq!((stats.dead_lettered, stats.completed), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_fails_for_good_gives_the_batch_back() {
        let (h, mut inbox) = Harness::new();
        let store = FakeStore::new(0, true);
        h.send(1, Ok(result())).await;
        h.send(2, Ok(result())).await;
        let Harness { tx, log, .. } = h;
        drop(tx);
        let mut stats = WorkerStats::default();
        let _ = consume(&mut inbox, &store, &options(2, Duration::from_millis(200)), &CancellationToken::new(), &mut stats).await;
        assert_eq!(log.lock().unwrap().clone(), [Event::Retried(1), Event::Retried(2)], "given back, never acked");
        assert_eq!(store.calls.0.load(Ordering::SeqCst), 1, "not a store that is away: no second try");
    }

    /// Shutdown while a batch is half full: consuming stops, then the batch in hand is written and
    /// acked (the drain writes; it does not give up because the token is already cancelled).
    #[tokio::test]
    async fn shutdown_writes_and_acks_the_batch_in_hand() {
        let (h, mut inbox) = Harness::new();
        let store = FakeStore::new(0, false);
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
        assert_eq!(store.written.lock().unwrap().len(), 2);
    }

    /// Shutdown while the store is away: the batch stays unacked (the broker gives it to the next
    /// writer), nothing is dead-lettered or given back.
    #[tokio::test]
    async fn shutdown_while_the_store_is_away_leaves_the_batch_to_the_next_writer() {
        let (h, mut inbox) = Harness::new();
        let store = FakeStore::new(usize::MAX, false);
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
