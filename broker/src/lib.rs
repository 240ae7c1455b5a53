//! The broker: the only crate that links `lapin`. It declares the pipeline's queues idempotently,
//! publishes with publisher confirms (a nack or a missing confirm is an error, never ignored), and
//! consumes with manual acks. It carries messages; it decides nothing about them.
//!
//! Topology, for a prefix `p` (from config, so tests and tenants get their own names): durable
//! quorum queues `p.jobs` and `p.embeddings`, each dead-lettering to the direct exchange `p.dlx`,
//! which routes to `p.jobs.dead` / `p.embeddings.dead`. A message the pipeline gives up (its reason in
//! `x-imgsearch-reason`), or one redelivered more than the backstop (`x-delivery-limit`, counted by
//! RabbitMQ: every return counts, a consumer's death included, so it decides nothing else) goes to
//! its dead-letter queue.
//!
//! Control: a fanout exchange `p.control` carries session controls (pause, cancel) to every
//! embedder; each embedder listens on its own exclusive queue, so a control reaches all of them.
//!
//! Headers: every message carries the W3C `traceparent` of the span that published it (when there
//! is one), so one asset's trace runs from the coordinator through the embedder to the writer; a
//! message the pipeline dead-letters itself carries `x-imgsearch-reason`.
//!
//! A lost connection is an error here; `connect_with_backoff` is how the workers get a new one
//! (exponential backoff from the `backon` crate, until it works or the process is shut down).

pub mod trace;

use std::{collections::BTreeMap, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::sync::CancellationToken;

/// The header a message's trace context rides in (W3C trace context).
pub const TRACEPARENT: &str = "traceparent";
/// The header with the publish time (ms since the epoch), for the queue-lag metrics.
pub const PUBLISHED_HEADER: &str = "x-published-ms";
/// The header that says why the pipeline dead-lettered a message.
pub const REASON_HEADER: &str = "x-imgsearch-reason";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// `url` is shown without its password (`protocol::redact_url`).
    #[error("broker unavailable at {url}: {reason}; check that RabbitMQ is running and reachable")]
    Unavailable { url: String, reason: String },
    #[error("the broker refused a publish to {queue} (nack); it will be retried")]
    Nacked { queue: String },
    #[error("broker error while trying to {action}: {source}")]
    Amqp { action: &'static str, source: lapin::Error },
    #[error("message is not a valid {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

type Result<T> = std::result::Result<T, BrokerError>;

impl BrokerError {
    /// Whether a new connection can help: the broker is unreachable, or the connection or a channel
    /// went away. A refused declaration (a queue exists with other arguments) or a malformed
    /// message is not that: retrying would hide it.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            BrokerError::Unavailable { .. } => true,
            BrokerError::Amqp { action, .. } => !action.starts_with("declare"),
            BrokerError::Nacked { .. } | BrokerError::Malformed { .. } => false,
        }
    }

    /// Whether a worker should start over on a new connection: the connection was lost, or the
    /// broker refused a publish (the unacked inputs are then redelivered and published again).
    pub fn is_retryable(&self) -> bool {
        self.is_connection_lost() || matches!(self, BrokerError::Nacked { .. })
    }
}

fn amqp(action: &'static str) -> impl Fn(lapin::Error) -> BrokerError {
    move |source| BrokerError::Amqp { action, source }
}

/// The queues of one pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Jobs,
    Embeddings,
}

/// Where to connect and how to name things. Its `Debug` hides the URL's password.
#[derive(Clone)]
pub struct BrokerConfig {
    /// AMQP url (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
    pub url: String,
    /// Prefix of every queue and exchange name (default `imgsearch`).
    pub prefix: String,
    /// Runs of a job that may start without finishing (the worker died) or fail for a transient
    /// reason before the job is failed and dead-lettered (default 5). The pipeline counts them
    /// itself, in the catalog: see `protocol::RunStarted`.
    pub attempt_limit: i64,
    /// Deliveries of one message before RabbitMQ dead-letters it (`x-delivery-limit`; default 50).
    /// Only a backstop: RabbitMQ counts every return of an unacked message, a consumer's death
    /// included, so a worker that dies holding its prefetch charges every message it held. The
    /// pipeline hands a returned job to a writer at its first redelivery, and the writer decides.
    pub delivery_backstop: i64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig { url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(), prefix: "imgsearch".into(), attempt_limit: 5, delivery_backstop: 50 }
    }
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &protocol::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("attempt_limit", &self.attempt_limit)
            .field("delivery_backstop", &self.delivery_backstop)
            .finish()
    }
}

