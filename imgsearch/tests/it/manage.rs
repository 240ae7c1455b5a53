//! Vector management (`imgsearch::manage`) on both store pairs: the embedded engine with SQLite,
//! and the Qdrant server (the gRPC fixture) with PostgreSQL. Each operation's counts are checked
//! against the store and the catalog.

use std::path::PathBuf;

use catalog::{Catalog, DeletionType, NewCategory, Page};
use imgsearch::manage::{self, ManageError, RESET_CONFIRMATION, Target};
use protocol::{EmbedResult, EvidenceInfo, Outcome};
use qdrant_fixture::QdrantFixture;
use uuid::Uuid;
use vectors::{AssetPoint, CollectionSpec, PointFilter, VectorStore};
use writer::Writer;

use crate::fixtures;

const COLLECTION: &str = "image_assets_v1";
const DIM: usize = 8;

/// One backend pair with 240 indexed shapes: `a/` (120, category "left") and `b/` (120).
struct Indexed {
    catalog: Catalog,
    vectors: std::sync::Arc<VectorStore>,
    images: tempfile::TempDir,
    category: i64,
    session: i64,
    _keep: Vec<tempfile::TempDir>,
    _qdrant: Option<QdrantFixture>,
    schema: Option<String>,
}

impl Indexed {
    fn dir(&self, sub: &str) -> String {
        self.images.path().canonicalize().unwrap().join(sub).to_string_lossy().into_owned()
    }

    async fn count(&self) -> u64 {
        self.vectors.count(COLLECTION, &PointFilter::default()).await.unwrap()
    }

    async fn indexed_assets(&self) -> usize {
        self.catalog.asset_ids(catalog::AssetSelection::Indexed).await.unwrap().len()
    }

    async fn done(mut self) {
        if let Some(schema) = self.schema.take() {
            let admin = Catalog::connect_postgres(&postgres_url(), None).await.unwrap();
            admin.drop_schema_for_tests(&schema).await;
        }
        if let Some(q) = self._qdrant.take() {
            q.stop().await;
        }
    }
}

/// A test that failed midway still removes its schema.
impl Drop for Indexed {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            let _ = std::thread::spawn(move || {
                tokio::runtime::Runtime::new().unwrap().block_on(async {
                    if let Ok(admin) = Catalog::connect_postgres(&postgres_url(), None).await {
                        admin.drop_schema_for_tests(&schema).await;
                    }
                })
            })
            .join();
        }
    }
}

