//! The REST API as a client sees it: status codes, the error shape, search results hydrated from the
//! catalog, sessions that index in the background, 503 when the vector store is down.

use std::{path::Path, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
};
use catalog::Catalog;
use clip::{ClipModel, ModelDir, RuntimeOptions};
use http_body_util::BodyExt;
use imgsearch::{App, api::ApiState};
use serde_json::{Value, json};
use tower::ServiceExt;
use vectors::VectorStore;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn model() -> Arc<ClipModel> {
    let library = std::env::var_os("ORT_DYLIB_PATH").map(Into::into).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-ort/libonnxruntime.so"));
    let options = RuntimeOptions { library: Some(library), ..Default::default() };
    Arc::new(ClipModel::load(&ModelDir::open(fixtures().join("models/tiny-clip")).unwrap(), &options).unwrap())
}

async fn call(app: &Router, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    send(app, req.body(body).unwrap()).await
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

fn multipart(file: &[u8]) -> Request<Body> {
    let boundary = "XBOUNDARYX";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.png\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Request::builder()
        .method("POST")
        .uri("/api/v1/search/image?limit=5")
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from(body))
        .unwrap()
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

struct Served {
    router: Router,
    images: tempfile::TempDir,
    _data: tempfile::TempDir,
}

async fn embedded() -> Served {
    let data = tempfile::tempdir().unwrap();
    let images = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixtures().join("shapes")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), images.path().join(e.file_name())).unwrap();
    }
    let app = App::open_embedded(data.path()).await.unwrap();
    let model = model();
    let collection = app.collection_for(&model.version, model.embed_dim).await.unwrap();
    let state = ApiState::new(app.catalog.clone(), app.vectors.clone(), model, collection, vec![images.path().to_owned()]);
    Served { router: imgsearch::api::router(state), images, _data: data }
}

