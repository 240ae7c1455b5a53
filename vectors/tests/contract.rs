//! One contract suite for every vector store backend. Each case gets a fresh store and a fresh
//! collection name.

use chrono::{DateTime, Utc};
use uuid::Uuid;
use vectors::*;

struct Fixture {
    store: VectorStore,
    _dir: tempfile::TempDir,
}

fn embedded() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    Fixture { store: VectorStore::embedded(dir.path()).unwrap(), _dir: dir }
}

/// The server backend over real gRPC, against the Qdrant test fixture on a free port.
struct ServerFixture {
    store: VectorStore,
    qdrant: qdrant_fixture::QdrantFixture,
    _dir: tempfile::TempDir,
}

async fn server() -> ServerFixture {
    let dir = tempfile::tempdir().unwrap();
    let qdrant = qdrant_fixture::QdrantFixture::start(dir.path()).await.unwrap();
    ServerFixture { store: VectorStore::server(&qdrant.url()).unwrap(), qdrant, _dir: dir }
}

macro_rules! contract {
    ($($case:ident),+ $(,)?) => {
        mod embedded {
            $( #[tokio::test(flavor = "multi_thread")] async fn $case() { let f = super::embedded(); super::$case(&f.store).await } )+
        }
        mod server {
            $( #[tokio::test(flavor = "multi_thread")] async fn $case() { let f = super::server().await; super::$case(&f.store).await; f.qdrant.stop().await } )+
        }
    };
}

contract!(
    ensure_collection_is_idempotent_and_refuses_another_size,
    search_ranks_by_cosine_and_carries_the_payload,
    date_range_is_inclusive_on_both_ends_in_any_time_zone,
    category_and_path_prefix_filters_combine_with_dates,
    pagination_continues_the_ranking,
    retrieve_returns_vectors_and_skips_unknown_ids,
    deletes_return_their_counts,
    scroll_returns_every_id_past_ten_thousand,
    a_missing_collection_searches_empty,
    an_alias_swaps_atomically_and_protects_its_collection,
    a_soft_deleted_point_is_never_found_until_restored,
    every_filtered_field_has_a_payload_index,
);

/// Every field a search filters on has a payload index, the soft-delete flag included (it is in
/// every search's filter), on a new collection and on one made before an index was added.
async fn every_filtered_field_has_a_payload_index(s: &VectorStore) {
    let n = name();
    s.ensure_collection(&spec(&n)).await.unwrap();
    let mut wanted: Vec<&str> = PAYLOAD_INDEXES.iter().map(|(f, _)| *f).collect();
    wanted.sort();
    assert_eq!(s.info(&n).await.unwrap().unwrap().payload_indexes, wanted);
    assert!(wanted.contains(&"deleted"));
}

/// The shape a million images need: once `optimize` returns (as `imgsearch index` calls it), a
/// collection of 3,000 512-d vectors (6 MB, spread over the engine's segments) has every vector in
/// the HNSW index, so a search walks the graph instead of scanning every point. With the engine's
/// default threshold (10 MB per segment) none was indexed.
#[tokio::test(flavor = "multi_thread")]
async fn after_optimize_a_large_collection_is_searched_through_its_hnsw_index() {
    let f = embedded();
    let s = &f.store;
    let n = name();
    s.ensure_collection(&CollectionSpec { name: n.clone(), dim: 512, model_version: "m1".into() }).await.unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    for chunk in 0..6 {
        let points =
            (0..500).map(|i| AssetPoint { vector: (0..512).map(|_| next()).collect(), ..point(&format!("/p/{chunk}/{i}.jpg"), vec![], "2024-01-01T00:00:00Z", Some(1)) }).collect();
        s.upsert(&n, points).await.unwrap();
    }
    s.optimize(&n).await.unwrap();
    let info = s.info(&n).await.unwrap().unwrap();
    assert_eq!(info.points, 3000);
    assert_eq!(info.indexed_vectors, 3000, "every vector in the HNSW index: {info:?}");
    // what a search asks, without the counts
    let spec = s.spec(&n).await.unwrap().unwrap();
    assert_eq!((spec.name, spec.dim, spec.model_version), (n.clone(), 512, "m1".to_owned()));
    // serve reads the files into the page cache at start: at least the vectors' own bytes
    let read = s.warm(&n).await.unwrap();
    assert!(read >= 3000 * 512 * 4, "read {read} bytes");
}

const DIM: usize = 8;

fn spec(name: &str) -> CollectionSpec {
    CollectionSpec { name: name.into(), dim: DIM, model_version: "m1".into() }
}

fn name() -> String {
    format!("c_{}", Uuid::new_v4().simple())
}

/// A unit vector pointing mostly along axis `axis`, tilted by `tilt` towards the next axis.
fn unit(axis: usize, tilt: f32) -> Vec<f32> {
    let mut v = [0.0; DIM];
    v[axis % DIM] = 1.0;
    v[(axis + 1) % DIM] = tilt;
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn point(path: &str, vector: Vec<f32>, created: &str, category: Option<i64>) -> AssetPoint {
    AssetPoint { asset_id: protocol::next_test_id(), vector, path: path.into(), created_at: at(created), category_id: category, model_version: "m1".into() }
}

async fn ensure_collection_is_idempotent_and_refuses_another_size(s: &VectorStore) {
    let n = name();
    assert!(s.ensure_collection(&spec(&n)).await.unwrap(), "created");
    assert!(!s.ensure_collection(&spec(&n)).await.unwrap(), "already there");
    let err = s.ensure_collection(&CollectionSpec { dim: 512, ..spec(&n) }).await.unwrap_err();
    assert!(matches!(err, VectorError::Mismatch { .. }));
    assert!(err.to_string().contains("holds 8-d cosine vectors, not 512-d cosine"), "{err}");
    let info = s.info(&n).await.unwrap().unwrap();
    assert_eq!((info.dim, info.distance.as_str(), info.model_version.as_deref(), info.points), (DIM, "cosine", Some("m1"), 0));
}

async fn search_ranks_by_cosine_and_carries_the_payload(s: &VectorStore) {
    let n = name();
    s.ensure_collection(&spec(&n)).await.unwrap();
    let pts = vec![
        point("/p/near.jpg", unit(0, 0.1), "2024-05-01T10:00:00Z", Some(7)),
        point("/p/mid.jpg", unit(0, 1.0), "2024-05-02T10:00:00Z", None),
        point("/p/far.jpg", unit(3, 0.0), "2024-05-03T10:00:00Z", None),
    ];
    s.upsert(&n, pts.clone()).await.unwrap();
    let hits = s.search(&n, &unit(0, 0.0), &PointFilter::default(), 10, 0).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.path.as_deref().unwrap()).collect::<Vec<_>>(), ["/p/near.jpg", "/p/mid.jpg", "/p/far.jpg"]);
    assert_eq!(hits[0].asset_id, pts[0].asset_id, "the point id is the asset id");
    assert!((hits[0].score - 0.99504).abs() < 1e-3, "cosine of the tilted vector: {}", hits[0].score);
    assert!(hits[2].score.abs() < 1e-5);
    assert_eq!((hits[0].category_id, hits[0].model_version.as_deref()), (Some(7), Some("m1")));
    assert_eq!(hits[0].created_at.as_deref(), Some("2024-05-01T10:00:00.000000Z"));
    // a redelivered upsert overwrites the same point
    s.upsert(&n, pts).await.unwrap();
    assert_eq!(s.count(&n, &PointFilter::default()).await.unwrap(), 3);
}

async fn date_range_is_inclusive_on_both_ends_in_any_time_zone(s: &VectorStore) {
    let n = name();
    s.ensure_collection(&spec(&n)).await.unwrap();
    s.upsert(
        &n,
        vec![
            point("/d/before.jpg", unit(0, 0.0), "2023-12-31T23:59:59Z", None),
            point("/d/start.jpg", unit(0, 0.1), "2024-01-01T00:00:00Z", None),
            point("/d/end.jpg", unit(0, 0.2), "2024-01-31T23:59:59Z", None),
            point("/d/after.jpg", unit(0, 0.3), "2024-02-01T00:00:00Z", None),
        ],
    )
    .await
    .unwrap();
    let paths = |hits: Vec<Hit>| {
        let mut p: Vec<String> = hits.into_iter().map(|h| h.path.unwrap()).collect();
        p.sort();
        p
    };
    let january = PointFilter { from: Some(at("2024-01-01T00:00:00Z")), to: Some(at("2024-01-31T23:59:59Z")), ..Default::default() };
    assert_eq!(paths(s.search(&n, &unit(0, 0.0), &january, 10, 0).await.unwrap()), ["/d/end.jpg", "/d/start.jpg"]);
    // the same instants written in another zone select the same points
    let january_in_paris = PointFilter { from: Some(at("2024-01-01T01:00:00+01:00")), to: Some(at("2024-02-01T00:59:59+01:00")), ..Default::default() };
    assert_eq!(paths(s.search(&n, &unit(0, 0.0), &january_in_paris, 10, 0).await.unwrap()), ["/d/end.jpg", "/d/start.jpg"]);
    // one second less on each side drops the boundary points: a datetime range, not string order
    let inner = PointFilter { from: Some(at("2024-01-01T00:00:01Z")), to: Some(at("2024-01-31T23:59:58Z")), ..Default::default() };
    assert!(s.search(&n, &unit(0, 0.0), &inner, 10, 0).await.unwrap().is_empty());
    let open_end = PointFilter { from: Some(at("2024-01-31T23:59:59Z")), ..Default::default() };
    assert_eq!(s.count(&n, &open_end).await.unwrap(), 2);
}

async fn category_and_path_prefix_filters_combine_with_dates(s: &VectorStore) {
    let n = name();
    s.ensure_collection(&spec(&n)).await.unwrap();
    s.upsert(
        &n,
        vec![
            point("/photos/2024/a.jpg", unit(0, 0.0), "2024-03-01T00:00:00Z", Some(1)),
            point("/photos/2024/b.jpg", unit(0, 0.1), "2024-03-02T00:00:00Z", Some(2)),
            point("/photos/2024-old/c.jpg", unit(0, 0.2), "2024-03-03T00:00:00Z", Some(1)),
            point("/photos/2023/d.jpg", unit(0, 0.3), "2023-03-01T00:00:00Z", Some(1)),
        ],
    )
    .await
    .unwrap();
    let count = async |f: PointFilter| s.count(&n, &f).await.unwrap();
    assert_eq!(count(PointFilter { category_id: Some(1), ..Default::default() }).await, 3);
    assert_eq!(count(PointFilter { path_prefix: Some("/photos/2024".into()), ..Default::default() }).await, 2, "a directory, not a string prefix");
    assert_eq!(count(PointFilter { path_prefix: Some("/photos/2024/".into()), ..Default::default() }).await, 2);
    assert_eq!(count(PointFilter { path_prefix: Some("/photos".into()), category_id: Some(1), ..Default::default() }).await, 3);
    let combined = PointFilter { path_prefix: Some("/photos".into()), category_id: Some(1), from: Some(at("2024-01-01T00:00:00Z")), to: None };
    let hits = s.search(&n, &unit(0, 0.0), &combined, 10, 0).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.path.as_deref().unwrap()).collect::<Vec<_>>(), ["/photos/2024/a.jpg", "/photos/2024-old/c.jpg"]);
}

