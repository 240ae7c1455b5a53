//! `fetch_model` against a local HTTP server that serves a model directory the way the Hugging Face
//! hub does (`/api/models/{repo}/tree/{rev}` with checksums, `/{repo}/resolve/{rev}/{file}` with range
//! requests), and that can cut a download in the middle or serve a corrupted file.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use clip::{
    ModelDir,
    fetch::{FetchError, FetchSource, Silent, fetch_model},
    model::REQUIRED_FILES,
};
use sha1::Sha1;
use sha2::{Digest, Sha256};

#[derive(Default)]
struct Hub {
    root: PathBuf,
    /// files whose next download stops half way, connection dropped
    cut_next: Mutex<HashSet<String>>,
    /// files served with one byte changed
    corrupt: HashSet<String>,
    /// (file, first byte asked for) of every download
    requests: Mutex<Vec<(String, u64)>>,
}

async fn tree(State(hub): State<Arc<Hub>>, UrlPath((_owner, _name, _rev)): UrlPath<(String, String, String)>) -> Json<serde_json::Value> {
    let mut entries = vec![serde_json::json!({"type": "directory", "path": "visual", "size": 0, "oid": "0"})];
    for file in REQUIRED_FILES {
        let bytes = std::fs::read(hub.root.join(file)).unwrap();
        if file.ends_with(".onnx") {
            // large files live in LFS: sha256 of the content
            entries.push(serde_json::json!({"type": "file", "path": file, "size": 134, "oid": "pointer",
                "lfs": {"oid": hex::encode(Sha256::digest(&bytes)), "size": bytes.len(), "pointerSize": 134}}));
        } else {
            let mut h = Sha1::new();
            h.update(format!("blob {}\0", bytes.len()));
            h.update(&bytes);
            entries.push(serde_json::json!({"type": "file", "path": file, "size": bytes.len(), "oid": hex::encode(h.finalize())}));
        }
    }
    Json(serde_json::Value::Array(entries))
}

async fn resolve(State(hub): State<Arc<Hub>>, UrlPath((_owner, _name, _rev, file)): UrlPath<(String, String, String, String)>, headers: HeaderMap) -> Response {
    let Ok(mut bytes) = std::fs::read(hub.root.join(&file)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if hub.corrupt.contains(&file) {
        bytes[0] ^= 0xFF;
    }
    let from = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.trim_end_matches('-').parse::<u64>().ok())
        .unwrap_or(0);
    hub.requests.lock().unwrap().push((file.clone(), from));
    let total = bytes.len() as u64;
    let body = bytes[from as usize..].to_vec();
    let status = if from > 0 { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let len = body.len();
    let cut = hub.cut_next.lock().unwrap().remove(&file);
    let stream_body = if cut {
        // send half, let it reach the client, then fail the stream: the connection closes early
        use futures_util::StreamExt;
        let half = Bytes::from(body[..len / 2].to_vec());
        let cut = futures_util::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            Err::<Bytes, _>(std::io::Error::other("connection cut by the test"))
        });
        Body::from_stream(futures_util::stream::iter(vec![Ok(half)]).chain(cut))
    } else {
        Body::from(body)
    };
    let mut resp = Response::builder().status(status).header(header::CONTENT_LENGTH, len);
    if from > 0 {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {from}-{}/{total}", total - 1));
    }
    resp.body(stream_body).unwrap()
}

async fn serve(hub: Arc<Hub>) -> SocketAddr {
    let app = Router::new()
        .route("/api/models/{owner}/{name}/tree/{rev}", get(tree))
        .route("/{owner}/{name}/resolve/{rev}/{*file}", get(resolve))
        .with_state(hub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/tiny-clip")
}

fn source(addr: SocketAddr) -> FetchSource {
    FetchSource { base_url: format!("http://{addr}"), owner: "test-owner".into(), revision: "main".into() }
}

async fn fetch(addr: SocketAddr, cache: &Path) -> Result<(PathBuf, clip::fetch::FetchReport), FetchError> {
    let cache = cache.to_owned();
    tokio::task::spawn_blocking(move || fetch_model("tiny-clip", &cache, &source(addr), &Silent)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_download_resumes_and_every_file_is_verified() {
    let hub = Arc::new(Hub { root: tiny_model(), cut_next: Mutex::new(HashSet::from(["visual/model.onnx".to_owned()])), ..Default::default() });
    let addr = serve(hub.clone()).await;
    let cache = tempfile::tempdir().unwrap();

    let err = fetch(addr, cache.path()).await.unwrap_err();
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err}");
    let part = cache.path().join("tiny-clip/visual/model.onnx.part");
    let partial = std::fs::metadata(&part).expect("the partial download is kept").len();
    assert!(partial > 0);
    let err = ModelDir::open(cache.path().join("tiny-clip")).unwrap_err().to_string();
    assert!(err.contains("interrupted") && err.contains("resume"), "{err}");

    let (dir, report) = fetch(addr, cache.path()).await.unwrap();
    assert!(hub.requests.lock().unwrap().contains(&("visual/model.onnx".to_owned(), partial)), "resumed with a range request from byte {partial}");
    assert!(report.already_present.contains(&"config.json".to_owned()), "{report:?}");
    for file in REQUIRED_FILES {
        assert_eq!(std::fs::read(dir.join(file)).unwrap(), std::fs::read(tiny_model().join(file)).unwrap(), "{file}");
    }
    assert!(!part.exists());
    ModelDir::open(&dir).unwrap();

    let (_, again) = fetch(addr, cache.path()).await.unwrap();
    assert!(again.downloaded.is_empty() && again.already_present.len() == REQUIRED_FILES.len(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_file_fails_its_checksum_and_is_not_kept() {
    let hub = Arc::new(Hub { root: tiny_model(), corrupt: HashSet::from(["textual/tokenizer.json".to_owned()]), ..Default::default() });
    let addr = serve(hub).await;
    let cache = tempfile::tempdir().unwrap();
    let err = fetch(addr, cache.path()).await.unwrap_err();
    assert!(matches!(err, FetchError::Checksum { .. }), "{err}");
    assert!(err.to_string().starts_with("textual/tokenizer.json failed its checksum"), "{err}");
    assert!(!cache.path().join("tiny-clip/textual/tokenizer.json").exists());
    assert!(!cache.path().join("tiny-clip/textual/tokenizer.json.part").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_model_and_an_unreachable_hub_say_what_to_do() {
    let addr = serve(Arc::new(Hub { root: PathBuf::from("/nonexistent"), ..Default::default() })).await;
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().to_owned();
    let src = FetchSource { base_url: format!("http://{addr}/nothing-here"), ..source(addr) };
    let err = tokio::task::spawn_blocking(move || fetch_model("no-such-model", &dir, &src, &Silent)).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("answered 404; check the model name"), "{err}");

    let dir = cache.path().to_owned();
    let src = FetchSource { base_url: "http://127.0.0.1:1".into(), ..Default::default() };
    let err = tokio::task::spawn_blocking(move || fetch_model("ViT-B-32__openai", &dir, &src, &Silent)).await.unwrap().unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("cannot reach http://127.0.0.1:1/api/models/immich-app/ViT-B-32__openai/tree/main"), "{msg}");
    assert!(msg.contains("pass --model DIR"), "{msg}");
}
