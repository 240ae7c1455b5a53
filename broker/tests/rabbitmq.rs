//! The broker against the RabbitMQ on this machine (IMGSEARCH_TEST_AMQP, default guest@127.0.0.1).
//! Each test uses its own queue prefix and deletes its queues at the end.

use broker::{Broker, BrokerConfig, BrokerError, Queue};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Msg {
    n: u32,
}

fn config() -> BrokerConfig {
    BrokerConfig {
        url: std::env::var("IMGSEARCH_TEST_AMQP").unwrap_or_else(|_| BrokerConfig::default().url),
        prefix: format!("t{}", uuid::Uuid::new_v4().simple()),
        delivery_limit: 2,
    }
}

async fn next(c: &mut broker::Consumer) -> broker::Delivery {
    tokio::time::timeout(std::time::Duration::from_secs(20), c.next()).await.expect("a message within 20 s").expect("consumer open").unwrap()
}

#[tokio::test]
async fn confirmed_messages_arrive_once_and_acked_ones_are_gone() {
    let cfg = config();
    let b = Broker::connect(cfg.clone()).await.unwrap();
    // a second process declaring the same topology is fine
    let other = Broker::connect(cfg.clone()).await.unwrap();
    for n in 0..20 {
        b.publish(Queue::Jobs, &Msg { n }).await.unwrap();
    }
    b.publish_batch(Queue::Jobs, &(20..50).map(|n| Msg { n }).collect::<Vec<_>>()).await.unwrap();
    let mut c = other.consume(Queue::Jobs, "test", 10).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..50 {
        let d = next(&mut c).await;
        seen.push(d.decode::<Msg>("test message").unwrap().n);
        d.ack().await.unwrap();
    }
    assert_eq!(seen, (0..50).collect::<Vec<_>>(), "in order, each once");
    // nothing left: a fresh consumer sees nothing
    let mut again = b.consume(Queue::Jobs, "again", 10).await.unwrap();
    assert!(tokio::time::timeout(std::time::Duration::from_millis(500), again.next()).await.is_err(), "the queue is empty");
    b.delete_topology().await.unwrap();
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_dead_lettered_after_the_delivery_limit() {
    let cfg = config();
    let b = Broker::connect(cfg.clone()).await.unwrap();
    b.publish(Queue::Embeddings, &Msg { n: 7 }).await.unwrap();
    let mut c = b.consume(Queue::Embeddings, "test", 1).await.unwrap();
    // delivered, retried twice (the limit), then RabbitMQ moves it to the dead-letter queue
    for attempt in 0..3 {
        let d = next(&mut c).await;
        assert_eq!(d.redelivered(), attempt > 0);
        d.retry().await.unwrap();
    }
    let mut dead = b.consume_named(&cfg.dead_queue_name(Queue::Embeddings), "dead", 1).await.unwrap();
    let d = next(&mut dead).await;
    assert_eq!(d.decode::<Msg>("test message").unwrap(), Msg { n: 7 });
    d.ack().await.unwrap();
    b.delete_topology().await.unwrap();
}

#[tokio::test]
async fn a_poison_message_goes_straight_to_the_dead_letter_queue() {
    let cfg = config();
    let b = Broker::connect(cfg.clone()).await.unwrap();
    b.publish_raw(&cfg.queue_name(Queue::Jobs), b"{not json").await.unwrap();
    b.publish(Queue::Jobs, &Msg { n: 1 }).await.unwrap();
    let mut c = b.consume(Queue::Jobs, "test", 5).await.unwrap();
    let poison = next(&mut c).await;
    let err = poison.decode::<Msg>("job").unwrap_err();
    assert!(matches!(err, BrokerError::Malformed { .. }) && err.to_string().starts_with("message is not a valid job"), "{err}");
    poison.dead_letter().await.unwrap();
    // the good message behind it is not lost
    let good = next(&mut c).await;
    assert_eq!(good.decode::<Msg>("job").unwrap(), Msg { n: 1 });
    good.ack().await.unwrap();
    let mut dead = b.consume_named(&cfg.dead_queue_name(Queue::Jobs), "dead", 1).await.unwrap();
    assert_eq!(next(&mut dead).await.data(), b"{not json");
    b.delete_topology().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_broker_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = BrokerConfig { url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"), ..config() };
    let err = Broker::connect(cfg).await.err().expect("no broker there");
    assert!(matches!(err, BrokerError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("check that RabbitMQ is running"), "{err}");
}