async fn pagination_continues_the_ranking(s: &VectorStore) {
    let n = name();
    s.ensure_collection(&spec(&n)).await.unwrap();
    let pts: Vec<AssetPoint> = (0..30).map(|i| point(&format!("/r/{i:02}.jpg"), unit(0, i as f32 * 0.05), "2024-01-01T00:00:00Z", None)).collect();
    s.upsert(&n, pts).await.unwrap();
    let q = unit(0, 0.0);
    let all = s.search(&n, &q, &PointFilter::default(), 30, 0).await.unwrap();
    let mut pages = Vec::new();
    for offset in [0, 10, 20] {
        pages.extend(s.search(&n, &q, &PointFilter::default(), 10, offset).await.unwrap());
    }
    assert_eq!(pages.iter().map(|h| h.asset_id).collect::<Vec<_>>(), all.iter().map(|h| h.asset_id).collect::<Vec<_>>());
    assert_eq!(all[0].path.as_deref(), Some("/r/00.jpg"));
    assert!(all.windows(2).all(|w| w[0].score >= w[1].score), "best first");
    assert!(s.search(&n, &q, &PointFilter::default(), 10, 30).await.unwrap().is_empty(), "past the end");
}

async fn retrieve_returns_vectors_and_skips_unknown_ids(s: &VectorStore) {
    let n = name();
    s.ensure_collection(&spec(&n)).await.unwrap();
    let p = point("/x/1.jpg", unit(2, 0.5), "2024-01-01T00:00:00Z", Some(4));
    s.upsert(&n, vec![p.clone()]).await.unwrap();
    let got = s.retrieve(&n, &[987_654_321, p.asset_id], true).await.unwrap();
    assert_eq!(got.len(), 1);
    let v = got[0].vector.as_ref().unwrap();
    assert!(v.iter().zip(&p.vector).all(|(a, b)| (a - b).abs() < 1e-5), "{v:?}");
    assert_eq!(got[0].payload["asset_id"], p.asset_id.to_string());
    assert_eq!(got[0].payload["path_dirs"], serde_json::json!(["/x"]));
    let bad = s.upsert(&n, vec![AssetPoint { vector: vec![1.0; 3], ..p }]).await.unwrap_err();
    assert!(bad.to_string().contains("has 3 values, the collection takes 8"), "{bad}");
}