impl BrokerConfig {
    pub fn queue_name(&self, q: Queue) -> String {
        match q {
            Queue::Jobs => format!("{}.jobs", self.prefix),
            Queue::Embeddings => format!("{}.embeddings", self.prefix),
        }
    }

    pub fn dead_queue_name(&self, q: Queue) -> String {
        format!("{}.dead", self.queue_name(q))
    }

    pub fn dlx_name(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    pub fn control_exchange_name(&self) -> String {
        format!("{}.control", self.prefix)
    }
}

/// A connection with one confirming channel for publishing; consumers get their own channel.
pub struct Broker {
    config: BrokerConfig,
    connection: Connection,
    publisher: Channel,
}

/// A message taken from a queue; ack it once its effect is durable.
pub struct Delivery {
    inner: lapin::message::Delivery,
}

impl Delivery {
    pub fn data(&self) -> &[u8] {
        &self.inner.data
    }

    /// Whether RabbitMQ delivered this message before (a consumer died or nacked it).
    pub fn redelivered(&self) -> bool {
        self.inner.redelivered
    }

    /// How many times RabbitMQ delivered this message before (`x-delivery-count`, set by quorum
    /// queues on redelivery); 0 on the first delivery.
    pub fn delivery_count(&self) -> i64 {
        self.header("x-delivery-count").and_then(as_int).unwrap_or(0)
    }

    /// How long ago the message was published (0 when it carries no publish time).
    pub fn queue_lag(&self) -> Duration {
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        match self.header(PUBLISHED_HEADER).and_then(as_int) {
            Some(at) if now_ms > at => Duration::from_millis((now_ms - at) as u64),
            _ => Duration::ZERO,
        }
    }

    /// The W3C trace context the publisher attached, if any.
    pub fn traceparent(&self) -> Option<String> {
        self.header(TRACEPARENT).and_then(as_string)
    }

    /// Why the pipeline dead-lettered this message (on messages in a dead-letter queue).
    pub fn dead_letter_reason(&self) -> Option<String> {
        self.header(REASON_HEADER).and_then(as_string)
    }

    fn header(&self, name: &str) -> Option<&AMQPValue> {
        self.inner.properties.headers().as_ref().and_then(|h| h.inner().get(name))
    }

    pub fn decode<T: DeserializeOwned>(&self, what: &'static str) -> Result<T> {
        serde_json::from_slice(&self.inner.data).map_err(|e| BrokerError::Malformed { what, reason: e.to_string() })
    }

    pub async fn ack(&self) -> Result<()> {
        self.inner.ack(BasicAckOptions::default()).await.map(|_| ()).map_err(amqp("ack"))
    }

    /// Gives the message back for another try (counted against the delivery limit).
    pub async fn retry(&self) -> Result<()> {
        self.inner.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.map(|_| ()).map_err(amqp("nack"))
    }

    /// Sends a message that can never succeed (a poison message) straight to the dead-letter queue.
    pub async fn dead_letter(&self) -> Result<()> {
        self.inner.reject(BasicRejectOptions { requeue: false }).await.map(|_| ()).map_err(amqp("reject"))
    }
}

/// Messages from one queue, `prefetch` unacked at most.
pub struct Consumer {
    channel: Channel,
    inner: lapin::Consumer,
    tag: String,
}

/// A consumer feeds the workers' batches (`Batcher::next_batch`); an error is an item too, so the
/// worker sees it in the batch it ends.
impl protocol::batch::Source for Consumer {
    type Item = Result<Delivery>;
    fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + Send {
        Consumer::next(self)
    }
}

impl Consumer {
    /// The next message; `None` when the consumer was cancelled or the connection closed.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        self.inner.next().await.map(|r| r.map(|inner| Delivery { inner }).map_err(amqp("receive")))
    }

    /// Stops the delivery of new messages; the ones taken can still be acked.
    pub async fn cancel(&self) -> Result<()> {
        self.channel.basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default()).await.map_err(amqp("cancel a consumer"))
    }

    /// Closes the consumer's channel: the messages taken and not acked go back to the queue.
    pub async fn close(&self) -> Result<()> {
        self.channel.close(200, "bye".into()).await.map_err(amqp("close a channel"))
    }
}

