//! The broker: the only crate that links `lapin`. It declares the pipeline's queues idempotently,
//! publishes with publisher confirms (a nack or a missing confirm is an error, never ignored), and
//! consumes with manual acks. It carries messages; it decides nothing about them.
//!
//! Topology, for a prefix `p` (from config, so tests and tenants get their own names): durable
//! quorum queues `p.jobs` and `p.embeddings`, each dead-lettering to the direct exchange `p.dlx`,
//! which routes to `p.jobs.dead` / `p.embeddings.dead`. A message redelivered more than the
//! delivery limit (`x-delivery-limit`, counted by RabbitMQ) or rejected without requeue goes to its
//! dead-letter queue with the reason in its `x-death` header.
//!
//! Status: the distributed issue wires the coordinator, embedder and writer on this; reconnect with
//! backoff and graceful shutdown come with them.

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use serde::{Serialize, de::DeserializeOwned};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
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

fn amqp(action: &'static str) -> impl Fn(lapin::Error) -> BrokerError {
    move |source| BrokerError::Amqp { action, source }
}

/// The queues of one pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Jobs,
    Embeddings,
}

/// Where to connect and how to name things.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// AMQP url (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
    pub url: String,
    /// Prefix of every queue and exchange name (default `imgsearch`).
    pub prefix: String,
    /// Deliveries of one message before it is dead-lettered (default 5).
    pub delivery_limit: i64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig { url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(), prefix: "imgsearch".into(), delivery_limit: 5 }
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
    _channel: Channel,
    inner: lapin::Consumer,
}

impl Consumer {
    /// The next message; `None` when the consumer was cancelled or the connection closed.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        self.inner.next().await.map(|r| r.map(|inner| Delivery { inner }).map_err(amqp("receive")))
    }
}

impl Broker {
    /// Connects, enables publisher confirms and declares the topology (idempotent: every process
    /// declares it, whoever starts first).
    pub async fn connect(config: BrokerConfig) -> Result<Self> {
        let connection = Connection::connect(&config.url, ConnectionProperties::default())
            .await
            .map_err(|e| BrokerError::Unavailable { url: config.url.clone(), reason: e.to_string() })?;
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
        for q in [Queue::Jobs, Queue::Embeddings] {
            let (name, dead) = (self.config.queue_name(q), self.config.dead_queue_name(q));
            c.queue_declare(dead.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, quorum_args(None))
                .await
                .map_err(amqp("declare a dead-letter queue"))?;
            c.queue_bind(dead.as_str().into(), dlx.as_str().into(), name.as_str().into(), QueueBindOptions::default(), FieldTable::default())
                .await
                .map_err(amqp("bind a dead-letter queue"))?;
            c.queue_declare(name.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, quorum_args(Some((&dlx, &name, self.config.delivery_limit))))
                .await
                .map_err(amqp("declare a queue"))?;
        }
        Ok(())
    }

    /// Publishes a persistent JSON message and waits for the broker's confirm; a nack is an error.
    pub async fn publish<T: Serialize>(&self, queue: Queue, message: &T) -> Result<()> {
        let name = self.config.queue_name(queue);
        let payload = serde_json::to_vec(message).expect("messages serialize");
        self.publish_raw(&name, &payload).await
    }

    /// Publishes a batch pipelined: every message is sent, then every confirm awaited. Returns once
    /// all are confirmed; any nack fails the whole call (the caller republishes; duplicates are
    /// harmless downstream).
    pub async fn publish_batch<T: Serialize>(&self, queue: Queue, messages: &[T]) -> Result<()> {
        let name = self.config.queue_name(queue);
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            pending.push(self.send(&name, &serde_json::to_vec(m).expect("messages serialize")).await?);
        }
        for confirm in pending {
            confirmed(confirm, &name).await?;
        }
        Ok(())
    }

    /// Sends a persistent, mandatory message; the returned future resolves to the broker's confirm.
    async fn send(&self, queue_name: &str, payload: &[u8]) -> Result<lapin::PublisherConfirm> {
        let props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        self.publisher
            .basic_publish("".into(), queue_name.into(), BasicPublishOptions { mandatory: true, ..Default::default() }, payload, props)
            .await
            .map_err(amqp("publish"))
    }

    /// Publishes bytes as they are (tests use it for poison messages).
    pub async fn publish_raw(&self, queue_name: &str, payload: &[u8]) -> Result<()> {
        let confirm = self.send(queue_name, payload).await?;
        confirmed(confirm, queue_name).await
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
        Ok(Consumer { _channel: channel, inner })
    }

    /// Deletes this prefix's queues and exchange (tests clean up after themselves).
    pub async fn delete_topology(&self) -> Result<()> {
        for q in [Queue::Jobs, Queue::Embeddings] {
            for name in [self.config.queue_name(q), self.config.dead_queue_name(q)] {
                self.publisher.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await.map_err(amqp("delete a queue"))?;
            }
        }
        self.publisher.exchange_delete(self.config.dlx_name().as_str().into(), ExchangeDeleteOptions::default()).await.map_err(amqp("delete the exchange"))
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