async fn a_soft_deleted_point_is_never_found_until_restored(s: &VectorStore) {
    let n = name();
    s.ensure_collection(&spec(&n)).await.unwrap();
    let pts = vec![point("/soft/a.jpg", unit(0, 0.0), "2024-01-01T00:00:00Z", Some(1)), point("/soft/b.jpg", unit(0, 0.5), "2024-01-01T00:00:00Z", Some(1))];
    s.upsert(&n, pts.clone()).await.unwrap();
    assert_eq!(s.set_deleted(&n, &[pts[0].asset_id, 987_654_321], true).await.unwrap(), 1, "one of the two exists");
    for filter in [PointFilter::default(), PointFilter { category_id: Some(1), ..Default::default() }] {
        let hits = s.search(&n, &unit(0, 0.0), &filter, 10, 0).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.path.as_deref().unwrap()).collect::<Vec<_>>(), ["/soft/b.jpg"], "the soft-deleted point is never found");
    }
    // it keeps its vector and its payload says when it was deleted
    let stored = s.retrieve(&n, &[pts[0].asset_id], true).await.unwrap();
    assert_eq!(stored[0].payload["deleted"], true);
    assert!(stored[0].payload["deleted_at"].as_str().is_some_and(|t| t.starts_with("20")), "{}", stored[0].payload);
    assert!(stored[0].vector.is_some());
    assert_eq!(s.count(&n, &PointFilter::default()).await.unwrap(), 2, "still stored");
    // restored, it is found again, first
    assert_eq!(s.set_deleted(&n, &[pts[0].asset_id], false).await.unwrap(), 1);
    let hits = s.search(&n, &unit(0, 0.0), &PointFilter::default(), 10, 0).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.path.as_deref().unwrap()).collect::<Vec<_>>(), ["/soft/a.jpg", "/soft/b.jpg"]);
    assert_eq!(s.set_deleted("no_such_collection", &[pts[0].asset_id], true).await.unwrap(), 0);
}