fn postgres_url() -> String {
    std::env::var("IMGSEARCH_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn unit_vector(seed: u128) -> Vec<f32> {
    let v: Vec<f32> = (0..DIM).map(|i| (((seed >> (i * 8)) & 0xff) as f32 + 1.0) * if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

async fn setup(server: bool) -> Indexed {
    let images = tempfile::tempdir().unwrap();
    let mut shapes: Vec<PathBuf> = std::fs::read_dir(fixtures().join("shapes")).unwrap().map(|e| e.unwrap().path()).collect();
    shapes.sort();
    for (i, f) in shapes.iter().enumerate() {
        let sub = images.path().join(if i < 120 { "a" } else { "b" });
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(f, sub.join(f.file_name().unwrap())).unwrap();
    }
    let store_dir = tempfile::tempdir().unwrap();
    let (catalog, vectors, qdrant, schema) = if server {
        let q = QdrantFixture::start(store_dir.path()).await.unwrap();
        let schema = format!("t_{}", Uuid::new_v4().simple());
        let c = Catalog::connect_postgres(&postgres_url(), Some(&schema)).await.expect("PostgreSQL on 127.0.0.1:5432 (see .ci/run)");
        let v = VectorStore::server(&q.url()).unwrap();
        (c, v, Some(q), Some(schema))
    } else {
        let c = Catalog::connect_sqlite(&store_dir.path().join("catalog.sqlite")).await.unwrap();
        let v = VectorStore::embedded(&store_dir.path().join("vectors")).unwrap();
        (c, v, None, None)
    };
    let vectors = std::sync::Arc::new(vectors);
    vectors.ensure_collection(&CollectionSpec { name: COLLECTION.into(), dim: DIM, model_version: "test".into() }).await.unwrap();
    let category = catalog.create_category(NewCategory { name: "left".into(), ..Default::default() }).await.unwrap().id;
    ingest::scan(&catalog, &[images.path().join("a")], &[], ingest::ScanOptions { category_id: Some(category), retry_failed: false }).await.unwrap();
    let prepared = coordinator::prepare(&catalog, &[images.path().to_owned()], None, Some("all".into()), false).await.unwrap();
    assert_eq!(prepared.jobs_created, 240);
    let jobs: Vec<protocol::EmbedJob> = futures_util::TryStreamExt::try_collect(imgsearch::pipeline::open_jobs(catalog.clone(), &prepared.session)).await.unwrap();
    let results: Vec<EmbedResult> = jobs
        .into_iter()
        .map(|j| {
            let v = unit_vector(j.asset_id as u128);
            EmbedResult {
                v: protocol::VERSION,
                job_id: j.job_id,
                asset_id: j.asset_id,
                session_id: j.session_id,
                path: j.path,
                created_at: j.created_at,
                category_id: j.category_id,
                outcome: Outcome::Embedded { checksum: clip::embedding_checksum(&v), vector: protocol::vector_to_bytes(&v) },
                evidence: EvidenceInfo { model_name: "test".into(), model_version: "test".into(), device: "cpu".into(), metadata: serde_json::json!({}), processing_time_ms: 1 },
            }
        })
        .collect();
    let writer = Writer { catalog: catalog.clone(), vectors: vectors.clone(), collection: COLLECTION.into() };
    let report = writer.write_batch(&results).await.unwrap();
    assert_eq!(report.completed, 240);
    Indexed { catalog, vectors, images, category, session: prepared.session.id, _keep: vec![store_dir], _qdrant: qdrant, schema }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded_sqlite {
            $(#[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::setup(false).await).await })*
        }
        mod server_postgres {
            $(#[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::setup(true).await).await })*
        }
    };
}

on_both_backends!(
    deletes_count_log_and_unindex_in_that_order,
    broad_deletes_and_reset_need_confirmation,
    a_delete_at_the_root_agrees_between_catalog_and_vectors,
    cleanup_repairs_a_crash_between_the_vector_delete_and_the_catalog,
    cleanup_scrolls_past_the_first_page
);

async fn deletes_count_log_and_unindex_in_that_order(x: Indexed) {
    assert_eq!((x.count().await, x.indexed_assets().await), (240, 240));
    let (c, v) = (&x.catalog, &*x.vectors);

    // one asset
    let one = c.assets_under(&x.dir("b")).await.unwrap()[0].id;
    let d = manage::delete_vectors(c, v, COLLECTION, Target::Assets(vec![one]), Some("blurry".into()), false).await.unwrap();
    assert_eq!((d.deleted_vectors, d.assets_updated, d.log.deletion_type, d.log.vector_count), (1, 1, DeletionType::Asset, 1));
    assert_eq!(d.log.reason.as_deref(), Some("blurry"));
    assert_eq!((x.count().await, x.indexed_assets().await), (239, 239));
    let asset = c.get_asset(one).await.unwrap();
    assert!(asset.indexed_at.is_none() && asset.training_status == catalog::TrainingStatus::Pending, "{asset:?}");

    // a directory: the other 119 of b/
    let d = manage::delete_vectors(c, v, COLLECTION, Target::Directory(x.dir("b")), None, true).await.unwrap();
    assert_eq!((d.deleted_vectors, d.assets_updated, d.log.deletion_type), (119, 120, DeletionType::Directory));
    assert_eq!((x.count().await, x.indexed_assets().await), (120, 120));

    // a category: a/ is "left"
    let d = manage::delete_vectors(c, v, COLLECTION, Target::Category(x.category), None, true).await.unwrap();
    assert_eq!((d.deleted_vectors, d.assets_updated, d.log.deletion_type), (120, 120, DeletionType::Category));
    assert_eq!((x.count().await, x.indexed_assets().await), (0, 0));

    // the log has all three, newest first; the next scan embeds the assets again
    let logs = c.list_deletion_logs(Page::new(0, 10)).await.unwrap();
    assert_eq!(
        logs.items.iter().map(|l| (l.deletion_type, l.vector_count)).collect::<Vec<_>>(),
        vec![(DeletionType::Category, 120), (DeletionType::Directory, 119), (DeletionType::Asset, 1)]
    );
    let rescan = ingest::scan(c, &[x.images.path().to_owned()], &[], ingest::ScanOptions::default()).await.unwrap();
    assert_eq!(rescan.to_embed, 240);
    x.done().await;
}

async fn broad_deletes_and_reset_need_confirmation(x: Indexed) {
    let (c, v) = (&x.catalog, &*x.vectors);
    for target in [Target::Directory(x.dir("a")), Target::Session(x.session), Target::Category(x.category)] {
        let err = manage::delete_vectors(c, v, COLLECTION, target, None, false).await.unwrap_err();
        assert!(matches!(err, ManageError::ConfirmationRequired(_)) && err.to_string().contains("needs confirm: true"), "{err}");
    }
    for (confirm, text) in [(false, Some(RESET_CONFIRMATION)), (true, None), (true, Some("delete all vectors"))] {
        let err = manage::reset(c, v, COLLECTION, confirm, text, None).await.unwrap_err();
        assert!(err.to_string().contains("DELETE ALL VECTORS"), "{err}");
    }
    assert_eq!(x.count().await, 240, "nothing was deleted");
    assert_eq!(c.list_deletion_logs(Page::new(0, 10)).await.unwrap().total, 0, "nothing was logged");

    // a session delete, then a reset of what is left (nothing)
    let d = manage::delete_vectors(c, v, COLLECTION, Target::Session(x.session), None, true).await.unwrap();
    assert_eq!((d.deleted_vectors, d.assets_updated), (240, 240));
    let r = manage::reset(c, v, COLLECTION, true, Some(RESET_CONFIRMATION), Some("new start".into())).await.unwrap();
    assert_eq!((r.deleted_vectors, r.log.deletion_type), (0, DeletionType::FullReset));
    assert!(v.info(COLLECTION).await.unwrap().is_some(), "the collection stays, empty");
    x.done().await;
}

/// The catalog and the vector store select the same assets for every delete, even for `/` (once
/// 0 vectors went while every asset was marked pending and searches still found them).
async fn a_delete_at_the_root_agrees_between_catalog_and_vectors(x: Indexed) {
    let (c, v) = (&x.catalog, &*x.vectors);
    let d = manage::delete_vectors(c, v, COLLECTION, Target::Directory("/".into()), None, true).await.unwrap();
    assert_eq!((d.deleted_vectors, d.assets_updated, d.log.vector_count), (240, 240, 240));
    assert_eq!(x.count().await, 0, "no vector is left to be found");
    let report = manage::cleanup_orphans(c, v, COLLECTION, true).await.unwrap();
    assert_eq!((report.orphan_vectors, report.assets_requeued), (0, 0), "nothing disagrees: {report:?}");
    x.done().await;
}

async fn cleanup_repairs_a_crash_between_the_vector_delete_and_the_catalog(x: Indexed) {
    let (c, v) = (&x.catalog, &*x.vectors);
    // a delete that crashed after the vectors went: 5 assets still say indexed
    let victims: Vec<i64> = c.assets_under(&x.dir("a")).await.unwrap().iter().take(5).map(|a| a.id).collect();
    assert_eq!(v.delete_ids(COLLECTION, &victims).await.unwrap(), 5);
    // and a vector whose asset is gone
    let stray: i64 = 987_654_321;
    v.upsert(
        COLLECTION,
        vec![AssetPoint { asset_id: stray, vector: unit_vector(7), path: "/gone/x.jpg".into(), created_at: chrono::Utc::now(), category_id: None, model_version: "test".into() }],
    )
    .await
    .unwrap();
    assert_eq!((x.count().await, x.indexed_assets().await), (236, 240));

    let dry = manage::cleanup_orphans(c, v, COLLECTION, true).await.unwrap();
    assert_eq!((dry.vectors_scanned, dry.orphan_vectors, dry.assets_requeued), (236, 1, 5));
    assert_eq!(dry.orphan_vector_examples, vec![stray]);
    assert_eq!((x.count().await, x.indexed_assets().await), (236, 240), "a dry run changes nothing");

    let done = manage::cleanup_orphans(c, v, COLLECTION, false).await.unwrap();
    assert_eq!((done.orphan_vectors, done.assets_requeued), (1, 5));
    assert_eq!((x.count().await, x.indexed_assets().await), (235, 235), "store and catalog agree again");
    let mut requeued = done.requeued_asset_examples.clone();
    requeued.sort();
    let mut expected = victims.clone();
    expected.sort();
    assert_eq!(requeued, expected);
    let logs = c.list_deletion_logs(Page::new(0, 10)).await.unwrap();
    assert_eq!((logs.items[0].deletion_type, logs.items[0].vector_count), (DeletionType::Orphan, 1));
    // a second cleanup finds nothing
    let again = manage::cleanup_orphans(c, v, COLLECTION, false).await.unwrap();
    assert_eq!((again.orphan_vectors, again.assets_requeued), (0, 0));
    x.done().await;
}

async fn cleanup_scrolls_past_the_first_page(x: Indexed) {
    let v = &*x.vectors;
    let strays: Vec<AssetPoint> = (0..1500u128)
        .map(|i| AssetPoint {
            asset_id: 1_000_000 + i as i64,
            vector: unit_vector(i * 7919),
            path: format!("/gone/{i}.jpg"),
            created_at: chrono::Utc::now(),
            category_id: None,
            model_version: "test".into(),
        })
        .collect();
    v.upsert(COLLECTION, strays).await.unwrap();
    let done = manage::cleanup_orphans(&x.catalog, v, COLLECTION, false).await.unwrap();
    assert_eq!((done.vectors_scanned, done.orphan_vectors, done.assets_requeued), (1740, 1500, 0));
    assert_eq!(x.count().await, 240);
    x.done().await;
}

/// A copy of the tiny model whose files differ (a doc string in each ONNX graph), so its version
/// differs while its vectors do not: only the payload's model version tells the two apart.
pub(crate) fn second_model() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("models/tiny-clip");
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.unwrap();
        let to = dir.path().join(entry.path().strip_prefix(&src).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
    for tower in ["visual/model.onnx", "textual/model.onnx"] {
        use std::io::Write;
        let doc = b"image-search test: model B";
        // ModelProto field 6 (doc_string), length-delimited: a valid protobuf field at the end
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join(tower)).unwrap();
        f.write_all(&[0x32, doc.len() as u8]).unwrap();
        f.write_all(doc).unwrap();
    }
    let path = dir.path().to_owned();
    (dir, path)
}

fn load(dir: &std::path::Path) -> std::sync::Arc<clip::ClipModel> {
    let ort = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-ort/libonnxruntime.so"));
    let options = clip::RuntimeOptions { library: Some(ort), ..Default::default() };
    std::sync::Arc::new(clip::ClipModel::load(&clip::ModelDir::open(dir).unwrap(), &options).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_upgrade_swaps_the_alias_while_searches_never_fail_or_mix_models_embedded() {
    model_upgrade(false).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_upgrade_swaps_the_alias_while_searches_never_fail_or_mix_models_server() {
    model_upgrade(true).await
}

async fn model_upgrade(server: bool) {
    use imgsearch::search::{SearchRequest, search_text};
    let x = setup(server).await;
    let a = load(&fixtures().join("models/tiny-clip"));
    let (_b_dir, b_path) = second_model();
    let b = load(&b_path);
    assert_ne!(a.version, b.version);
    // model A's index of the shapes, as `imgsearch index` builds it (the alias on image_assets_v1)
    x.vectors.drop_collection(COLLECTION).await.unwrap();
    let a_collection = imgsearch::app::collection_for(&x.vectors, &a.version, a.embed_dim).await.unwrap();
    assert_eq!(a_collection, "image_assets_v1");
    let reindex = manage::upgrade_model(&x.catalog, &x.vectors, a.clone(), false, Default::default()).await;
    assert!(reindex.unwrap_err().to_string().contains("already built with model version"));
    x.catalog.mark_unindexed(&x.catalog.asset_ids(catalog::AssetSelection::All).await.unwrap()).await.unwrap();
    coordinator::finish_if_done(&x.catalog, x.session).await.unwrap();
    let prepared = coordinator::prepare(&x.catalog, &[x.images.path().to_owned()], None, None, false).await.unwrap();
    let jobs = imgsearch::pipeline::open_jobs(x.catalog.clone(), &prepared.session);
    let writer = std::sync::Arc::new(Writer { catalog: x.catalog.clone(), vectors: x.vectors.clone(), collection: a_collection.clone() });
    let stats =
        imgsearch::pipeline::run(jobs, std::sync::Arc::new(embedder::Embedder::new(a.clone(), 0, false)), writer, Default::default(), Default::default(), |_| {}).await.unwrap();
    assert_eq!(stats.completed, 240);

    // a stream of searches runs through the upgrade
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let searches = {
        let (catalog, vectors, models, done) = (x.catalog.clone(), x.vectors.clone(), vec![a.clone(), b.clone()], done.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let req = SearchRequest { query: "a red circle".into(), limit: 5, ..Default::default() };
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let hits = search_text(&catalog, &vectors, &models, &req).await.expect("a search never fails during the upgrade");
                assert_eq!(hits.len(), 5);
                let versions: std::collections::BTreeSet<_> = hits.iter().map(|h| h.model_version.clone().unwrap()).collect();
                assert_eq!(versions.len(), 1, "one response never mixes two models: {versions:?}");
                assert!(hits[0].asset.path.contains("red-circle"), "{}", hits[0].asset.path);
                seen.push(versions.into_iter().next().unwrap());
            }
            seen
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let up = manage::upgrade_model(&x.catalog, &x.vectors, b.clone(), true, Default::default()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = searches.await.unwrap();

    assert_eq!((up.previous.as_deref(), up.collection.as_str(), up.indexed, up.failed, up.swapped), (Some("image_assets_v1"), "image_assets_v2", 240, 0, true));
    let info = x.vectors.info(vectors::DEFAULT_COLLECTION).await.unwrap().unwrap();
    assert_eq!((info.name.as_str(), info.model_version.as_deref(), info.points), ("image_assets_v2", Some(b.version.as_str()), 240));
    assert_eq!(x.vectors.info("image_assets_v1").await.unwrap().unwrap().points, 240, "the old collection is kept");
    // the stream saw model A, then model B, never back
    let first_b = seen.iter().position(|v| *v == b.version).expect("searches after the swap use model B");
    assert!(first_b > 0 && seen[..first_b].iter().all(|v| *v == a.version) && seen[first_b..].iter().all(|v| *v == b.version), "{} searches", seen.len());
    // new evidence: the upgrade's session has one row per asset
    assert_eq!(x.catalog.evidence_for_session(up.session, Page::new(0, 1)).await.unwrap().total, 240);
    x.done().await;
}

/// A job page the catalog could not read for a moment (busy, restarting) is read again after a
/// wait: the embedded run gets every job once. A page that keeps failing ends the stream with the
/// catalog's error once the retries are spent. (The failpoint fails only for a session whose root
/// says "read-jobs-fail": other tests reading jobs meanwhile are not touched.)
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_job_page_the_catalog_could_not_read_is_read_again() {
    use futures_util::TryStreamExt;
    let images = tempfile::Builder::new().prefix("read-jobs-fail").tempdir().unwrap();
    // 2,400 files: three pages of 1,000
    let shapes: Vec<PathBuf> = std::fs::read_dir(fixtures().join("shapes")).unwrap().map(|e| e.unwrap().path()).collect();
    for copy in 0..10 {
        let sub = images.path().join(copy.to_string());
        std::fs::create_dir_all(&sub).unwrap();
        for f in &shapes {
            std::fs::copy(f, sub.join(f.file_name().unwrap())).unwrap();
        }
    }
    let store_dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect_sqlite(&store_dir.path().join("catalog.sqlite")).await.unwrap();
    let prepared = coordinator::prepare(&catalog, &[images.path().to_owned()], None, None, false).await.unwrap();
    assert_eq!(prepared.jobs_created, 10 * shapes.len() as u64);

    // the first page reads, the second fails twice, then reads
    fail::cfg("pipeline.read_jobs", "1*off->2*return->off").unwrap();
    let jobs: Vec<protocol::EmbedJob> = imgsearch::pipeline::open_jobs(catalog.clone(), &prepared.session).try_collect().await.expect("read again after the failures");
    let ids: std::collections::BTreeSet<i64> = jobs.iter().map(|j| j.job_id).collect();
    assert_eq!((jobs.len(), ids.len()), (10 * shapes.len(), 10 * shapes.len()), "every job once");

    fail::cfg("pipeline.read_jobs", "return").unwrap();
    let err = imgsearch::pipeline::open_jobs(catalog.clone(), &prepared.session).try_collect::<Vec<_>>().await.unwrap_err();
    fail::remove("pipeline.read_jobs");
    let text = format!("{err:#}");
    assert!(text.contains("cannot read the session's jobs") && text.contains("catalog busy"), "{text}");
}
