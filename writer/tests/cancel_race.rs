//! A session cancelled while a writer holds its results: between the writer's read of which jobs
//! are open and its commit. The commit refuses the cancelled job, and its vector must not stay.
//! Needs the `failpoints` feature (on in the workspace test run) to stop the writer in that gap.
#![cfg(feature = "failpoints")]

use std::sync::{Arc, mpsc};

use catalog::{Catalog, JobStatus, NewAsset, NewSession, Page};
use protocol::{EmbedJob, EmbedResult, EvidenceInfo, Outcome};
use vectors::{CollectionSpec, PointFilter, VectorStore};
use writer::Writer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_between_the_open_jobs_read_and_the_commit_leaves_no_vector() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect_sqlite(&dir.path().join("catalog.sqlite")).await.unwrap();
    let vectors = Arc::new(VectorStore::embedded(&dir.path().join("vectors")).unwrap());
    vectors.ensure_collection(&CollectionSpec { name: "c".into(), dim: 2, model_version: "1".into() }).await.unwrap();
    let session = catalog.create_session(NewSession { name: "s".into(), root_path: "/p".into(), category_id: None }).await.unwrap();
    let asset = catalog.upsert_asset(NewAsset { path: "/p/a.jpg".into(), content_hash: Some("h".into()), ..Default::default() }).await.unwrap().0;
    catalog.create_jobs(session.id, &[asset.id]).await.unwrap();
    let job = catalog.list_jobs(session.id, None, Page::new(0, 1)).await.unwrap().items.remove(0);
    let embed = EmbedJob {
        v: protocol::VERSION,
        job_id: job.id,
        asset_id: asset.id,
        session_id: session.id,
        path: asset.path.clone(),
        created_at: asset.created_at,
        category_id: None,
        attempt: 1,
    };
    let evidence = EvidenceInfo { model_name: "m".into(), model_version: "1".into(), device: "cpu".into(), metadata: serde_json::Value::Null, processing_time_ms: 1 };
    let result = EmbedResult::for_job(&embed, Outcome::Embedded { vector: protocol::vector_to_bytes(&[1.0, 0.0]), checksum: "c".into() }, evidence);

    // the writer stops after its upsert, before its commit, until the cancel is done
    let (reached, wait_reached) = mpsc::channel::<()>();
    let (go, wait_go) = mpsc::channel::<()>();
    let wait_go = std::sync::Mutex::new(wait_go);
    fail::cfg_callback("writer.before_commit", move || {
        reached.send(()).unwrap();
        wait_go.lock().unwrap().recv().unwrap();
    })
    .unwrap();
    let writer = Writer { catalog: catalog.clone(), vectors: vectors.clone(), collection: "c".into() };
    let write = tokio::spawn(async move { writer.write_batch(&[result]).await.unwrap() });
    tokio::task::spawn_blocking(move || wait_reached.recv().unwrap()).await.unwrap();
    assert_eq!(vectors.count("c", &PointFilter::default()).await.unwrap(), 1, "upserted, not yet committed");
    catalog.cancel_job(job.id).await.unwrap();
    go.send(()).unwrap();
    let report = write.await.unwrap();
    fail::remove("writer.before_commit");

    assert_eq!(report.record.refused.len(), 1, "the commit refused the cancelled job: {:?}", report.record);
    assert_eq!(catalog.get_job(job.id).await.unwrap().status, JobStatus::Cancelled);
    assert_eq!(vectors.count("c", &PointFilter::default()).await.unwrap(), 0, "no vector for a cancelled job");
}
