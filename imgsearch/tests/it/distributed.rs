//! The distributed pipeline as an operator runs it: `imgsearch coordinator`, `embedder` and `writer`
//! as separate processes against the machine's RabbitMQ and PostgreSQL and the Qdrant gRPC test
//! fixture. Each test has its own database schema, queue prefix and Qdrant data, removed after.
//!
//! The tests run one at a time (`SERIAL`): one of them closes every connection of the broker.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use broker::{Broker, BrokerConfig, Queue};
use catalog::{Catalog, JobStatus, Page};
use qdrant_fixture::QdrantFixture;
use uuid::Uuid;
use vectors::{DEFAULT_COLLECTION, PointFilter, VectorStore};

use crate::fixtures;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn postgres_url() -> String {
    std::env::var("IMGSEARCH_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn amqp_url() -> String {
    std::env::var("IMGSEARCH_TEST_AMQP").unwrap_or_else(|_| BrokerConfig::default().url)
}

/// `n` images: the 240 held-out shapes copied into sub-folders until there are `n`.
fn images(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut shapes: Vec<PathBuf> = std::fs::read_dir(fixtures().join("shapes")).unwrap().map(|e| e.unwrap().path()).collect();
    shapes.sort();
    for i in 0..n {
        let sub = dir.path().join(format!("set{}", i / shapes.len()));
        std::fs::create_dir_all(&sub).unwrap();
        let src = &shapes[i % shapes.len()];
        std::fs::copy(src, sub.join(src.file_name().unwrap())).unwrap();
    }
    dir
}

/// One test's own stores and names, and the processes it started (killed when it ends).
struct Cluster {
    schema: String,
    prefix: String,
    qdrant: Option<QdrantFixture>,
    catalog: Catalog,
    vectors: VectorStore,
    logs: tempfile::TempDir,
    _qdrant_dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
    /// Set once `cleanup` removed the schema and queues; else `Drop` does it (a failed test).
    cleaned: bool,
    /// More environment for every process this test starts.
    extra_env: Vec<(String, String)>,
}

/// A started role: its process and where its stderr goes.
struct Role {
    name: String,
    log: PathBuf,
}

impl Cluster {
    async fn start() -> Cluster {
        let schema = format!("t_{}", Uuid::new_v4().simple());
        let prefix = format!("t{}", Uuid::new_v4().simple());
        let qdrant_dir = tempfile::tempdir().unwrap();
        let qdrant = QdrantFixture::start(qdrant_dir.path()).await.unwrap();
        let catalog = Catalog::connect_postgres(&postgres_url(), Some(&schema)).await.expect("PostgreSQL on 127.0.0.1:5432 (see .ci/run)");
        let vectors = VectorStore::server(&qdrant.url()).unwrap();
        Cluster {
            schema,
            prefix,
            qdrant: Some(qdrant),
            catalog,
            vectors,
            logs: tempfile::tempdir().unwrap(),
            _qdrant_dir: qdrant_dir,
            children: Vec::new(),
            cleaned: false,
            extra_env: Vec::new(),
        }
    }

    fn broker_config(&self) -> BrokerConfig {
        BrokerConfig { url: amqp_url(), prefix: self.prefix.clone(), ..Default::default() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgsearch"));
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            cmd.env("ORT_DYLIB_PATH", Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-ort/libonnxruntime.so"));
        }
        cmd.env("IMGSEARCH__CATALOG__URL", postgres_url())
            .env("IMGSEARCH__CATALOG__SCHEMA", &self.schema)
            .env("IMGSEARCH__VECTORS__QDRANT_URL", self.qdrant.as_ref().unwrap().url())
            .env("IMGSEARCH__BROKER__URL", amqp_url())
            .env("IMGSEARCH__BROKER__PREFIX", &self.prefix)
            .env("IMGSEARCH__MODEL__NAME", fixtures().join("models/tiny-clip"))
            .env("IMGSEARCH__COORDINATOR__METRICS_ADDR", "127.0.0.1:0")
            .env("IMGSEARCH__EMBEDDER__METRICS_ADDR", "127.0.0.1:0")
            .env("IMGSEARCH__WRITER__METRICS_ADDR", "127.0.0.1:0")
            .env("IMGSEARCH__COORDINATOR__PROGRESS_INTERVAL_MS", "200")
            .env("IMGSEARCH__EMBEDDER__BATCH_SIZE", "16")
            .env("IMGSEARCH__EMBEDDER__DECODE_THREADS", "1")
            .env("IMGSEARCH__WRITER__BATCH_SIZE", "64")
            .env("IMGSEARCH_LOG", "info,qdrant_edge=error,lapin=error")
            .env_remove("FAILPOINTS")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .args(args);
        cmd
    }

    /// Starts `imgsearch <role>` in the background; `failpoints` as the `fail` crate reads them.
    fn spawn(&mut self, name: &str, role: &str, failpoints: Option<&str>) -> Role {
        let log = self.logs.path().join(format!("{name}.log"));
        let mut cmd = self.command(&[role]);
        if let Some(f) = failpoints {
            cmd.env("FAILPOINTS", f);
        }
        let child = cmd.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().expect("start imgsearch");
        self.children.push((name.to_owned(), child));
        Role { name: name.to_owned(), log }
    }

    fn child(&mut self, role: &Role) -> &mut Child {
        &mut self.children.iter_mut().find(|(n, _)| *n == role.name).expect("a started role").1
    }

    /// Starts `imgsearch <args>` in the background (a coordinator with its folder).
    fn spawn_args(&mut self, name: &str, args: &[&str]) -> Role {
        let log = self.logs.path().join(format!("{name}.log"));
        let child = self.command(args).stdout(Stdio::piped()).stderr(std::fs::File::create(&log).unwrap()).spawn().expect("start imgsearch");
        self.children.push((name.to_owned(), child));
        Role { name: name.to_owned(), log }
    }

    /// Whether the role's process has exited.
    fn exited(&mut self, role: &Role) -> bool {
        self.child(role).try_wait().unwrap().is_some()
    }

    /// SIGKILL: no cleanup, no goodbye to the broker.
    fn kill9(&mut self, role: &Role) {
        let child = self.child(role);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then waits (at most `within`) for a clean exit.
    async fn terminate(&mut self, role: &Role, within: Duration) -> std::process::ExitStatus {
        let child = self.child(role);
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child(role).try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < within, "{} did not stop within {within:?} of SIGTERM:\n{}", role.name, role.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the coordinator to the end (or to publishing, with `--no-wait`) and returns its JSON summary.
    fn coordinate(&self, dir: &Path, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["coordinator", dir.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let out = self.command(&args).output().unwrap();
        assert!(out.status.success(), "coordinator: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    async fn jobs(&self, session: i64, status: JobStatus) -> i64 {
        self.catalog.list_jobs(session, Some(status), Page::new(0, 1)).await.unwrap().total
    }

    /// Waits until the session has `n` completed jobs (at most `within`).
    async fn wait_completed(&self, session: i64, n: i64, within: Duration, roles: &[&Role]) {
        let started = Instant::now();
        loop {
            let done = self.jobs(session, JobStatus::Completed).await;
            if done >= n {
                return;
            }
            if started.elapsed() > within {
                let logs: Vec<String> = roles.iter().map(|r| format!("--- {}\n{}", r.name, r.log_text())).collect();
                panic!("{done} of {n} jobs completed after {within:?}\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn vector_count(&self) -> u64 {
        self.vectors.count(DEFAULT_COLLECTION, &PointFilter::default()).await.unwrap()
    }

    /// Asserts what a user checks after a run: the catalog, the vector store and the jobs agree
    /// with the images, each asset exactly once.
    async fn assert_exactly_once(&self, session: i64, images: usize) {
        let n = images as i64;
        assert_eq!(self.jobs(session, JobStatus::Completed).await, n, "completed jobs == images");
        for s in [JobStatus::Failed, JobStatus::Pending, JobStatus::Queued, JobStatus::Running] {
            assert_eq!(self.jobs(session, s).await, 0, "no job left {s:?}");
        }
        let evidence = self.catalog.evidence_for_session(session, Page::new(0, 1)).await.unwrap().total;
        assert_eq!(evidence, n, "one evidence row per asset");
        let ids: Vec<i64> = self.vectors.scroll_ids(DEFAULT_COLLECTION).await.unwrap();
        let unique: HashSet<i64> = ids.iter().copied().collect();
        assert_eq!((ids.len(), unique.len()), (images, images), "one point per asset");
        let assets = self.catalog.assets_by_ids(&ids).await.unwrap();
        assert_eq!(assets.len(), images, "every point is an asset of the catalog");
        assert!(assets.iter().all(|a| a.indexed_at.is_some()), "every asset is marked indexed");
        let session = self.catalog.get_session(session).await.unwrap();
        assert_eq!(session.processed_images, n, "the session's counter");
    }

    async fn broker(&self) -> Broker {
        Broker::connect(self.broker_config()).await.expect("RabbitMQ on 127.0.0.1:5672 (see .ci/run)")
    }

    async fn cleanup(mut self) {
        self.kill_all();
        remove_stores(self.broker_config(), self.schema.clone()).await;
        self.qdrant.take().unwrap().stop().await;
        self.cleaned = true;
    }

    fn kill_all(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn remove_stores(broker: BrokerConfig, schema: String) {
    if let Ok(b) = Broker::connect(broker).await {
        let _ = b.delete_topology().await;
    }
    if let Ok(admin) = Catalog::connect_postgres(&postgres_url(), None).await {
        admin.drop_schema_for_tests(&schema).await;
    }
}

/// A test that failed midway still leaves no process, schema or queue behind.
impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        if !self.cleaned {
            let (broker, schema) = (self.broker_config(), self.schema.clone());
            let _ = std::thread::spawn(move || tokio::runtime::Runtime::new().unwrap().block_on(remove_stores(broker, schema))).join();
        }
    }
}

impl Role {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a line in the role's stderr (at most `within`).
    async fn wait_for(&self, needle: &str, within: Duration) {
        let started = Instant::now();
        while !self.log_text().contains(needle) {
            assert!(started.elapsed() < within, "{} never said {needle:?}:\n{}", self.name, self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The role's metrics endpoint, from its start line.
    async fn metrics(&self) -> String {
        self.wait_for("/metrics", Duration::from_secs(60)).await;
        let text = self.log_text();
        let url = text.split_whitespace().find(|w| w.starts_with("http://") && w.ends_with("/metrics;")).unwrap().trim_end_matches(';').to_owned();
        tokio::task::spawn_blocking(move || ureq::get(&url).call().unwrap().into_body().read_to_string().unwrap()).await.unwrap()
    }

    /// The value of one sample (`name{labels}`) in the role's metrics; 0 when absent.
    async fn metric(&self, sample: &str) -> f64 {
        self.metrics().await.lines().find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
    }
}

fn session_of(summary: &serde_json::Value) -> i64 {
    summary["sessionId"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_embedders_and_two_writers_index_2000_images_exactly_once() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start().await;
    let dir = images(2000);
    let roles: Vec<Role> = vec![
        cluster.spawn("embedder-a", "embedder", None),
        cluster.spawn("embedder-b", "embedder", None),
        cluster.spawn("writer-a", "writer", None),
        cluster.spawn("writer-b", "writer", None),
    ];
    // a poison message waits in the jobs queue before the first job
    let broker = cluster.broker().await;
    broker.publish_raw(&cluster.broker_config().queue_name(Queue::Jobs), b"{\"not\": \"a job\"}").await.unwrap();

    let summary = cluster.coordinate(dir.path(), &[]);
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(
        (summary["jobsCreated"].as_u64(), summary["published"].as_u64(), summary["completed"].as_u64(), summary["failed"].as_u64()),
        (Some(2000), Some(2000), Some(2000), Some(0))
    );
    let session = session_of(&summary);
    cluster.assert_exactly_once(session, 2000).await;
    assert_eq!(cluster.vector_count().await, 2000);

    // both embedders took a share; the writers wrote each job once between them
    let embedded_a = roles[0].metric("imgsearch_embedder_jobs_acked_total{outcome=\"embedded\"}").await;
    let embedded_b = roles[1].metric("imgsearch_embedder_jobs_acked_total{outcome=\"embedded\"}").await;
    assert!(embedded_a > 0.0 && embedded_b > 0.0, "each embedder embedded some: {embedded_a} + {embedded_b}");
    assert_eq!(embedded_a + embedded_b, 2000.0);
    let written =
        roles[2].metric("imgsearch_writer_jobs_written_total{outcome=\"completed\"}").await + roles[3].metric("imgsearch_writer_jobs_written_total{outcome=\"completed\"}").await;
    assert_eq!(written, 2000.0);
    assert!(roles[0].metrics().await.contains("imgsearch_embedder_batches_total{reason=\"size\"}"), "flush reasons are labelled");

    // the poison message is in the dead-letter queue with its reason
    let mut dead = broker.consume_named(&cluster.broker_config().dead_queue_name(Queue::Jobs), "test", 1).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), dead.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(d.data(), b"{\"not\": \"a job\"}");
    let reason = d.dead_letter_reason().unwrap();
    assert!(reason.starts_with("malformed: message is not a valid embed job"), "{reason}");
    d.ack().await.unwrap();

    // a second coordinator run of the same folder publishes nothing
    let again = cluster.coordinate(dir.path(), &["--no-wait"]);
    assert_eq!((again["jobsCreated"].as_u64(), again["published"].as_u64()), (Some(0), Some(0)), "{again}");

    // SIGTERM: each role stops cleanly
    for r in &roles {
        let status = cluster.terminate(r, Duration::from_secs(30)).await;
        assert!(status.success(), "{} exited with {status}:\n{}", r.name, r.log_text());
        assert!(r.log_text().contains("stopped:"), "{}", r.log_text());
    }
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_killed_mid_batch_and_between_upsert_and_ack_lose_and_duplicate_nothing() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start().await;
    let dir = images(300);
    // an embedder that stops after its first inference, before publishing anything
    let embedder_a = cluster.spawn("embedder-a", "embedder", Some("embedder.after_inference=1*return"));
    let summary = cluster.coordinate(dir.path(), &["--no-wait"]);
    let session = session_of(&summary);
    assert_eq!(summary["published"].as_u64(), Some(300));
    embedder_a.wait_for("failpoint embedder.after_inference reached", Duration::from_secs(60)).await;
    cluster.kill9(&embedder_a);

    // a writer that stops after its first upsert, before the catalog commit and the ack
    let writer_a = cluster.spawn("writer-a", "writer", Some("writer.after_upsert=1*return"));
    let embedder_b = cluster.spawn("embedder-b", "embedder", None);
    writer_a.wait_for("failpoint writer.after_upsert reached", Duration::from_secs(60)).await;
    let upserted = cluster.vector_count().await;
    assert!(upserted > 0, "the killed writer's batch reached the vector store");
    assert_eq!(cluster.jobs(session, JobStatus::Completed).await, 0, "and nothing reached the catalog");
    cluster.kill9(&writer_a);

    let writer_b = cluster.spawn("writer-b", "writer", None);
    cluster.wait_completed(session, 300, Duration::from_secs(180), &[&embedder_b, &writer_b]).await;
    cluster.assert_exactly_once(session, 300).await;
    // the jobs the first embedder held and the results the first writer held came again
    assert!(embedder_b.metric("imgsearch_embedder_jobs_consumed_total").await >= 300.0);
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_reconnect_after_the_broker_drops_every_connection_and_sigterm_drains() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start().await;
    let dir = images(720);
    let embedder_a = cluster.spawn("embedder-a", "embedder", None);
    let embedder_b = cluster.spawn("embedder-b", "embedder", None);
    let writer = cluster.spawn("writer", "writer", None);
    let summary = cluster.coordinate(dir.path(), &["--no-wait"]);
    let session = session_of(&summary);

    cluster.wait_completed(session, 100, Duration::from_secs(120), &[&embedder_a, &embedder_b, &writer]).await;
    let out = Command::new("rabbitmqctl").args(["close_all_connections", "test: broker connection drop"]).output().expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl: {}", String::from_utf8_lossy(&out.stderr));

    // one embedder is told to stop midway: it finishes its batch and exits cleanly
    cluster.wait_completed(session, 300, Duration::from_secs(120), &[&embedder_a, &embedder_b, &writer]).await;
    let status = cluster.terminate(&embedder_a, Duration::from_secs(30)).await;
    assert!(status.success(), "{}", embedder_a.log_text());

    cluster.wait_completed(session, 720, Duration::from_secs(180), &[&embedder_b, &writer]).await;
    cluster.assert_exactly_once(session, 720).await;
    assert!(writer.metric("imgsearch_writer_reconnects_total").await >= 1.0, "{}", writer.log_text());
    assert!(embedder_b.metric("imgsearch_embedder_reconnects_total").await >= 1.0, "{}", embedder_b.log_text());
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_session_is_dropped_by_the_embedders_and_leaves_no_vectors() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start().await;
    let dir = images(480);
    // the jobs wait in the queue: no embedder yet
    let summary = cluster.coordinate(dir.path(), &["--no-wait"]);
    let session = session_of(&summary);
    // a slow embedder (300 ms more per batch of 16), so the cancel lands midway
    let embedder = cluster.spawn("embedder", "embedder", Some("embedder.after_inference=sleep(300)"));
    embedder.wait_for("consuming", Duration::from_secs(60)).await;
    let writer = cluster.spawn("writer", "writer", None);
    // cancel as soon as the first results are in
    cluster.wait_completed(session, 1, Duration::from_secs(60), &[&embedder, &writer]).await;
    let broker = cluster.broker().await;
    let cancelled = coordinator::stop_session(&cluster.catalog, &broker, session, true).await.unwrap();
    assert_eq!(cancelled.status, catalog::SessionStatus::Cancelled);

    // the queue drains without work: every job is acked, the late ones dropped
    let started = Instant::now();
    while broker.queue_depth(&cluster.broker_config().queue_name(Queue::Jobs)).await.unwrap() > 0
        || broker.queue_depth(&cluster.broker_config().queue_name(Queue::Embeddings)).await.unwrap() > 0
    {
        assert!(started.elapsed() < Duration::from_secs(60), "the queues did not drain");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let completed = cluster.jobs(session, JobStatus::Completed).await;
    let cancelled = cluster.jobs(session, JobStatus::Cancelled).await;
    assert_eq!(completed + cancelled, 480, "every job is completed or cancelled");
    assert!(cancelled > 0, "the cancel came before the end");
    assert!(embedder.metric("imgsearch_embedder_jobs_acked_total{outcome=\"dropped\"}").await > 0.0, "{}", embedder.log_text());
    assert_eq!(cluster.vector_count().await as i64, completed, "no vector for a cancelled job");
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_keeps_failing_for_a_transient_reason_is_recorded_failed_and_dead_lettered() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start().await;
    let dir = images(60);
    let summary = cluster.coordinate(dir.path(), &["--no-wait"]);
    let session = session_of(&summary);
    // three files vanish after their jobs were published: reading them fails (I/O, transient)
    let gone = ["set0/blue-circle-00.jpg", "set0/blue-circle-01.jpg", "set0/blue-circle-02.png"];
    for f in gone {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    let embedder = cluster.spawn("embedder", "embedder", None);
    let writer = cluster.spawn("writer", "writer", None);
    cluster.wait_completed(session, 57, Duration::from_secs(120), &[&embedder, &writer]).await;
    let started = Instant::now();
    while cluster.jobs(session, JobStatus::Failed).await < 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "the failures were not recorded:\n{}", embedder.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // each was tried up to the attempt limit (5), then failed with its reason
    assert_eq!(embedder.metric("imgsearch_embedder_jobs_retried_total").await, 3.0 * 4.0);
    let failed = cluster.catalog.list_jobs(session, Some(JobStatus::Failed), Page::new(0, 10)).await.unwrap();
    for job in &failed.items {
        let error = job.error_message.as_deref().unwrap_or_default();
        assert!(error.starts_with("io: cannot read image"), "{error}");
    }
    let broker = cluster.broker().await;
    let mut dead = broker.consume_named(&cluster.broker_config().dead_queue_name(Queue::Jobs), "test", 5).await.unwrap();
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(10), dead.next()).await.unwrap().unwrap().unwrap();
        assert!(d.dead_letter_reason().unwrap().starts_with("io: cannot read image"), "{:?}", d.dead_letter_reason());
        d.ack().await.unwrap();
    }
    // the coordinator, run again, finds nothing to publish and sees the session complete
    let again = cluster.coordinate(dir.path(), &[]);
    assert_eq!(
        (again["status"].as_str(), again["published"].as_u64(), again["completed"].as_u64(), again["failed"].as_u64()),
        (Some("completed"), Some(0), Some(57), Some(3)),
        "{again}"
    );
    assert_eq!(cluster.vector_count().await, 57);
    cluster.cleanup().await;
}

/// `imgsearch serve --config` of the cluster: the API of the distributed wiring. Returns its base URL.
/// Its stderr goes to `serve.log` with the roles' logs.
fn serve(cluster: &mut Cluster, allow_root: &Path) -> String {
    let config = cluster.logs.path().join("imgsearch.toml");
    std::fs::write(&config, "# everything from the IMGSEARCH__ environment\n").unwrap();
    let log = cluster.logs.path().join("serve.log");
    let child = cluster
        .command(&["serve", "--addr", "127.0.0.1:0", "--config", config.to_str().unwrap(), "--allow-root", allow_root.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start imgsearch serve");
    cluster.children.push(("serve".into(), child));
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(base) = text.lines().find_map(|l| l.strip_prefix("serving ")).and_then(|rest| rest.split_whitespace().next()) {
            return base.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "serve did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn call(method: &str, url: String) -> serde_json::Value {
    let method = method.to_owned();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut resp = match method.as_str() {
            "GET" => agent.get(&url).call().unwrap(),
            _ => agent.post(&url).send_empty().unwrap(),
        };
        let text = resp.body_mut().read_to_string().unwrap();
        let status = resp.status().as_u16();
        assert!(status < 300, "{method} {url}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    })
    .await
    .unwrap()
}

async fn post_json(url: String, body: serde_json::Value) -> serde_json::Value {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut resp = agent.post(&url).header("content-type", "application/json").send(body.to_string()).unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        assert!(resp.status().as_u16() < 300, "POST {url}: {text}");
        serde_json::from_str(&text).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_runs_a_session_on_the_workers_and_pause_reaches_them() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start().await;
    let dir = images(480);
    let base = serve(&mut cluster, dir.path());
    // a slow embedder (200 ms more per batch of 16), so the pause lands midway
    let embedder = cluster.spawn("embedder", "embedder", Some("embedder.after_inference=sleep(200)"));
    let writer = cluster.spawn("writer", "writer", None);
    embedder.wait_for("consuming", Duration::from_secs(60)).await;

    let created = post_json(format!("{base}/api/v1/training/sessions"), serde_json::json!({"name": "shapes", "rootPath": dir.path()})).await;
    let session = created["id"].as_i64().unwrap();
    let id = session;
    let started = call("POST", format!("{base}/api/v1/training/sessions/{id}/start")).await;
    assert_eq!(started["status"], "running", "{started}");

    cluster.wait_completed(session, 50, Duration::from_secs(60), &[&embedder, &writer]).await;
    let paused = call("POST", format!("{base}/api/v1/training/sessions/{id}/pause")).await;
    assert_eq!(paused["status"], "paused", "{paused}");
    // the embedder drops the paused session's queued jobs: progress stops short of the end
    let started_wait = Instant::now();
    while broker_depth(&cluster).await > 0 {
        assert!(started_wait.elapsed() < Duration::from_secs(60), "the jobs queue did not drain");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_pause = cluster.jobs(session, JobStatus::Completed).await;
    assert!(at_pause < 480, "the pause came before the end");
    assert!(embedder.metric("imgsearch_embedder_jobs_acked_total{outcome=\"dropped\"}").await > 0.0, "{}", embedder.log_text());

    // start again: the dropped jobs are published again and the session completes, each once
    let resumed = call("POST", format!("{base}/api/v1/training/sessions/{id}/start")).await;
    assert_eq!(resumed["status"], "running", "{resumed}");
    let started_wait = Instant::now();
    loop {
        let p = call("GET", format!("{base}/api/v1/training/sessions/{id}/progress")).await;
        if p["status"] == "completed" {
            assert_eq!((p["processedImages"].as_i64(), p["progress"]["percentage"].as_f64()), (Some(480), Some(100.0)), "{p}");
            break;
        }
        assert!(started_wait.elapsed() < Duration::from_secs(120), "not completed: {p}\n{}", embedder.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.assert_exactly_once(session, 480).await;

    // search answers from the Qdrant server, hydrated from PostgreSQL
    let found = post_json(format!("{base}/api/v1/search"), serde_json::json!({"query": "a red circle", "limit": 5})).await;
    let results = found["results"].as_array().unwrap();
    assert_eq!(results.len(), 5, "{found}");
    assert!(results.iter().all(|r| r["asset"]["path"].as_str().unwrap().contains("red-circle")), "{found}");
    cluster.cleanup().await;
}

async fn broker_depth(cluster: &Cluster) -> u32 {
    let b = cluster.broker().await;
    let n = b.queue_depth(&cluster.broker_config().queue_name(Queue::Jobs)).await.unwrap();
    b.close().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn an_assets_trace_runs_from_the_coordinator_through_the_embedder_to_the_result() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start().await;
    // tracing on: an OTLP endpoint where nothing listens (spans are made, their export fails quietly)
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    cluster.extra_env.push(("IMGSEARCH__TELEMETRY__OTLP_ENDPOINT".into(), format!("http://127.0.0.1:{closed}")));
    let dir = images(20);
    cluster.coordinate(dir.path(), &["--no-wait"]);

    // each job carries a trace of its own
    let broker = cluster.broker().await;
    let mut jobs = broker.consume(Queue::Jobs, "test", 20).await.unwrap();
    let mut taken = Vec::new();
    for _ in 0..20 {
        taken.push(tokio::time::timeout(Duration::from_secs(10), jobs.next()).await.unwrap().unwrap().unwrap());
    }
    // no more deliveries to this consumer: the copies put back below must reach the embedder
    // fresh, not come here and be given back as returned
    jobs.cancel().await.unwrap();
    let mut traces = std::collections::HashMap::new();
    for d in taken {
        let job: protocol::EmbedJob = d.decode("job").unwrap();
        let tp = d.traceparent().expect("a job carries its trace context");
        traces.insert(job.job_id, tp.clone());
        // put it back as it was, for the embedder
        broker.publish(Queue::Jobs, &job, Some(&tp)).await.unwrap();
        d.ack().await.unwrap();
    }
    let ids: HashSet<&str> = traces.values().map(|t| broker::trace::trace_id(t).unwrap()).collect();
    assert_eq!(ids.len(), 20, "one trace per asset");
    jobs.close().await.unwrap();

    // the embedder's result continues the job's trace, from a span of its own
    let embedder = cluster.spawn("embedder", "embedder", None);
    let mut results = broker.consume(Queue::Embeddings, "test", 50).await.unwrap();
    let mut seen = 0;
    while seen < 20 {
        let d = tokio::time::timeout(Duration::from_secs(60), results.next()).await.unwrap_or_else(|_| panic!("{}", embedder.log_text())).unwrap().unwrap();
        let protocol::Report::Result(result) = d.decode("report").unwrap() else {
            // a batch's `started` report: no job's trace
            d.ack().await.unwrap();
            continue;
        };
        seen += 1;
        let tp = d.traceparent().expect("a result carries its trace context");
        let job_tp = &traces[&result.job_id];
        assert_eq!(broker::trace::trace_id(&tp), broker::trace::trace_id(job_tp), "the same trace as the job");
        assert_ne!(&tp, job_tp, "from the embedder's own span");
        d.ack().await.unwrap();
    }
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_manage_the_distributed_stores_from_the_command_line() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start().await;
    let dir = images(300);
    let embedder = cluster.spawn("embedder", "embedder", None);
    let writer = cluster.spawn("writer", "writer", None);
    let summary = cluster.coordinate(dir.path(), &[]);
    assert_eq!(summary["completed"].as_u64(), Some(300), "{summary}");
    let config = cluster.logs.path().join("imgsearch.toml");
    std::fs::write(&config, "# everything from the IMGSEARCH__ environment\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let vectors = |args: &[&str]| {
        let mut all = vec!["vectors"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", &config, "--json"]);
        let out = cluster.command(&all).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let set1 = dir.path().canonicalize().unwrap().join("set1");
    let d = vectors(&["delete", "--dir", set1.to_str().unwrap(), "--yes"]);
    assert_eq!((d["deletedVectors"].as_u64(), d["assetsUpdated"].as_u64()), (Some(60), Some(60)), "{d}");
    assert_eq!(cluster.vector_count().await, 240);
    let c = vectors(&["cleanup", "--dry-run"]);
    assert_eq!((c["vectorsScanned"].as_u64(), c["orphanVectors"].as_u64(), c["assetsRequeued"].as_u64()), (Some(240), Some(0), Some(0)), "{c}");
    // the next coordinator run embeds them again on the workers
    let again = cluster.coordinate(dir.path(), &[]);
    assert_eq!((again["published"].as_u64(), again["status"].as_str()), (Some(60), Some("completed")), "{again}");
    assert_eq!(cluster.vector_count().await, 300, "{}\n{}", embedder.log_text(), writer.log_text());
    cluster.cleanup().await;
}

/// Takes `n` messages from a queue on a connection of its own and closes it without an ack, as a
/// worker that dies holding them would; `times` over.
async fn hold_and_die(config: &BrokerConfig, queue: &str, n: u32, times: u32) {
    for _ in 0..times {
        let holder = Broker::connect(config.clone()).await.unwrap();
        let mut c = holder.consume_named(queue, "holder", 1000).await.unwrap();
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(30), c.next()).await.expect("the messages are there").unwrap().unwrap();
        }
        holder.close().await.unwrap();
    }
}

async fn dead_letter_depths(cluster: &Cluster) -> (u32, u32) {
    let broker = cluster.broker().await;
    let cfg = cluster.broker_config();
    (broker.queue_depth(&cfg.dead_queue_name(Queue::Jobs)).await.unwrap(), broker.queue_depth(&cfg.dead_queue_name(Queue::Embeddings)).await.unwrap())
}

/// RabbitMQ charges a message for every death of a consumer that held it unacked, and its
/// `x-delivery-limit` dead-letters it after a few (that lost healthy work under chaos). Here every
/// job, then (in a second cluster) every result, is held ten times by a consumer that dies without
/// an ack before a worker takes it: each is embedded and written exactly once, and no dead-letter
/// queue holds anything. The attempts that count are the runs that started, in the catalog.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_and_results_whose_holders_die_ten_times_are_written_exactly_once() {
    let _serial = SERIAL.lock().await;
    // jobs held and dropped ten times before an embedder sees them
    let mut cluster = Cluster::start().await;
    let dir = images(40);
    let session = session_of(&cluster.coordinate(dir.path(), &["--no-wait"]));
    hold_and_die(&cluster.broker_config(), &cluster.broker_config().queue_name(Queue::Jobs), 40, 10).await;
    let embedder = cluster.spawn("embedder", "embedder", None);
    let writer = cluster.spawn("writer", "writer", None);
    cluster.wait_completed(session, 40, Duration::from_secs(120), &[&embedder, &writer]).await;
    cluster.assert_exactly_once(session, 40).await;
    assert_eq!(embedder.metric("imgsearch_embedder_jobs_acked_total{outcome=\"returned\"}").await, 40.0, "each handed to the writers once");
    assert_eq!(writer.metric("imgsearch_writer_jobs_written_total{outcome=\"requeued\"}").await, 40.0, "and published again by them");
    assert_eq!(dead_letter_depths(&cluster).await, (0, 0));
    let job = cluster.catalog.list_jobs(session, Some(JobStatus::Completed), Page::new(0, 1)).await.unwrap().items.remove(0);
    assert_eq!(job.attempts, 1, "one run started: the ten deaths of its holders are not attempts");
    cluster.cleanup().await;

    // results held and dropped ten times before a writer sees them
    let mut cluster = Cluster::start().await;
    let session = session_of(&cluster.coordinate(dir.path(), &["--no-wait"]));
    let embedder = cluster.spawn("embedder", "embedder", None);
    let broker = cluster.broker().await;
    let started = Instant::now();
    while embedder.metric("imgsearch_embedder_jobs_acked_total{outcome=\"embedded\"}").await < 40.0 {
        assert!(started.elapsed() < Duration::from_secs(120), "{}", embedder.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let results = cluster.broker_config().queue_name(Queue::Embeddings);
    let depth = broker.queue_depth(&results).await.unwrap();
    assert!(depth > 40, "40 results and the batches' started reports wait: {depth}");
    hold_and_die(&cluster.broker_config(), &results, depth, 10).await;
    let writer = cluster.spawn("writer", "writer", None);
    cluster.wait_completed(session, 40, Duration::from_secs(120), &[&embedder, &writer]).await;
    cluster.assert_exactly_once(session, 40).await;
    assert_eq!(dead_letter_depths(&cluster).await, (0, 0));
    cluster.cleanup().await;
}

/// A file that kills every embedder that opens it (a decoder crash; here a failpoint aborts the
/// process on a file named `poison`): it is charged one attempt per run that started, failed as
/// `crashed` once they reach the limit (3 here), and its job moved to the dead-letter queue; the
/// healthy files of its batches, returned with it each time, all complete; the session ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_kills_every_embedder_that_opens_it_is_failed_as_crashed_and_dead_lettered() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start().await;
    cluster.extra_env.push(("IMGSEARCH__BROKER__ATTEMPT_LIMIT".into(), "3".into()));
    let dir = images(100);
    std::fs::copy(dir.path().join("set0/blue-circle-00.jpg"), dir.path().join("set0/poison.jpg")).unwrap();
    let session = session_of(&cluster.coordinate(dir.path(), &["--no-wait"]));
    let writer = cluster.spawn("writer", "writer", None);
    let mut crashes = 0;
    loop {
        let embedder = cluster.spawn(&format!("embedder-{crashes}"), "embedder", Some("embedder.poison=return"));
        let started = Instant::now();
        loop {
            if cluster.exited(&embedder) {
                assert!(embedder.log_text().contains("failpoint embedder.poison reached"), "{}", embedder.log_text());
                crashes += 1;
                break;
            }
            if cluster.jobs(session, JobStatus::Completed).await == 100 && cluster.jobs(session, JobStatus::Failed).await == 1 {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                let counts = coordinator::job_counts(&cluster.catalog, session).await.unwrap();
                panic!("no progress after {crashes} crashes: {counts:?}\n{}\n{}", embedder.log_text(), writer.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !cluster.exited(&embedder) {
            break;
        }
        assert!(crashes <= 3, "the poison file kept killing embedders past the limit:\n{}", writer.log_text());
    }
    assert_eq!(crashes, 3, "one crash per allowed run");
    let failed = cluster.catalog.list_jobs(session, Some(JobStatus::Failed), Page::new(0, 5)).await.unwrap().items;
    let error = failed[0].error_message.clone().unwrap_or_default();
    assert!(error.starts_with("crashed: 3 runs of this job started and none finished"), "{error}");
    assert_eq!(failed[0].attempts, 3);
    let broker = cluster.broker().await;
    let mut dead = broker.consume_named(&cluster.broker_config().dead_queue_name(Queue::Jobs), "test", 5).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), dead.next()).await.unwrap().unwrap().unwrap();
    let job: protocol::EmbedJob = d.decode("job").unwrap();
    assert!(job.path.ends_with("poison.jpg"), "{}", job.path);
    assert!(d.dead_letter_reason().unwrap().starts_with("crashed: "), "{:?}", d.dead_letter_reason());
    d.ack().await.unwrap();
    let again = cluster.coordinate(dir.path(), &[]);
    assert_eq!((again["status"].as_str(), again["completed"].as_u64(), again["failed"].as_u64()), (Some("completed"), Some(100), Some(1)), "{again}");
    cluster.cleanup().await;
}

/// A seeded random number generator (splitmix64): the chaos schedule replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Closes this test's broker connections (their client-provided name is `{prefix}:{pid}`), not the
/// whole broker's.
fn close_connections_of(prefix: &str) -> usize {
    let out = Command::new("rabbitmqctl").args(["list_connections", "--no-table-headers", "-q", "pid", "client_properties"]).output().expect("rabbitmqctl");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut closed = 0;
    for line in text.lines().filter(|l| l.contains(&format!("\"{prefix}:"))) {
        let Some(pid) = line.split('\t').next() else { continue };
        if Command::new("rabbitmqctl").args(["close_connection", pid, "chaos test"]).output().map(|o| o.status.success()).unwrap_or(false) {
            closed += 1;
        }
    }
    closed
}

/// Terminates this test's PostgreSQL connections (application name `imgsearch:{schema}`).
fn break_postgres_connections(schema: &str) -> usize {
    let sql = format!("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'imgsearch:{schema}'");
    let out = Command::new("psql").args([&postgres_url(), "-tAc", &sql]).output().expect("psql");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// The randomized chaos run: 2 embedders and 2 writers on one session, a coordinator watching it
/// (stranded jobs published again after 5 s without progress). A seeded schedule kills -9 a random
/// worker (sometimes two at once) every 0.1-0.6 s and restarts it after 0-2 s (some die during
/// start-up), until the wanted number of kills landed while jobs were open; on the way, once each,
/// it closes this run's broker connections, stops and restarts the Qdrant fixture, and terminates
/// this run's PostgreSQL connections. Then: the session completed, and
/// completed jobs == evidence rows == points == images, each asset once, no job open, both
/// dead-letter queues empty.
///
/// CI runs the short form (IMGSEARCH_CHAOS_IMAGES=1200, at least 12 kills landing while jobs are
/// open); `bench/chaos.sh` runs the long form (6000 images, at least 80 kills). The seed is printed
/// first (IMGSEARCH_CHAOS_SEED replays a run's schedule).
#[tokio::test(flavor = "multi_thread")]
async fn chaos_kills_restarts_and_outages_lose_and_duplicate_nothing() {
    let _serial = SERIAL.lock().await;
    let seed: u64 = env_or("IMGSEARCH_CHAOS_SEED", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    let images_n: usize = env_or("IMGSEARCH_CHAOS_IMAGES", 1200);
    let min_kills: usize = env_or("IMGSEARCH_CHAOS_KILLS", 12);
    eprintln!("chaos seed {seed} (IMGSEARCH_CHAOS_SEED={seed} replays it): {images_n} images, at least {min_kills} kills");
    let mut rng = Rng(seed);
    let mut cluster = Cluster::start().await;
    cluster.extra_env.push(("IMGSEARCH__COORDINATOR__REPUBLISH_STRANDED_AFTER_S".into(), "5".into()));
    let dir = images(images_n);
    let qdrant_dir = cluster._qdrant_dir.path().to_owned();
    let qdrant_addr = cluster.qdrant.as_ref().unwrap().addr();

    // slots: what runs in each, its current process, and when a killed one comes back
    let kinds = ["embedder", "embedder", "writer", "writer"];
    let mut generation = 0;
    let mut spawn = |cluster: &mut Cluster, slot: usize| {
        generation += 1;
        cluster.spawn(&format!("{}-{slot}-{generation}", kinds[slot]), kinds[slot], None)
    };
    let mut running: Vec<Option<Role>> = (0..kinds.len()).map(|slot| Some(spawn(&mut cluster, slot))).collect();
    let mut restart_at: Vec<Option<Instant>> = vec![None; kinds.len()];
    let coordinator = cluster.spawn_args("coordinator", &["coordinator", dir.path().to_str().unwrap(), "--json"]);

    let began = Instant::now();
    let limit = Duration::from_secs(env_or("IMGSEARCH_CHAOS_MINUTES", 10u64) * 60);
    let session = loop {
        if let Some(s) = cluster.catalog.list_sessions(None, Page::new(0, 1)).await.unwrap().items.first() {
            break s.id;
        }
        assert!(began.elapsed() < Duration::from_secs(60), "no session:\n{}", coordinator.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (mut landed, mut total_kills) = (0usize, 0usize);
    let (mut broker_closed, mut qdrant_restarted, mut postgres_broken) = (false, false, false);
    while !cluster.exited(&coordinator) {
        assert!(began.elapsed() < limit, "chaos seed {seed}: the session did not complete within {limit:?}:\n{}", coordinator.log_text());
        tokio::time::sleep(Duration::from_secs_f64(rng.between(0.1, 0.6))).await;
        let now = Instant::now();
        let killing = landed < min_kills;
        for slot in 0..kinds.len() {
            if restart_at[slot].is_some_and(|at| at <= now) {
                restart_at[slot] = None;
                running[slot] = Some(spawn(&mut cluster, slot));
            }
        }
        let open = coordinator::job_counts(&cluster.catalog, session).await.map(|c| c.open()).unwrap_or(1);
        let victims = match (killing, rng.below(100)) {
            (false, _) => 0,
            (true, 0..15) => 2,
            _ => 1,
        };
        for _ in 0..victims {
            let alive: Vec<usize> = (0..kinds.len()).filter(|s| running[*s].is_some()).collect();
            if alive.is_empty() {
                break;
            }
            let slot = alive[rng.below(alive.len())];
            let role = running[slot].take().unwrap();
            cluster.kill9(&role);
            restart_at[slot] = Some(Instant::now() + Duration::from_secs_f64(rng.between(0.0, 2.0)));
            total_kills += 1;
            if open > 0 {
                landed += 1;
            }
        }
        if !broker_closed && landed >= min_kills / 4 {
            broker_closed = true;
            eprintln!("chaos: closed {} broker connections of this run", close_connections_of(&cluster.prefix));
        }
        if !qdrant_restarted && landed >= min_kills / 2 {
            qdrant_restarted = true;
            cluster.qdrant.take().unwrap().stop().await;
            tokio::time::sleep(Duration::from_secs_f64(rng.between(0.0, 1.0))).await;
            cluster.qdrant = Some(QdrantFixture::start_at(qdrant_addr, &qdrant_dir).await.unwrap());
            eprintln!("chaos: restarted the Qdrant fixture");
        }
        if !postgres_broken && landed >= 3 * min_kills / 4 {
            postgres_broken = true;
            eprintln!("chaos: terminated {} PostgreSQL connections of this run", break_postgres_connections(&cluster.schema));
        }
    }
    let elapsed = began.elapsed();
    let out = cluster.children.iter_mut().find(|(n, _)| n == "coordinator").unwrap().1.stdout.take().unwrap();
    let summary: serde_json::Value = serde_json::from_reader(out).unwrap_or_else(|e| panic!("chaos seed {seed}: {e}:\n{}", coordinator.log_text()));
    assert_eq!(summary["status"], "completed", "chaos seed {seed}: {summary}");
    let completed = cluster.jobs(session, JobStatus::Completed).await;
    let failed = cluster.jobs(session, JobStatus::Failed).await;
    let evidence = cluster.catalog.evidence_for_session(session, Page::new(0, 1)).await.unwrap().total;
    let points = cluster.vector_count().await as i64;
    let dead = dead_letter_depths(&cluster).await;
    eprintln!(
        "chaos seed {seed}: {total_kills} kills ({landed} while jobs were open), {images_n} images, lost {}, duplicated {}, failed {failed}, dead-lettered {}, {:.1} s",
        images_n as i64 - completed.min(points),
        (evidence - completed - failed).max(0) + (points - completed).max(0),
        dead.0 + dead.1,
        elapsed.as_secs_f64()
    );
    assert!(broker_closed && qdrant_restarted && postgres_broken, "chaos seed {seed}: the run ended before every outage ({landed} kills landed); give it more images");
    assert!(landed >= min_kills, "chaos seed {seed}: only {landed} kills landed while jobs were open; give it more images");
    cluster.assert_exactly_once(session, images_n).await;
    assert_eq!(dead, (0, 0), "chaos seed {seed}: nothing dead-lettered");
    cluster.cleanup().await;
}

/// Passwords never reach a log line or an HTTP answer. The workers run as a RabbitMQ user and a
/// PostgreSQL user with passwords; their broker connections are closed and their database
/// connections terminated under them (they reconnect and log it); an embedder meets a broker that
/// is not there; `serve` starts a session against it. No log line and no answer holds a password.
#[tokio::test(flavor = "multi_thread")]
async fn passwords_appear_in_no_log_line_and_no_http_answer() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start().await;
    let user = format!("imgsearch_{}", &cluster.prefix[1..13]);
    let (amqp_pw, pg_pw) = (format!("amqp-{}", Uuid::new_v4().simple()), format!("pg-{}", Uuid::new_v4().simple()));
    let ctl = |args: &[&str]| assert!(Command::new("rabbitmqctl").args(args).output().unwrap().status.success(), "rabbitmqctl {args:?}");
    ctl(&["add_user", &user, &amqp_pw]);
    ctl(&["set_permissions", "-p", "/", &user, ".*", ".*", ".*"]);
    let psql = |sql: &str| assert!(Command::new("psql").args([&postgres_url(), "-qc", sql]).output().unwrap().status.success(), "{sql}");
    psql(&format!("CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{pg_pw}'"));
    let amqp = format!("amqp://{user}:{amqp_pw}@127.0.0.1:5672/%2f");
    cluster.extra_env.push(("IMGSEARCH__BROKER__URL".into(), amqp.clone()));
    cluster.extra_env.push(("IMGSEARCH__CATALOG__URL".into(), format!("postgres://{user}:{pg_pw}@127.0.0.1:5432/postgres")));

    let dir = images(200);
    let session = session_of(&cluster.coordinate(dir.path(), &["--no-wait"]));
    let embedder = cluster.spawn("embedder", "embedder", None);
    let writer = cluster.spawn("writer", "writer", None);
    cluster.wait_completed(session, 50, Duration::from_secs(120), &[&embedder, &writer]).await;
    assert!(close_connections_of(&cluster.prefix) > 0);
    assert!(break_postgres_connections(&cluster.schema) > 0);
    cluster.wait_completed(session, 200, Duration::from_secs(180), &[&embedder, &writer]).await;

    // a broker that is not there: the embedder says so, again and again, and serve answers 503
    // port 1: nothing listens there, ever (a free port picked and released could be taken by
    // another test's server meanwhile, which would accept and never speak AMQP)
    let port = 1;
    cluster.extra_env.push(("IMGSEARCH__BROKER__URL".into(), format!("amqp://{user}:{amqp_pw}@127.0.0.1:{port}/%2f")));
    let lost = cluster.spawn("embedder-lost", "embedder", None);
    lost.wait_for("retrying", Duration::from_secs(60)).await;
    let base = serve(&mut cluster, dir.path());
    let created = post_json(format!("{base}/api/v1/training/sessions"), serde_json::json!({"name": "lost", "rootPath": dir.path().join("set0")})).await;
    let answer = tokio::task::spawn_blocking({
        let url = format!("{base}/api/v1/training/sessions/{}/start", created["id"]);
        move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut resp = agent.post(&url).send_empty().unwrap();
            (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
        }
    })
    .await
    .unwrap();
    assert_eq!(answer.0, 503, "{}", answer.1);
    assert!(answer.1.contains(&format!("{user}:***@127.0.0.1:{port}")), "the answer names the broker, without its password: {}", answer.1);

    let mut logs = String::new();
    for entry in std::fs::read_dir(cluster.logs.path()).unwrap() {
        logs.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
    }
    assert!(logs.contains("reconnect") || logs.contains("connecting again"), "the workers reconnected:\n{logs}");
    for secret in [&amqp_pw, &pg_pw] {
        assert!(!logs.contains(secret.as_str()), "a password in the logs");
        assert!(!answer.1.contains(secret.as_str()), "a password in an answer");
    }
    cluster.kill_all();
    ctl(&["delete_user", &user]);
    cluster.cleanup().await;
    psql(&format!("DROP ROLE IF EXISTS {user}"));
}