async fn deletes_return_their_counts(s: &VectorStore) {
    let n = name();
    s.ensure_collection(&spec(&n)).await.unwrap();
    let pts: Vec<AssetPoint> = (0..10).map(|i| point(&format!("/del/{}/{i}.jpg", i % 2), unit(i, 0.0), "2024-01-01T00:00:00Z", Some(i as i64 % 3))).collect();
    s.upsert(&n, pts.clone()).await.unwrap();
    assert_eq!(s.delete_ids(&n, &[pts[0].asset_id, pts[1].asset_id, 987_654_321]).await.unwrap(), 2);
    assert_eq!(s.count(&n, &PointFilter::default()).await.unwrap(), 8);
    let rest: Vec<_> = pts[2..7].iter().map(|p| p.asset_id).collect();
    assert_eq!(s.delete_ids(&n, &rest).await.unwrap(), 5);
    assert_eq!(s.delete_ids(&n, &rest).await.unwrap(), 0, "deleted already");
    assert_eq!(s.count(&n, &PointFilter::default()).await.unwrap(), 3);
}

async fn scroll_returns_every_id_past_ten_thousand(s: &VectorStore) {
    let n = name();
    s.ensure_collection(&spec(&n)).await.unwrap();
    let total = 10_500;
    let mut expected = Vec::with_capacity(total);
    for chunk in (0..total).collect::<Vec<_>>().chunks(2_500) {
        let pts: Vec<AssetPoint> = chunk.iter().map(|i| point(&format!("/s/{i}.jpg"), unit(*i, (*i % 7) as f32 * 0.1), "2024-01-01T00:00:00Z", None)).collect();
        expected.extend(pts.iter().map(|p| p.asset_id));
        s.upsert(&n, pts).await.unwrap();
    }
    let mut ids = s.scroll_ids(&n).await.unwrap();
    ids.sort();
    expected.sort();
    assert_eq!(ids.len(), total);
    assert_eq!(ids, expected);
    assert_eq!(s.count(&n, &PointFilter::default()).await.unwrap(), total as u64);
}