async fn wait_done(app: &Router, id: &str) -> Value {
    for _ in 0..600 {
        let (status, p) = call(app, "GET", &format!("/api/v1/training/sessions/{id}/progress"), None).await;
        assert_eq!(status, StatusCode::OK, "{p}");
        if p["status"] != "running" {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("session {id} did not finish");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_indexes_a_folder_and_search_answers_from_it() {
    let s = embedded().await;
    let app = &s.router;
    let root = s.images.path().to_str().unwrap();

    // before anything is indexed: empty results, not an error
    let (status, body) = call(app, "POST", "/api/v1/search", Some(json!({"query": "a red circle"}))).await;
    assert_eq!((status, body["results"].as_array().unwrap().len()), (StatusCode::OK, 0));

    let (status, body) = call(app, "POST", "/api/v1/training/sessions", Some(json!({"name": "shapes", "rootPath": "/etc"}))).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    assert!(body["message"].as_str().unwrap().contains("outside the allowed roots"), "{body}");
    let (status, body) = call(app, "POST", "/api/v1/training/sessions", Some(json!({"name": "shapes", "rootPath": format!("{root}/nope")}))).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");

    let (status, session) = call(app, "POST", "/api/v1/training/sessions", Some(json!({"name": "shapes", "rootPath": root}))).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert_eq!(session["status"], "pending");
    let id = session["id"].as_str().unwrap().to_owned();
    let (status, body) = call(app, "POST", &format!("/api/v1/training/sessions/{id}/pause"), None).await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");

    let (status, started) = call(app, "POST", &format!("/api/v1/training/sessions/{id}/start"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let progress = wait_done(app, &id).await;
    assert_eq!(progress["status"], "completed", "{progress}");
    assert_eq!((progress["totalImages"].as_i64(), progress["processedImages"].as_i64(), progress["percentage"].as_f64()), (Some(240), Some(240), Some(100.0)));
    let (status, body) = call(app, "POST", &format!("/api/v1/training/sessions/{id}/start"), None).await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");

    let (status, found) = call(app, "POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 5}))).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let results = found["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    for r in results {
        assert!(r["asset"]["path"].as_str().unwrap().contains("/red-circle-"), "{r}");
        assert_eq!(r["asset"]["trainingStatus"], "trained");
    }
    assert_eq!(found["query"], "a red circle");

    // similar images of the best hit: itself left out, the same kind of shape first
    let best = results[0]["asset"]["id"].as_str().unwrap();
    let (status, similar) = call(app, "GET", &format!("/api/v1/search/similar/{best}?limit=3"), None).await;
    assert_eq!(status, StatusCode::OK, "{similar}");
    let similar = similar["results"].as_array().unwrap();
    assert_eq!(similar.len(), 3);
    assert!(similar.iter().all(|r| r["asset"]["id"] != best && r["asset"]["path"].as_str().unwrap().contains("/red-circle-")), "{similar:?}");
    let (status, body) = call(app, "GET", &format!("/api/v1/search/similar/{}", uuid::Uuid::new_v4()), None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    // search by an uploaded image
    let mut png = Vec::new();
    image::RgbImage::from_fn(64, 64, |x, y| {
        let (dx, dy) = (x as i32 - 32, y as i32 - 32);
        if dx * dx + dy * dy < 400 { image::Rgb([220, 30, 30]) } else { image::Rgb([255, 255, 255]) }
    })
    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
    .unwrap();
    let (status, by_image) = send(app, multipart(&png)).await;
    assert_eq!(status, StatusCode::OK, "{by_image}");
    assert!(by_image["results"][0]["asset"]["path"].as_str().unwrap().contains("/red-circle-"), "{by_image}");
    let (status, body) = send(app, multipart(b"certainly not an image")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");

    // a thumbnail of the best hit, and the web page that shows them
    let resp = app.clone().oneshot(Request::get(format!("/api/v1/assets/{best}/thumbnail?size=32")).body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!((resp.status(), resp.headers()[header::CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "image/jpeg"));
    let jpeg = resp.into_body().collect().await.unwrap().to_bytes();
    let thumb = image::load_from_memory(&jpeg).unwrap();
    assert_eq!(thumb.width().max(thumb.height()), 32);
    let (status, body) = call(app, "GET", &format!("/api/v1/assets/{best}/thumbnail?size=5"), None).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let (status, body) = call(app, "GET", &format!("/api/v1/assets/{}/thumbnail", uuid::Uuid::new_v4()), None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, page) = call(app, "GET", "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("/api/v1/search"), "the page calls the API");

    // evidence and jobs
    let (status, evidence) = call(app, "GET", &format!("/api/v1/evidence?assetId={best}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let ev = &evidence[0];
    assert_eq!(ev["modelName"], "tiny-clip");
    assert_eq!(ev["embeddingChecksum"].as_str().unwrap().len(), 64);
    for section in ["image", "embedding", "environment", "timing"] {
        assert!(ev["metadata"][section].is_object(), "{section} in {ev}");
    }
    let (_, jobs) = call(app, "GET", &format!("/api/v1/jobs?sessionId={id}&status=completed&pageSize=1"), None).await;
    assert_eq!(jobs["total"], 240);
    let (status, body) = call(app, "GET", &format!("/api/v1/jobs?sessionId={id}&status=done"), None).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_the_error_shape_never_a_500() {
    let s = embedded().await;
    let app = &s.router;
    let (status, body) = call(app, "POST", "/api/v1/search", Some(json!({"query": "x", "limit": 101}))).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    assert!(body["message"].as_str().unwrap().contains("between 1 and 100"), "{body}");
    let (status, body) = call(app, "POST", "/api/v1/search", Some(json!({"query": 3}))).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let bad_json = Request::builder().method("POST").uri("/api/v1/search").header(header::CONTENT_TYPE, "application/json").body(Body::from("{not json")).unwrap();
    let (status, body) = send(app, bad_json).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = call(app, "GET", "/api/v1/assets/not-a-uuid", None).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = call(app, "GET", "/api/v1/nothing-here", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    let (status, cat) = call(app, "POST", "/api/v1/categories", Some(json!({"name": "cats", "color": "#ff0000"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{cat}");
    let (status, body) = call(app, "POST", "/api/v1/categories", Some(json!({"name": "cats"}))).await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, body) = call(app, "PATCH", &format!("/api/v1/categories/{}", cat["id"]), Some(json!({"description": "felines"}))).await;
    assert_eq!((status, body["description"].as_str()), (StatusCode::OK, Some("felines")));
    let (status, _) = call(app, "DELETE", &format!("/api/v1/categories/{}", cat["id"]), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = call(app, "GET", &format!("/api/v1/categories/{}", cat["id"]), None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    let (status, doc) = call(app, "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    for path in ["/api/v1/search", "/api/v1/search/image", "/api/v1/training/sessions/{id}/start", "/api/v1/categories"] {
        assert!(doc["paths"][path].is_object(), "{path} in the OpenAPI document");
    }
    let (status, ready) = call(app, "GET", "/ready", None).await;
    assert_eq!((status, ready["status"].as_str()), (StatusCode::OK, Some("ready")));
    let metrics = app.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let text = String::from_utf8(metrics.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains(r#"imgsearch_api_requests_total{route="/api/v1/search",status="422"} 2"#), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_vector_store_down_is_503() {
    let data = tempfile::tempdir().unwrap();
    let qdrant_dir = tempfile::tempdir().unwrap();
    let qdrant = qdrant_fixture::QdrantFixture::start(qdrant_dir.path()).await.unwrap();
    let vectors = Arc::new(VectorStore::server(&qdrant.url()).unwrap());
    let catalog = Catalog::connect_sqlite(&data.path().join("catalog.sqlite")).await.unwrap();
    let model = model();
    vectors
        .ensure_collection(&vectors::CollectionSpec { name: "image_assets_v1".into(), dim: model.embed_dim, model_version: model.version.clone() })
        .await
        .unwrap();
    vectors.set_alias("image_assets", "image_assets_v1").await.unwrap();
    let app = imgsearch::api::router(ApiState::new(catalog, vectors, model, "image_assets_v1".into(), vec![]));
    let (status, body) = call(&app, "POST", "/api/v1/search", Some(json!({"query": "a red circle"}))).await;
    assert_eq!((status, body["results"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{body}");
    qdrant.stop().await;
    let (status, body) = call(&app, "POST", "/api/v1/search", Some(json!({"query": "a red circle"}))).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let (status, body) = call(&app, "GET", "/ready", None).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
}

#[tokio::test(flavor = "multi_thread")]
async fn subdirectories_choose_what_a_session_indexes_and_restart_embeds_again() {
    let s = embedded().await;
    let app = &s.router;
    let root = s.images.path();
    // a/: the red circles, b/: the blue squares, one picture directly in the root, the rest removed
    std::fs::create_dir(root.join("a")).unwrap();
    std::fs::create_dir(root.join("b")).unwrap();
    let mut kept_in_root = false;
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        if p.is_dir() {
            continue;
        } else if name.starts_with("red-circle-") {
            std::fs::rename(&p, root.join("a").join(&name)).unwrap();
        } else if name.starts_with("blue-square-") {
            std::fs::rename(&p, root.join("b").join(&name)).unwrap();
        } else if !kept_in_root && name.starts_with("green-triangle-") {
            kept_in_root = true;
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let root_str = root.to_str().unwrap();

    let (status, scan) = call(app, "POST", "/api/v1/training/directories/scan", Some(json!({"rootPath": root_str}))).await;
    assert_eq!(status, StatusCode::OK, "{scan}");
    assert_eq!(scan["rootImageCount"], 1);
    let dirs: Vec<(String, i64)> = scan["directories"].as_array().unwrap().iter().map(|d| (d["name"].as_str().unwrap().to_owned(), d["imageCount"].as_i64().unwrap())).collect();
    assert_eq!(dirs, [("a".to_owned(), 20), ("b".to_owned(), 20)]);
    let (status, body) = call(app, "POST", "/api/v1/training/directories/scan", Some(json!({"rootPath": "/usr"}))).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");

    let (_, session) = call(app, "POST", "/api/v1/training/sessions", Some(json!({"name": "two folders", "rootPath": root_str}))).await;
    let id = session["id"].as_str().unwrap().to_owned();
    let (status, subdirs) = call(app, "GET", &format!("/api/v1/training/sessions/{id}/subdirectories"), None).await;
    assert_eq!(status, StatusCode::OK, "{subdirs}");
    assert!(subdirs.as_array().unwrap().iter().all(|d| d["selected"] == true && d["imageCount"] == 20), "{subdirs}");
    let b_path = root.canonicalize().unwrap().join("b").to_str().unwrap().to_owned();
    let (status, subdirs) = call(app, "PATCH", &format!("/api/v1/training/sessions/{id}/subdirectories"), Some(json!({"selections": [{"path": b_path, "selected": false}]}))).await;
    assert_eq!(status, StatusCode::OK, "{subdirs}");
    assert_eq!(subdirs.as_array().unwrap().iter().filter(|d| d["selected"] == false).count(), 1);
    let (status, body) = call(app, "PATCH", &format!("/api/v1/training/sessions/{id}/subdirectories"), Some(json!({"selections": [{"path": "/nowhere", "selected": false}]}))).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    call(app, "POST", &format!("/api/v1/training/sessions/{id}/start"), None).await;
    let progress = wait_done(app, &id).await;
    assert_eq!((progress["status"].as_str(), progress["processedImages"].as_i64()), (Some("completed"), Some(21)), "a/ and the root file, not b/: {progress}");
    let (_, found) = call(app, "POST", "/api/v1/search", Some(json!({"query": "a blue square", "limit": 100}))).await;
    let paths: Vec<&str> = found["results"].as_array().unwrap().iter().map(|r| r["asset"]["path"].as_str().unwrap()).collect();
    assert_eq!(paths.len(), 21);
    assert!(paths.iter().all(|p| !p.contains("/b/")), "{paths:?}");

    let (status, renamed) = call(app, "PATCH", &format!("/api/v1/training/sessions/{id}"), Some(json!({"name": "renamed"}))).await;
    assert_eq!((status, renamed["name"].as_str()), (StatusCode::OK, Some("renamed")));

    // restart: everything selected is embedded again, with new evidence
    call(app, "PATCH", &format!("/api/v1/training/sessions/{id}/subdirectories"), Some(json!({"selections": [{"path": b_path, "selected": true}]}))).await;
    let (status, restarted) = call(app, "POST", &format!("/api/v1/training/sessions/{id}/restart"), Some(json!({"reason": "include b"}))).await;
    assert_eq!(status, StatusCode::OK, "{restarted}");
    assert_eq!((restarted["status"].as_str(), restarted["resetReason"].as_str()), (Some("pending"), Some("include b")));
    let (status, body) = call(app, "POST", &format!("/api/v1/training/sessions/{id}/restart"), None).await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    call(app, "POST", &format!("/api/v1/training/sessions/{id}/start"), None).await;
    let progress = wait_done(app, &id).await;
    assert_eq!(progress["processedImages"], 41, "{progress}");

    let (status, _) = call(app, "DELETE", &format!("/api/v1/training/sessions/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = call(app, "GET", &format!("/api/v1/training/sessions/{id}"), None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}
