//! The coordinator against the real PostgreSQL and RabbitMQ on this machine: a session's jobs are
//! published once, with confirms, and marked queued. Own schema and queue prefix, removed after.

use std::path::{Path, PathBuf};

use broker::{Broker, BrokerConfig, Queue};
use catalog::{Catalog, JobStatus, Page};
use protocol::EmbedJob;

fn postgres_url() -> String {
    std::env::var("IMGSEARCH_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn shapes(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/shapes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files.iter().take(n) {
        std::fs::copy(f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    dir
}

/// A catalog in a schema of its own and a broker config with a queue prefix of its own.
async fn stores() -> (String, Catalog, BrokerConfig) {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let catalog = Catalog::connect_postgres(&postgres_url(), Some(&schema)).await.expect("PostgreSQL on 127.0.0.1:5432 (see .ci/run)");
    let cfg = BrokerConfig {
        url: std::env::var("IMGSEARCH_TEST_AMQP").unwrap_or_else(|_| BrokerConfig::default().url),
        prefix: format!("t{}", uuid::Uuid::new_v4().simple()),
        ..Default::default()
    };
    (schema, catalog, cfg)
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_jobs_are_published_once_and_marked_queued() {
    let (schema, catalog, cfg) = stores().await;
    let broker = Broker::connect(cfg).await.expect("RabbitMQ on 127.0.0.1:5672 (see .ci/run)");
    let images = shapes(30);

    let prepared = coordinator::prepare(&catalog, &[images.path().to_owned()], None, Some("dist".into()), false).await.unwrap();
    assert_eq!(prepared.jobs_created, 30);
    assert_eq!(coordinator::publish_pending(&catalog, &broker, &prepared.session).await.unwrap(), 30);
    assert_eq!(catalog.list_jobs(prepared.session.id, Some(JobStatus::Queued), Page::new(0, 1)).await.unwrap().total, 30);
    // a second run publishes nothing: the queued jobs are in the broker already
    assert_eq!(coordinator::publish_pending(&catalog, &broker, &prepared.session).await.unwrap(), 0);

    let mut consumer = broker.consume(Queue::Jobs, "test", 50).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        let d = tokio::time::timeout(std::time::Duration::from_secs(20), consumer.next()).await.unwrap().unwrap().unwrap();
        let job: EmbedJob = d.decode("job").unwrap();
        assert_eq!((job.v, job.session_id), (protocol::VERSION, prepared.session.id));
        assert!(Path::new(&job.path).starts_with(images.path().canonicalize().unwrap()), "{}", job.path);
        assert!(seen.insert(job.job_id), "each job once");
        d.ack().await.unwrap();
    }
    assert!(tokio::time::timeout(std::time::Duration::from_millis(500), consumer.next()).await.is_err(), "nothing more");

    broker.delete_topology().await.unwrap();
    catalog.drop_schema_for_tests(&schema).await;
}

/// Jobs marked queued whose messages were lost (here: never published, as if the broker
/// dead-lettered them for the deaths of their holders): with no progress for the stall time, the
/// watch publishes them again, and the session completes once they are done.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_stranded_in_queued_are_published_again_and_the_session_completes() {
    let (schema, catalog, cfg) = stores().await;
    let broker = Broker::connect(cfg.clone()).await.expect("RabbitMQ on 127.0.0.1:5672 (see .ci/run)");
    let images = shapes(12);
    let prepared = coordinator::prepare(&catalog, &[images.path().to_owned()], None, Some("stranded".into()), false).await.unwrap();
    let session = prepared.session.clone();
    let jobs = catalog.list_jobs(session.id, None, Page::new(0, 100)).await.unwrap().items;
    catalog.mark_jobs_queued(&jobs.iter().map(|j| (j.id, "lost".to_owned())).collect::<Vec<_>>()).await.unwrap();

    let shutdown = tokio_util::sync::CancellationToken::new();
    let stranded = coordinator::Stranded { broker: cfg, stall: std::time::Duration::from_millis(500) };
    let watch = tokio::spawn({
        let (catalog, shutdown) = (catalog.clone(), shutdown.clone());
        async move { coordinator::watch(&catalog, session.id, std::time::Duration::from_millis(50), &shutdown, Some(&stranded), |_| {}).await }
    });
    // an embedder and a writer in one: take each published job, record it done
    let mut consumer = broker.consume(Queue::Jobs, "test", 50).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 12 {
        let d = tokio::time::timeout(std::time::Duration::from_secs(30), consumer.next()).await.expect("the stranded jobs are published again").unwrap().unwrap();
        let job: EmbedJob = d.decode("job").unwrap();
        let done = catalog::JobResult { job_id: job.job_id, outcome: catalog::JobOutcome::Completed, processing_time_ms: Some(1), evidence: Default::default() };
        catalog.record_results(&[done]).await.unwrap();
        seen.insert(job.job_id);
        d.ack().await.unwrap();
    }
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), watch).await.expect("the watch ends").unwrap().unwrap();
    assert_eq!((ended.status, ended.processed_images), (catalog::SessionStatus::Completed, 12));

    broker.delete_topology().await.unwrap();
    catalog.drop_schema_for_tests(&schema).await;
}

/// A stalled session whose jobs still wait in the queue (the embedders are down, or the writers hold
/// their batches while a store is away) is not stranded: nothing is published twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_session_with_messages_waiting_publishes_nothing_again() {
    let (schema, catalog, cfg) = stores().await;
    let broker = Broker::connect(cfg.clone()).await.expect("RabbitMQ on 127.0.0.1:5672 (see .ci/run)");
    let images = shapes(6);
    let prepared = coordinator::prepare(&catalog, &[images.path().to_owned()], None, Some("waiting".into()), false).await.unwrap();
    let session = prepared.session.clone();
    let published = coordinator::publish_pending(&catalog, &broker, &session).await.unwrap();
    assert_eq!(published, 6);

    let shutdown = tokio_util::sync::CancellationToken::new();
    let stranded = coordinator::Stranded { broker: cfg.clone(), stall: std::time::Duration::from_millis(100) };
    let rounds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = tokio::spawn({
        let (catalog, shutdown, rounds) = (catalog.clone(), shutdown.clone(), rounds.clone());
        async move {
            coordinator::watch(&catalog, session.id, std::time::Duration::from_millis(20), &shutdown, Some(&stranded), |_| {
                rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
            .await
        }
    });
    // well past the stall time, in rounds of the watch
    while rounds.load(std::sync::atomic::Ordering::SeqCst) < 30 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    watch.await.unwrap().unwrap();
    assert_eq!(broker.queue_depth(&cfg.queue_name(Queue::Jobs)).await.unwrap(), 6, "the six jobs once each, none published again");

    broker.delete_topology().await.unwrap();
    catalog.drop_schema_for_tests(&schema).await;
}