async fn a_missing_collection_searches_empty(s: &VectorStore) {
    let hits = s.search("never_created", &unit(0, 0.0), &PointFilter::default(), 10, 0).await.unwrap();
    assert!(hits.is_empty());
    assert_eq!(s.count("never_created", &PointFilter::default()).await.unwrap(), 0);
    assert!(s.info("never_created").await.unwrap().is_none());
    assert!(s.scroll_ids("never_created").await.unwrap().is_empty());
    let err = s.upsert("never_created", vec![point("/a.jpg", unit(0, 0.0), "2024-01-01T00:00:00Z", None)]).await.unwrap_err();
    assert!(matches!(err, VectorError::NoCollection(_)), "{err}");
}

async fn an_alias_swaps_atomically_and_protects_its_collection(s: &VectorStore) {
    let (v1, v2, alias) = (name(), name(), name());
    s.ensure_collection(&CollectionSpec { model_version: "m1".into(), ..spec(&v1) }).await.unwrap();
    s.ensure_collection(&CollectionSpec { model_version: "m2".into(), ..spec(&v2) }).await.unwrap();
    s.upsert(&v1, vec![point("/old.jpg", unit(0, 0.0), "2024-01-01T00:00:00Z", None)]).await.unwrap();
    s.upsert(&v2, vec![point("/new.jpg", unit(0, 0.0), "2024-01-01T00:00:00Z", None)]).await.unwrap();
    s.set_alias(&alias, &v1).await.unwrap();
    let first = s.search(&alias, &unit(0, 0.0), &PointFilter::default(), 5, 0).await.unwrap();
    assert_eq!(first[0].path.as_deref(), Some("/old.jpg"));
    assert_eq!(s.info(&alias).await.unwrap().unwrap().model_version.as_deref(), Some("m1"));
    s.set_alias(&alias, &v2).await.unwrap();
    let second = s.search(&alias, &unit(0, 0.0), &PointFilter::default(), 5, 0).await.unwrap();
    assert_eq!(second[0].path.as_deref(), Some("/new.jpg"));
    assert_eq!(s.info(&alias).await.unwrap().unwrap().model_version.as_deref(), Some("m2"), "the alias tells which model to search with");
    assert_eq!(s.aliases().await.unwrap().get(&alias), Some(&v2));
    let err = s.drop_collection(&v2).await.unwrap_err();
    assert!(err.to_string().contains("point it elsewhere first"), "{err}");
    assert!(s.drop_collection(&v1).await.unwrap(), "the old collection can go once nothing points at it");
    assert!(!s.list_collections().await.unwrap().contains(&v1));
    assert!(matches!(s.set_alias(&alias, "no_such_collection").await.unwrap_err(), VectorError::NoCollection(_)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_store_keeps_its_points_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let n = name();
    {
        let s = VectorStore::embedded(dir.path()).unwrap();
        s.ensure_collection(&spec(&n)).await.unwrap();
        s.upsert(&n, (0..50).map(|i| point(&format!("/k/{i}.jpg"), unit(i % DIM, (i / DIM) as f32 * 0.2), "2024-01-01T00:00:00Z", None)).collect()).await.unwrap();
        s.set_alias("image_assets", &n).await.unwrap();
    }
    let s = VectorStore::embedded(dir.path()).unwrap();
    assert_eq!(s.count("image_assets", &PointFilter::default()).await.unwrap(), 50);
    let best = s.search("image_assets", &unit(0, 0.0), &PointFilter::default(), 1, 0).await.unwrap();
    assert_eq!(best[0].path.as_deref(), Some("/k/0.jpg"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_server_is_unavailable_not_empty() {
    let f = server().await;
    let n = name();
    f.store.ensure_collection(&spec(&n)).await.unwrap();
    f.store.upsert(&n, vec![point("/u/1.jpg", unit(0, 0.0), "2024-01-01T00:00:00Z", None)]).await.unwrap();
    f.store.health().await.unwrap();
    f.qdrant.stop().await;
    let err = f.store.search(&n, &unit(0, 0.0), &PointFilter::default(), 5, 0).await.unwrap_err();
    assert!(matches!(err, VectorError::Unavailable(_)), "search: {err:?}");
    assert!(err.to_string().starts_with("vector store unavailable"), "{err}");
    assert!(matches!(f.store.count(&n, &PointFilter::default()).await.unwrap_err(), VectorError::Unavailable(_)));
    assert!(matches!(f.store.health().await.unwrap_err(), VectorError::Unavailable(_)));
    let write = f.store.upsert(&n, vec![point("/u/2.jpg", unit(1, 0.0), "2024-01-01T00:00:00Z", None)]).await.unwrap_err();
    assert!(matches!(write, VectorError::Unavailable(_)), "upsert: {write:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_listened_is_unavailable() {
    // a port that was free a moment ago and has nothing listening now
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = VectorStore::server(&format!("http://127.0.0.1:{port}")).unwrap();
    let err = store.search("image_assets", &unit(0, 0.0), &PointFilter::default(), 5, 0).await.unwrap_err();
    assert!(matches!(err, VectorError::Unavailable(_)), "{err:?}");
    assert!(matches!(store.ensure_collection(&spec("image_assets")).await.unwrap_err(), VectorError::Unavailable(_)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_fixture_keeps_its_points_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let n = name();
    {
        let q = qdrant_fixture::QdrantFixture::start(dir.path()).await.unwrap();
        let s = VectorStore::server(&q.url()).unwrap();
        s.ensure_collection(&spec(&n)).await.unwrap();
        s.upsert(&n, (0..50).map(|i| point(&format!("/k/{i}.jpg"), unit(i % DIM, (i / DIM) as f32 * 0.2), "2024-01-01T00:00:00Z", None)).collect()).await.unwrap();
        s.set_alias("image_assets", &n).await.unwrap();
        q.stop().await;
    }
    let q = qdrant_fixture::QdrantFixture::start(dir.path()).await.unwrap();
    let s = VectorStore::server(&q.url()).unwrap();
    assert_eq!(s.count("image_assets", &PointFilter::default()).await.unwrap(), 50);
    let info = s.info("image_assets").await.unwrap().unwrap();
    assert_eq!((info.name.as_str(), info.model_version.as_deref()), (n.as_str(), Some("m1")));
    q.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_on_the_same_directory_is_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let n = name();
    let first = VectorStore::embedded(dir.path()).unwrap();
    first.ensure_collection(&spec(&n)).await.unwrap();
    first.count(&n, &PointFilter::default()).await.unwrap();
    // qdrant-edge's lock is per open file, so a second store in this process stands in for a second process
    let second = VectorStore::embedded(dir.path()).unwrap();
    let err = second.count(&n, &PointFilter::default()).await.unwrap_err();
    assert!(matches!(err, VectorError::InUse(_)), "{err:?}");
    assert!(err.to_string().contains("in use by another process"), "{err}");
}

/// The first callers on a store opened over an existing collection (serve's start-up optimize and
/// the first search) open its shard once between them: before, each loaded it, and all but one
/// found it locked ("in use by another process").
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_first_calls_open_a_collection_once() {
    let dir = tempfile::tempdir().unwrap();
    let n = name();
    {
        let s = VectorStore::embedded(dir.path()).unwrap();
        s.ensure_collection(&spec(&n)).await.unwrap();
        s.upsert(&n, vec![point("/a.jpg", vec![1.0; DIM], "2024-01-01T00:00:00Z", None)]).await.unwrap();
    }
    for _ in 0..5 {
        let s = std::sync::Arc::new(VectorStore::embedded(dir.path()).unwrap());
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (s, barrier, n) = (s.clone(), barrier.clone(), n.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.search(&n, &[1.0; DIM], &PointFilter::default(), 5, 0).await.map(|hits| hits.len())
                })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap(), 1);
        }
    }
}
