//! The broker against the RabbitMQ on this machine (IMGSEARCH_TEST_AMQP, default guest@127.0.0.1).
//! Each test uses its own queue prefix and deletes its queues at the end.

use broker::{Broker, BrokerConfig, BrokerError, ControlAction, Queue};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Msg {
    n: u32,
}

fn config() -> BrokerConfig {
    BrokerConfig {
        url: std::env::var("IMGSEARCH_TEST_AMQP").unwrap_or_else(|_| BrokerConfig::default().url),
        prefix: format!("t{}", uuid::Uuid::new_v4().simple()),
        delivery_backstop: 2,
        ..Default::default()
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
        b.publish(Queue::Jobs, &Msg { n }, None).await.unwrap();
    }
    b.publish_batch(Queue::Jobs, &(20..50).map(|n| (Msg { n }, None)).collect::<Vec<_>>()).await.unwrap();
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
async fn a_message_returned_past_the_backstop_is_dead_lettered_by_rabbitmq() {
    let cfg = config();
    let b = Broker::connect(cfg.clone()).await.unwrap();
    b.publish(Queue::Embeddings, &Msg { n: 7 }, Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")).await.unwrap();
    let mut c = b.consume(Queue::Embeddings, "test", 1).await.unwrap();
    // delivered, retried twice (the backstop), then RabbitMQ moves it to the dead-letter queue
    for attempt in 0..3 {
        let d = next(&mut c).await;
        assert_eq!(d.redelivered(), attempt > 0);
        assert_eq!(d.delivery_count(), attempt, "x-delivery-count counts the earlier deliveries");
        assert_eq!(d.traceparent().as_deref(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), "the trace context rides along");
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
    b.publish(Queue::Jobs, &Msg { n: 1 }, None).await.unwrap();
    let mut c = b.consume(Queue::Jobs, "test", 5).await.unwrap();
    let poison = next(&mut c).await;
    let err = poison.decode::<Msg>("job").unwrap_err();
    assert!(matches!(err, BrokerError::Malformed { .. }) && err.to_string().starts_with("message is not a valid job"), "{err}");
    b.dead_letter(Queue::Jobs, &poison, &err.to_string()).await.unwrap();
    // the good message behind it is not lost
    let good = next(&mut c).await;
    assert_eq!(good.decode::<Msg>("job").unwrap(), Msg { n: 1 });
    good.ack().await.unwrap();
    let mut dead = b.consume_named(&cfg.dead_queue_name(Queue::Jobs), "dead", 1).await.unwrap();
    let d = next(&mut dead).await;
    assert_eq!(d.data(), b"{not json");
    assert!(d.dead_letter_reason().unwrap().starts_with("message is not a valid job"), "{:?}", d.dead_letter_reason());
    // nothing is left in the jobs queue: the poison was acked once it was safely dead-lettered
    drop(c);
    assert_eq!(b.queue_depth(&cfg.queue_name(Queue::Jobs)).await.unwrap(), 0);
    b.delete_topology().await.unwrap();
}

#[tokio::test]
async fn a_session_control_reaches_every_listener() {
    let cfg = config();
    let b = Broker::connect(cfg.clone()).await.unwrap();
    let (one, two) = (Broker::connect(cfg.clone()).await.unwrap(), Broker::connect(cfg.clone()).await.unwrap());
    let mut l1 = one.subscribe_control("one").await.unwrap();
    let mut l2 = two.subscribe_control("two").await.unwrap();
    b.publish_control("s-1", ControlAction::Cancel).await.unwrap();
    for l in [&mut l1, &mut l2] {
        let got = tokio::time::timeout(std::time::Duration::from_secs(20), l.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(got, ("s-1".to_string(), ControlAction::Cancel));
    }
    b.delete_topology().await.unwrap();
}

#[tokio::test]
async fn connect_with_backoff_waits_for_the_broker_and_stops_on_shutdown() {
    // nothing listens: it keeps trying until shutdown, then gives up quietly
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = BrokerConfig { url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"), ..config() };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        stop.cancel();
    });
    let started = std::time::Instant::now();
    assert!(broker::connect_with_backoff(&cfg, &shutdown).await.is_none());
    assert!(started.elapsed() >= std::time::Duration::from_millis(600), "it retried until the shutdown");
    // with the broker there, it connects
    let ok = broker::connect_with_backoff(&config(), &tokio_util::sync::CancellationToken::new()).await.unwrap().unwrap();
    ok.delete_topology().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_broker_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = BrokerConfig { url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"), ..config() };
    let err = Broker::connect(cfg).await.err().expect("no broker there");
    assert!(matches!(err, BrokerError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("check that RabbitMQ is running"), "{err}");
}
