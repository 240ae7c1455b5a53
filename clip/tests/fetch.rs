//! `fetch_model` against a local HTTP server that serves a model directory the way the Hugging Face
//! hub does (see `support/hub.rs`), and that can cut a download in the middle or serve a corrupted file.

#[path = "support/hub.rs"]
mod hub;

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use clip::{
    ModelDir,
    fetch::{FetchError, FetchSource, Silent, fetch_model},
    model::REQUIRED_FILES,
};
use hub::{Hub, serve};

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