/// A session control, fanned out to every embedder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlAction {
    /// Drop the session's jobs without work until it is resumed (they are published again then).
    Pause,
    /// Drop the session's jobs without work, for good.
    Cancel,
    /// Take the session's jobs again.
    Resume,
}

/// How long to wait between connection attempts: exponential from 100 ms, at most 5 s, with jitter,
/// for as long as it takes.
pub fn reconnect_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default().with_min_delay(Duration::from_millis(100)).with_max_delay(Duration::from_secs(5)).with_jitter().without_max_times()
}

/// Connects, retrying with `reconnect_backoff` while the broker is unreachable; `None` when
/// `shutdown` fires first. Other errors (a refused declaration) are returned at once.
pub async fn connect_with_backoff(config: &BrokerConfig, shutdown: &CancellationToken) -> Option<Result<Broker>> {
    let attempt = || Broker::connect(config.clone());
    let retried = attempt
        .retry(reconnect_backoff())
        .when(|e| e.is_connection_lost())
        .notify(|e, wait| tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "broker not reachable; retrying"));
    tokio::select! {
        r = retried => Some(r),
        _ = shutdown.cancelled() => None,
    }
}

impl Broker {
    /// Connects, enables publisher confirms and declares the topology (idempotent: every process
    /// declares it, whoever starts first).
    pub async fn connect(config: BrokerConfig) -> Result<Self> {
        // named `{prefix}:{pid}`, so an operator (or a test) can tell the pipeline's connections apart
        let properties = ConnectionProperties::default().with_connection_name(LongString::from(format!("{}:{}", config.prefix, std::process::id())));
        let connection =
            Connection::connect(&config.url, properties).await.map_err(|e| BrokerError::Unavailable { url: protocol::redact_url(&config.url), reason: e.to_string() })?;
        let publisher = connection.create_channel().await.map_err(amqp("open a channel"))?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(amqp("enable publisher confirms"))?;
        let broker = Broker { config, connection, publisher };
        broker.declare().await?;
        Ok(broker)
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    async fn declare(&self) -> Result<()> {
        let c = &self.publisher;
        let dlx = self.config.dlx_name();
        c.exchange_declare(dlx.as_str().into(), ExchangeKind::Direct, ExchangeDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
            .await
            .map_err(amqp("declare the dead-letter exchange"))?;
        c.exchange_declare(
            self.config.control_exchange_name().as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(amqp("declare the control exchange"))?;
        for q in [Queue::Jobs, Queue::Embeddings] {
            let (name, dead) = (self.config.queue_name(q), self.config.dead_queue_name(q));
            c.queue_declare(dead.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, quorum_args(None))
                .await
                .map_err(amqp("declare a dead-letter queue"))?;
            c.queue_bind(dead.as_str().into(), dlx.as_str().into(), name.as_str().into(), QueueBindOptions::default(), FieldTable::default())
                .await
                .map_err(amqp("bind a dead-letter queue"))?;
            c.queue_declare(name.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, quorum_args(Some((&dlx, &name, self.config.delivery_backstop))))
                .await
                .map_err(amqp("declare a queue"))?;
        }
        Ok(())
    }

    /// Publishes a persistent JSON message and waits for the broker's confirm; a nack is an error.
    pub async fn publish<T: Serialize>(&self, queue: Queue, message: &T, traceparent: Option<&str>) -> Result<()> {
        let name = self.config.queue_name(queue);
        let payload = serde_json::to_vec(message).expect("messages serialize");
        let confirm = self.send("", &name, &payload, headers(traceparent, None)).await?;
        confirmed(confirm, &name).await
    }

    /// Publishes a batch pipelined: every message is sent, then every confirm awaited. Returns once
    /// all are confirmed; any nack fails the whole call (the caller republishes; duplicates are
    /// harmless downstream). Each message goes with its trace context, if it has one.
    pub async fn publish_batch<T: Serialize>(&self, queue: Queue, messages: &[(T, Option<String>)]) -> Result<()> {
        let name = self.config.queue_name(queue);
        let mut pending = Vec::with_capacity(messages.len());
        for (m, traceparent) in messages {
            pending.push(self.send("", &name, &serde_json::to_vec(m).expect("messages serialize"), headers(traceparent.as_deref(), None)).await?);
        }
        for confirm in pending {
            confirmed(confirm, &name).await?;
        }
        Ok(())
    }

    /// Sends a persistent message; the returned future resolves to the broker's confirm. Messages to
    /// a queue are mandatory (unroutable is an error); a fanout may have no listener.
    async fn send(&self, exchange: &str, routing_key: &str, payload: &[u8], headers: FieldTable) -> Result<lapin::PublisherConfirm> {
        let props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into()).with_headers(headers);
        let mandatory = exchange.is_empty() || exchange == self.config.dlx_name();
        self.publisher.basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions { mandatory, ..Default::default() }, payload, props).await.map_err(amqp("publish"))
    }

    /// Publishes bytes as they are (tests use it for poison messages).
    pub async fn publish_raw(&self, queue_name: &str, payload: &[u8]) -> Result<()> {
        let confirm = self.send("", queue_name, payload, FieldTable::default()).await?;
        confirmed(confirm, queue_name).await
    }

    /// Moves a message that can never succeed to its queue's dead-letter queue with the reason in
    /// the `x-imgsearch-reason` header (a plain reject cannot carry one), then acks it.
    pub async fn dead_letter(&self, queue: Queue, delivery: &Delivery, reason: &str) -> Result<()> {
        self.send_dead(queue, delivery.data(), delivery.traceparent().as_deref(), reason).await?;
        delivery.ack().await
    }

    /// Sends bytes to a queue's dead-letter queue with the reason, and waits for the confirm.
    async fn send_dead(&self, queue: Queue, payload: &[u8], traceparent: Option<&str>, reason: &str) -> Result<()> {
        let confirm = self.send(&self.config.dlx_name(), &self.config.queue_name(queue), payload, headers(traceparent, Some(reason))).await?;
        confirmed(confirm, &self.config.dead_queue_name(queue)).await
    }

    /// Puts a message the pipeline gives up on into a queue's dead-letter queue with its reason (a
    /// job whose runs reached the limit, sent by the writer that decided it).
    pub async fn dead_letter_message<T: Serialize>(&self, queue: Queue, message: &T, traceparent: Option<&str>, reason: &str) -> Result<()> {
        self.send_dead(queue, &serde_json::to_vec(message).expect("messages serialize"), traceparent, reason).await
    }

    /// Tells every embedder listening that a session is paused, cancelled or resumed.
    pub async fn publish_control(&self, session_id: &str, action: ControlAction) -> Result<()> {
        let exchange = self.config.control_exchange_name();
        let body = serde_json::to_vec(&serde_json::json!({"v": 1, "sessionId": session_id, "action": action})).expect("controls serialize");
        let confirm = self.send(&exchange, "", &body, FieldTable::default()).await?;
        match confirm.await.map_err(amqp("wait for a publish confirm"))? {
            Confirmation::Nack(_) => Err(BrokerError::Nacked { queue: exchange }),
            _ => Ok(()),
        }
    }

    /// Listens to the session controls on an exclusive queue of this connection (gone with it).
    pub async fn subscribe_control(&self, tag: &str) -> Result<ControlListener> {
        let channel = self.connection.create_channel().await.map_err(amqp("open a channel"))?;
        let queue = channel
            .queue_declare("".into(), QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() }, FieldTable::default())
            .await
            .map_err(amqp("declare a control queue"))?;
        let name = queue.name().as_str().to_owned();
        channel
            .queue_bind(name.as_str().into(), self.config.control_exchange_name().as_str().into(), "".into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .map_err(amqp("bind a control queue"))?;
        let inner = channel
            .basic_consume(name.as_str().into(), tag.into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
            .await
            .map_err(amqp("consume controls"))?;
        Ok(ControlListener { consumer: Consumer { channel, inner, tag: tag.to_owned() } })
    }

    /// Consumes a queue on its own channel, at most `prefetch` messages unacked.
    pub async fn consume(&self, queue: Queue, tag: &str, prefetch: u16) -> Result<Consumer> {
        self.consume_named(&self.config.queue_name(queue), tag, prefetch).await
    }

    /// Consumes a queue by name (the dead-letter queues, for inspection and tests).
    pub async fn consume_named(&self, name: &str, tag: &str, prefetch: u16) -> Result<Consumer> {
        let channel = self.connection.create_channel().await.map_err(amqp("open a channel"))?;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(amqp("set the prefetch"))?;
        let inner = channel.basic_consume(name.into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default()).await.map_err(amqp("consume"))?;
        Ok(Consumer { channel, inner, tag: tag.to_owned() })
    }

    /// Deletes this prefix's queues and exchange (tests clean up after themselves).
    pub async fn delete_topology(&self) -> Result<()> {
        for q in [Queue::Jobs, Queue::Embeddings] {
            for name in [self.config.queue_name(q), self.config.dead_queue_name(q)] {
                self.publisher.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await.map_err(amqp("delete a queue"))?;
            }
        }
        for exchange in [self.config.dlx_name(), self.config.control_exchange_name()] {
            self.publisher.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await.map_err(amqp("delete an exchange"))?;
        }
        Ok(())
    }

    /// Messages waiting in a queue (not counting the ones delivered and not yet acked).
    pub async fn queue_depth(&self, name: &str) -> Result<u32> {
        let q =
            self.publisher.queue_declare(name.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.map_err(amqp("inspect a queue"))?;
        Ok(q.message_count())
    }

    pub async fn close(&self) -> Result<()> {
        self.connection.close(200, "bye".into()).await.map_err(amqp("close the connection"))
    }
}

/// Waits for a publish confirm: only a plain ack counts as delivered; a return (unroutable), a
/// nack or a missing confirm is an error.
async fn confirmed(confirm: lapin::PublisherConfirm, queue_name: &str) -> Result<()> {
    match confirm.await.map_err(amqp("wait for a publish confirm"))? {
        Confirmation::Ack(None) => Ok(()),
        _ => Err(BrokerError::Nacked { queue: queue_name.to_owned() }),
    }
}

/// Arguments of a quorum queue, dead-lettering to `dlx` with the queue's name as routing key.
fn quorum_args(dead_letter: Option<(&str, &str, i64)>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-queue-type"), AMQPValue::LongString(LongString::from("quorum")));
    if let Some((dlx, routing_key, limit)) = dead_letter {
        args.insert(ShortString::from("x-dead-letter-exchange"), AMQPValue::LongString(LongString::from(dlx)));
        args.insert(ShortString::from("x-dead-letter-routing-key"), AMQPValue::LongString(LongString::from(routing_key)));
        args.insert(ShortString::from("x-delivery-limit"), AMQPValue::LongLongInt(limit));
    }
    args
}

/// The session controls reaching this process: `(session id, action)`.
pub struct ControlListener {
    consumer: Consumer,
}

/// The embedder takes session controls as a `Source` too (its fakes feed them from a channel).
impl protocol::batch::Source for ControlListener {
    type Item = Result<(String, ControlAction)>;
    fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + Send {
        ControlListener::next(self)
    }
}

impl ControlListener {
    /// The next control; `None` when the connection closed. A malformed control is skipped.
    pub async fn next(&mut self) -> Option<Result<(String, ControlAction)>> {
        loop {
            let delivery = match self.consumer.next().await? {
                Ok(d) => d,
                Err(e) => return Some(Err(e)),
            };
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Control {
                session_id: String,
                action: ControlAction,
            }
            match delivery.decode::<Control>("session control") {
                Ok(c) => return Some(Ok((c.session_id, c.action))),
                Err(e) => tracing::warn!(error = %e, "skipping a malformed session control"),
            }
        }
    }
}

fn headers(traceparent: Option<&str>, reason: Option<&str>) -> FieldTable {
    let mut map = BTreeMap::new();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    map.insert(ShortString::from(PUBLISHED_HEADER), AMQPValue::LongLongInt(now_ms));
    if let Some(t) = traceparent {
        map.insert(ShortString::from(TRACEPARENT), AMQPValue::LongString(LongString::from(t)));
    }
    if let Some(r) = reason {
        map.insert(ShortString::from(REASON_HEADER), AMQPValue::LongString(LongString::from(r)));
    }
    FieldTable::from(map)
}

fn as_int(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(n) => Some(*n as i64),
        AMQPValue::ShortShortUInt(n) => Some(*n as i64),
        AMQPValue::ShortInt(n) => Some(*n as i64),
        AMQPValue::ShortUInt(n) => Some(*n as i64),
        AMQPValue::LongInt(n) => Some(*n as i64),
        AMQPValue::LongUInt(n) => Some(*n as i64),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}

fn as_string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}
