//! The REST API as a client sees it: `imgsearch serve --addr 127.0.0.1:0` started as a user starts
//! it, driven over HTTP. Status codes, the error shape, search results hydrated from the catalog,
//! sessions that index in the background, 503 when the vector store is down.

use std::{
    path::Path,
    process::{Child, Command},
    time::Duration,
};

use serde_json::{Value, json};

use crate::fixtures;

/// A running `imgsearch serve` on a free port, killed when dropped.
struct Server {
    child: Child,
    base: String,
    agent: ureq::Agent,
    images: tempfile::TempDir,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The 240 held-out shapes in a fresh directory, which is the only root sessions may index.
fn start(extra: &[&str]) -> Server {
    start_with(&[], extra)
}

/// `start`, with these environment variables (failpoints) too.
fn start_with(env: &[(&str, &str)], extra: &[&str]) -> Server {
    let images = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixtures().join("shapes")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), images.path().join(e.file_name())).unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgsearch"));
    cmd.envs(env.iter().copied());
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        cmd.env("ORT_DYLIB_PATH", Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-ort/libonnxruntime.so"));
    }
    let (child, base) = crate::spawn_serve(
        cmd.env("IMGSEARCH_MODEL", fixtures().join("models/tiny-clip"))
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .arg("--allow-root")
            .arg(images.path())
            .args(extra),
    );
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(60))).build().into();
    Server { child, base, agent, images, _data: data }
}

impl Server {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", None) => self.agent.delete(&url).call(),
            ("DELETE", Some(b)) => self.agent.delete(&url).force_send_body().header("content-type", "application/json").send(b.to_string()),
            ("POST", None) => self.agent.post(&url).send_empty(),
            ("POST", Some(b)) => self.agent.post(&url).header("content-type", "application/json").send(b.to_string()),
            ("PATCH", Some(b)) => self.agent.patch(&url).header("content-type", "application/json").send(b.to_string()),
            other => panic!("{other:?}"),
        };
        read(resp.unwrap())
    }

    fn send_raw(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        read(self.agent.post(&format!("{}{path}", self.base)).header("content-type", content_type).send(body).unwrap())
    }

    fn get_bytes(&self, path: &str) -> (u16, String, Vec<u8>) {
        let mut resp = self.agent.get(&format!("{}{path}", self.base)).call().unwrap();
        let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        (resp.status().as_u16(), ct, resp.body_mut().read_to_vec().unwrap())
    }

    fn search_image(&self, file: &[u8]) -> (u16, Value) {
        let boundary = "XBOUNDARYX";
        let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.png\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        self.send_raw("/api/v1/search/image?limit=5", &format!("multipart/form-data; boundary={boundary}"), &body)
    }

    fn wait_done(&self, id: i64) -> Value {
        for _ in 0..1200 {
            let (status, p) = self.call("GET", &format!("/api/v1/training/sessions/{id}/progress"), None);
            assert_eq!(status, 200, "{p}");
            if p["status"] != "running" {
                return p;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("session {id} did not finish");
    }
}

fn read(mut resp: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn assert_error(status: u16, body: &Value, expected: u16, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[test]
fn a_session_indexes_a_folder_and_search_answers_from_it() {
    let s = start(&[]);
    let root = s.images.path().to_str().unwrap();

    // before anything is indexed: empty results, not an error
    let (status, body) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle"})));
    assert_eq!((status, body["results"].as_array().map(Vec::len)), (200, Some(0)), "{body}");

    let (status, body) = s.call("POST", "/api/v1/training/sessions", Some(json!({"name": "shapes", "rootPath": "/etc"})));
    assert_error(status, &body, 400, "bad_request");
    assert!(body["message"].as_str().unwrap().contains("outside the allowed roots"), "{body}");
    assert_eq!(body["detail"], body["message"], "the service's clients read `detail`");
    let (status, body) = s.call("POST", "/api/v1/training/sessions", Some(json!({"name": "shapes", "rootPath": format!("{root}/nope")})));
    assert_error(status, &body, 400, "bad_request");

    let (_, category) = s.call("POST", "/api/v1/categories", Some(json!({"name": "shapes"})));
    let category = category["id"].as_i64().unwrap();
    let (status, session) = s.call("POST", "/api/v1/training/sessions", Some(json!({"name": "shapes", "rootPath": root, "categoryId": category})));
    assert_eq!(status, 200, "{session}");
    assert_eq!((session["status"].as_str(), session["category"]["name"].as_str()), (Some("pending"), Some("shapes")));
    let id = session["id"].as_i64().unwrap();
    let (status, body) = s.call("POST", &format!("/api/v1/training/sessions/{id}/pause"), None);
    assert_error(status, &body, 400, "bad_request");

    let (status, started) = s.call("POST", &format!("/api/v1/training/sessions/{id}/start"), None);
    assert_eq!((status, started["sessionId"].as_i64(), started["status"].as_str()), (200, Some(id), Some("running")), "{started}");
    let progress = s.wait_done(id);
    assert_eq!(progress["status"], "completed", "{progress}");
    assert_eq!((progress["totalImages"].as_i64(), progress["processedImages"].as_i64()), (Some(240), Some(240)));
    assert_eq!(
        (progress["progress"]["current"].as_i64(), progress["progress"]["total"].as_i64(), progress["progress"]["percentage"].as_f64()),
        (Some(240), Some(240), Some(100.0))
    );
    assert_eq!(progress["jobsSummary"]["completed"], 240, "{progress}");
    let (status, body) = s.call("POST", &format!("/api/v1/training/sessions/{id}/start"), None);
    assert_error(status, &body, 400, "bad_request");

    let (status, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 5})));
    assert_eq!(status, 200, "{found}");
    let results = found["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    for r in results {
        assert!(r["asset"]["path"].as_str().unwrap().contains("/red-circle-"), "{r}");
        assert_eq!(r["asset"]["trainingStatus"], "trained");
    }
    assert_eq!(found["query"], "a red circle");

    // pages continue the ranking; every filter narrows it
    let (_, ten) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 10})));
    let (_, page2) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 5, "offset": 5})));
    let ids = |v: &Value| v["results"].as_array().unwrap().iter().map(|r| r["asset"]["id"].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(ids(&page2), ids(&ten)[5..]);
    let count = |body: Value| {
        let (status, found) = s.call("POST", "/api/v1/search", Some(body));
        assert_eq!(status, 200, "{found}");
        found["results"].as_array().unwrap().len()
    };
    let today = chrono::Utc::now().date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc().to_rfc3339();
    assert_eq!(count(json!({"query": "a red circle", "limit": 7, "categoryId": category})), 7);
    assert_eq!(count(json!({"query": "a red circle", "categoryId": category + 1})), 0);
    assert_eq!(count(json!({"query": "a red circle", "limit": 7, "filters": {"fromDate": today}})), 7, "files are dated by mtime: today");
    assert_eq!(count(json!({"query": "a red circle", "filters": {"toDate": "2001-01-01T00:00:00Z"}})), 0);
    assert_eq!(count(json!({"query": "a red circle", "limit": 3, "categoryId": category, "filters": {"fromDate": today, "toDate": "2999-01-01T00:00:00+02:00"}})), 3);
    let (status, body) = s.call("POST", "/api/v1/search", Some(json!({"query": "x", "filters": {"fromDate": "2024-02-01T00:00:00Z", "toDate": "2024-01-01T00:00:00Z"}})));
    assert_error(status, &body, 422, "unprocessable");

    // similar images of the best hit: itself left out, the same kind of shape first
    let best = results[0]["asset"]["id"].as_i64().unwrap();
    assert_eq!(results[0]["asset"]["thumbnailUrl"], format!("/api/v1/images/{best}/thumbnail"));
    assert_eq!(results[0]["asset"]["url"], format!("/api/v1/images/{best}/full"));
    assert!(results[0]["asset"]["filename"].as_str().unwrap().starts_with("red-circle-"), "{}", results[0]);
    let (status, similar) = s.call("GET", &format!("/api/v1/search/similar/{best}?limit=3"), None);
    assert_eq!(status, 200, "{similar}");
    let similar = similar["results"].as_array().unwrap();
    assert_eq!(similar.len(), 3);
    assert!(similar.iter().all(|r| r["asset"]["id"] != best && r["asset"]["path"].as_str().unwrap().contains("/red-circle-")), "{similar:?}");
    let (status, body) = s.call("GET", "/api/v1/search/similar/987654321", None);
    assert_error(status, &body, 404, "not_found");

    // search by an uploaded image
    let mut png = Vec::new();
    image::RgbImage::from_fn(64, 64, |x, y| {
        let (dx, dy) = (x as i32 - 32, y as i32 - 32);
        if dx * dx + dy * dy < 400 { image::Rgb([220, 30, 30]) } else { image::Rgb([255, 255, 255]) }
    })
    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
    .unwrap();
    let (status, by_image) = s.search_image(&png);
    assert_eq!(status, 200, "{by_image}");
    assert!(by_image["results"][0]["asset"]["path"].as_str().unwrap().contains("/red-circle-"), "{by_image}");
    let (status, body) = s.search_image(b"certainly not an image");
    assert_error(status, &body, 400, "bad_request");

    // a thumbnail of the best hit, and the web page that shows them
    let (status, content_type, jpeg) = s.get_bytes(&format!("/api/v1/images/{best}/thumbnail?size=32"));
    assert_eq!((status, content_type.as_str()), (200, "image/jpeg"));
    let thumb = image::load_from_memory(&jpeg).unwrap();
    assert_eq!(thumb.width().max(thumb.height()), 32);
    let (status, body) = s.call("GET", &format!("/api/v1/images/{best}/thumbnail?size=5"), None);
    assert_error(status, &body, 422, "unprocessable");
    let (status, body) = s.call("GET", "/api/v1/images/987654321/thumbnail", None);
    assert_error(status, &body, 404, "not_found");
    let (status, content_type, original) = s.get_bytes(&format!("/api/v1/images/{best}/full"));
    let path = results[0]["asset"]["path"].as_str().unwrap();
    let expected = if path.ends_with(".png") { "image/png" } else { "image/jpeg" };
    assert_eq!((status, content_type.as_str()), (200, expected), "{path}");
    assert_eq!(original, std::fs::read(path).unwrap(), "the original file, byte for byte");
    let (status, page) = s.call("GET", "/", None);
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("/api/v1/search"), "the page calls the API");

    // evidence and jobs
    let (status, evidence) = s.call("GET", &format!("/api/v1/evidence?assetId={best}"), None);
    assert_eq!(status, 200);
    let ev = &evidence["items"][0];
    assert_eq!((evidence["total"].as_i64(), evidence["page"].as_i64(), evidence["hasMore"].as_bool()), (Some(1), Some(1), Some(false)), "{evidence}");
    assert_eq!(ev["modelName"], "tiny-clip");
    assert_eq!(ev["embeddingChecksum"].as_str().unwrap().len(), 64);
    for section in ["image", "embedding", "environment", "timing"] {
        assert!(ev["metadata"][section].is_object(), "{section} in {ev}");
    }
    let (_, jobs) = s.call("GET", &format!("/api/v1/jobs?sessionId={id}&status=completed&pageSize=1"), None);
    assert_eq!(jobs["total"], 240);
    let (status, body) = s.call("GET", &format!("/api/v1/jobs?sessionId={id}&status=done"), None);
    assert_error(status, &body, 422, "unprocessable");
}

#[test]
fn bad_requests_get_the_error_shape_never_a_500() {
    let s = start(&[]);
    let (status, body) = s.call("POST", "/api/v1/search", Some(json!({"query": "x", "limit": 101})));
    assert_error(status, &body, 422, "unprocessable");
    assert!(body["message"].as_str().unwrap().contains("between 1 and 100"), "{body}");
    let (status, body) = s.call("POST", "/api/v1/search", Some(json!({"query": 3})));
    assert_error(status, &body, 422, "unprocessable");
    let (status, body) = s.send_raw("/api/v1/search", "application/json", b"{not json");
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = s.call("GET", "/api/v1/assets/not-a-number", None);
    assert_error(status, &body, 422, "unprocessable");
    let (status, body) = s.call("GET", "/api/v1/nothing-here", None);
    assert_error(status, &body, 404, "not_found");

    let (status, cat) = s.call("POST", "/api/v1/categories", Some(json!({"name": "cats", "color": "#ff0000"})));
    assert_eq!(status, 201, "{cat}");
    let (status, body) = s.call("POST", "/api/v1/categories", Some(json!({"name": "cats"})));
    assert_error(status, &body, 409, "conflict");
    let (status, body) = s.call("PATCH", &format!("/api/v1/categories/{}", cat["id"]), Some(json!({"description": "felines"})));
    assert_eq!((status, body["description"].as_str()), (200, Some("felines")));
    let (status, _) = s.call("DELETE", &format!("/api/v1/categories/{}", cat["id"]), None);
    assert_eq!(status, 204);
    let (status, body) = s.call("GET", &format!("/api/v1/categories/{}", cat["id"]), None);
    assert_error(status, &body, 404, "not_found");

    let (status, doc) = s.call("GET", "/api/v1/openapi.json", None);
    assert_eq!(status, 200);
    for path in ["/api/v1/search", "/api/v1/search/image", "/api/v1/training/sessions/{id}/start", "/api/v1/categories"] {
        assert!(doc["paths"][path].is_object(), "{path} in the OpenAPI document");
    }
    let (status, ready) = s.call("GET", "/ready", None);
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (_, _, text) = s.get_bytes("/metrics");
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains(r#"imgsearch_api_requests_total{route="/api/v1/search",status="422"} 2"#), "{text}");
    // an array where an object is expected is not read as one
    let (status, body) = s.call("POST", "/api/v1/search", Some(json!(["a red circle", 5])));
    assert_error(status, &body, 422, "unprocessable");
    assert!(body["message"].as_str().unwrap().contains("expected a JSON object"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_vector_store_down_is_503() {
    // the server keeps its vectors in a Qdrant server (the gRPC test fixture), which then stops
    let qdrant_dir = tempfile::tempdir().unwrap();
    let qdrant = qdrant_fixture::QdrantFixture::start(qdrant_dir.path()).await.unwrap();
    let url = qdrant.url();
    let s = tokio::task::spawn_blocking(move || start(&["--qdrant-url", &url])).await.unwrap();
    let s = std::sync::Arc::new(s);
    let call = |method: &'static str, path: &'static str, body: Option<Value>| {
        let s = s.clone();
        tokio::task::spawn_blocking(move || s.call(method, path, body))
    };
    let (status, body) = call("POST", "/api/v1/search", Some(json!({"query": "a red circle"}))).await.unwrap();
    assert_eq!((status, body["results"].as_array().map(Vec::len)), (200, Some(0)), "{body}");
    let (status, _) = call("GET", "/ready", None).await.unwrap();
    assert_eq!(status, 200);
    qdrant.stop().await;
    let (status, body) = call("POST", "/api/v1/search", Some(json!({"query": "a red circle"}))).await.unwrap();
    assert_error(status, &body, 503, "unavailable");
    let (status, body) = call("GET", "/ready", None).await.unwrap();
    assert_error(status, &body, 503, "unavailable");
}

#[test]
fn subdirectories_choose_what_a_session_indexes_and_restart_embeds_again() {
    let s = start(&[]);
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

    let (status, scan) = s.call("POST", "/api/v1/training/directories/scan", Some(json!({"root_path": root_str, "recursive": true})));
    assert_eq!(status, 200, "{scan}");
    assert_eq!((scan["rootImageCount"].as_i64(), scan["totalSubdirectories"].as_i64(), scan["totalImages"].as_i64()), (Some(1), Some(2), Some(41)), "{scan}");
    let dirs: Vec<(String, i64)> = scan["subdirectories"].as_array().unwrap().iter().map(|d| (d["name"].as_str().unwrap().to_owned(), d["imageCount"].as_i64().unwrap())).collect();
    assert_eq!(dirs, [("a".to_owned(), 20), ("b".to_owned(), 20)]);
    let (status, body) = s.call("POST", "/api/v1/training/directories/scan", Some(json!({"rootPath": "/usr"})));
    assert_error(status, &body, 400, "bad_request");

    let (_, session) = s.call("POST", "/api/v1/training/sessions", Some(json!({"name": "two folders", "rootPath": root_str})));
    let id = session["id"].as_i64().unwrap();
    let (status, subdirs) = s.call("GET", &format!("/api/v1/training/sessions/{id}/subdirectories"), None);
    assert_eq!(status, 200, "{subdirs}");
    assert!(subdirs.as_array().unwrap().iter().all(|d| d["selected"] == true && d["imageCount"] == 20), "{subdirs}");
    let b_path = root.canonicalize().unwrap().join("b").to_str().unwrap().to_owned();
    let (status, subdirs) = s.call("PATCH", &format!("/api/v1/training/sessions/{id}/subdirectories"), Some(json!({"selections": [{"path": b_path, "selected": false}]})));
    assert_eq!(status, 200, "{subdirs}");
    assert_eq!(subdirs.as_array().unwrap().iter().filter(|d| d["selected"] == false).count(), 1);
    let (status, body) = s.call("PATCH", &format!("/api/v1/training/sessions/{id}/subdirectories"), Some(json!({"selections": [{"path": "/nowhere", "selected": false}]})));
    assert_error(status, &body, 404, "not_found");

    s.call("POST", &format!("/api/v1/training/sessions/{id}/start"), None);
    let progress = s.wait_done(id);
    assert_eq!((progress["status"].as_str(), progress["processedImages"].as_i64()), (Some("completed"), Some(21)), "a/ and the root file, not b/: {progress}");
    let (_, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a blue square", "limit": 100})));
    let paths: Vec<&str> = found["results"].as_array().unwrap().iter().map(|r| r["asset"]["path"].as_str().unwrap()).collect();
    assert_eq!(paths.len(), 21);
    assert!(paths.iter().all(|p| !p.contains("/b/")), "{paths:?}");

    let (status, renamed) = s.call("PATCH", &format!("/api/v1/training/sessions/{id}"), Some(json!({"name": "renamed"})));
    assert_eq!((status, renamed["name"].as_str()), (200, Some("renamed")));

    // restart: everything selected is embedded again, with new evidence
    s.call("PATCH", &format!("/api/v1/training/sessions/{id}/subdirectories"), Some(json!({"selections": [{"path": b_path, "selected": true}]})));
    let (status, restarted) = s.call("POST", &format!("/api/v1/training/sessions/{id}/restart?failed_only=false&reason=include%20b"), None);
    assert_eq!(status, 200, "{restarted}");
    assert_eq!((restarted["status"].as_str(), restarted["session"]["resetReason"].as_str()), (Some("pending"), Some("include b")));
    assert_eq!((restarted["cleanupStats"]["items_reset"].as_i64(), restarted["cleanup_stats"]["items_reset"].as_i64()), (Some(21), Some(21)), "{restarted}");
    let (status, body) = s.call("POST", &format!("/api/v1/training/sessions/{id}/restart"), None);
    assert_error(status, &body, 400, "bad_request");
    s.call("POST", &format!("/api/v1/training/sessions/{id}/start"), None);
    let progress = s.wait_done(id);
    assert_eq!(progress["processedImages"], 41, "{progress}");

    let (status, _) = s.call("DELETE", &format!("/api/v1/training/sessions/{id}"), None);
    assert_eq!(status, 204);
    let (status, body) = s.call("GET", &format!("/api/v1/training/sessions/{id}"), None);
    assert_error(status, &body, 404, "not_found");
}

#[test]
fn a_paused_session_resumes_where_it_stopped() {
    let s = start(&[]);
    let root = s.images.path();
    for copy in 1..4 {
        let dir = root.join(format!("copy{copy}"));
        std::fs::create_dir(&dir).unwrap();
        for e in std::fs::read_dir(fixtures().join("shapes")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    let (_, session) = s.call("POST", "/api/v1/training/sessions", Some(json!({"name": "960", "rootPath": root.to_str().unwrap()})));
    let id = session["id"].as_i64().unwrap();
    let (status, _) = s.call("POST", &format!("/api/v1/training/sessions/{id}/start"), None);
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(400));
    let (status, paused) = s.call("POST", &format!("/api/v1/training/sessions/{id}/pause"), None);
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["status"], "paused");
    let done_before = paused["session"]["processedImages"].as_i64().unwrap();
    assert!(done_before < 960, "paused midway: {paused}");
    let (status, body) = s.call("POST", &format!("/api/v1/training/sessions/{id}/pause"), None);
    assert_error(status, &body, 400, "bad_request");

    let (status, _) = s.call("POST", &format!("/api/v1/training/sessions/{id}/start"), None);
    assert_eq!(status, 200, "a paused session starts again");
    let progress = s.wait_done(id);
    assert_eq!((progress["status"].as_str(), progress["processedImages"].as_i64()), (Some("completed"), Some(960)), "{progress}");
    let (_, jobs) = s.call("GET", &format!("/api/v1/jobs?sessionId={id}&status=completed&pageSize=1"), None);
    assert_eq!(jobs["total"], 960, "one completed job per image, none twice");
    let (_, evidence) = s.call("GET", &format!("/api/v1/evidence?sessionId={id}&pageSize=1"), None);
    assert_eq!(evidence["total"], 960, "one evidence row per image");
}

#[test]
fn operators_delete_clean_up_and_reset_vectors_through_the_api() {
    let s = start(&[]);
    let root = s.images.path().canonicalize().unwrap().to_str().unwrap().to_owned();
    let (_, session) = s.call("POST", "/api/v1/training/sessions", Some(json!({"name": "shapes", "rootPath": root})));
    let id = session["id"].as_i64().unwrap();
    s.call("POST", &format!("/api/v1/training/sessions/{id}/start"), None);
    assert_eq!(s.wait_done(id)["processedImages"], 240);

    // one asset: the best match for "a red circle" is gone from the results
    let (_, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 1})));
    let top = found["results"][0]["asset"]["id"].as_i64().unwrap();
    // soft first: hidden from searches, then back
    let (status, d) = s.call("DELETE", &format!("/api/v1/vectors/by-asset/{top}?soft=true&deletionReason=review"), None);
    assert_eq!((status, d["softDeleted"].as_u64()), (200, Some(1)), "{d}");
    let (_, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 100})));
    assert!(found["results"].as_array().unwrap().iter().all(|r| r["asset"]["id"] != top), "a soft-deleted vector is not found");
    let (status, r) = s.call("POST", &format!("/api/v1/vectors/restore/{top}"), None);
    assert_eq!((status, r["restored"].as_u64()), (200, Some(1)), "{r}");
    let (_, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 1})));
    assert_eq!(found["results"][0]["asset"]["id"], top, "restored, it ranks first again");
    let (status, d) = s.call("DELETE", &format!("/api/v1/vectors/by-asset/{top}"), None);
    assert_eq!((status, d["vectorsDeleted"].as_u64(), d["assetId"].as_i64(), d["log"]["deletionType"].as_str()), (200, Some(1), Some(top), Some("ASSET")), "{d}");
    assert_eq!(d["message"], "Successfully deleted 1 vectors");
    let (_, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 100})));
    assert!(found["results"].as_array().unwrap().iter().all(|r| r["asset"]["id"] != top));
    let (status, body) = s.call("DELETE", "/api/v1/vectors/by-asset/987654321", None);
    assert_error(status, &body, 404, "not_found");

    // a batch of assets: the next two results
    let (_, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 2})));
    let batch: Vec<i64> = found["results"].as_array().unwrap().iter().map(|r| r["asset"]["id"].as_i64().unwrap()).collect();
    let (status, d) = s.call("DELETE", "/api/v1/vectors/by-assets", Some(json!({"assetIds": batch, "deletionReason": "duplicates"})));
    assert_eq!((status, d["vectorsDeleted"].as_u64(), d["assetsUpdated"].as_u64()), (200, Some(2), Some(2)), "{d}");
    let (status, body) = s.call("DELETE", "/api/v1/vectors/by-assets", Some(json!({"assetIds": []})));
    assert_error(status, &body, 422, "unprocessable");

    // a directory needs confirm
    let (status, body) = s.call("DELETE", "/api/v1/vectors/by-directory", Some(json!({"pathPrefix": root})));
    assert_error(status, &body, 400, "confirmation_required");
    let (status, d) = s.call("DELETE", "/api/v1/vectors/by-directory", Some(json!({"pathPrefix": root, "confirm": true, "deletionReason": "moved"})));
    assert_eq!((status, d["vectorsDeleted"].as_u64(), d["assetsUpdated"].as_u64(), d["pathPrefix"].as_str()), (200, Some(237), Some(240), Some(root.as_str())), "{d}");
    let (_, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle"})));
    assert_eq!(found["results"].as_array().unwrap().len(), 0);

    let (_, logs) = s.call("GET", "/api/v1/vectors/deletion-logs?page=1&page_size=10", None);
    let l = &logs["logs"];
    assert_eq!(
        (logs["total"].as_i64(), l[0]["deletionType"].as_str(), l[0]["deletionTarget"].as_str(), l[0]["deletionReason"].as_str()),
        (Some(4), Some("DIRECTORY"), Some(root.as_str()), Some("moved")),
        "{logs}"
    );
    assert_eq!((l[1]["vectorCount"].as_i64(), l[1]["deletionReason"].as_str()), (Some(2), Some("duplicates")), "{logs}");
    assert_eq!((l[3]["metadata"]["soft"].as_bool(), l[3]["deletionReason"].as_str()), (Some(true), Some("review")), "{logs}");
    let (_, stats) = s.call("GET", "/api/v1/vectors/directories/stats", None);
    assert_eq!(stats, json!({"directories": [], "totalVectors": 0}), "no directory has a vector left");
    let (status, c) = s.call("POST", "/api/v1/vectors/cleanup-orphans", Some(json!({"dryRun": true})));
    assert_eq!((status, c["vectorsScanned"].as_u64(), c["orphanVectors"].as_u64(), c["assetsRequeued"].as_u64()), (200, Some(0), Some(0), Some(0)), "{c}");

    let (status, body) = s.call("POST", "/api/v1/vectors/cleanup-orphans", Some(json!({})));
    assert_error(status, &body, 400, "confirmation_required");
    let (status, body) = s.call("POST", "/api/v1/vectors/reset", Some(json!({"confirm": true})));
    assert_error(status, &body, 400, "confirmation_required");
    let (status, r) = s.call("POST", "/api/v1/vectors/reset", Some(json!({"confirm": true, "confirmationText": "DELETE ALL VECTORS"})));
    assert_eq!((status, r["log"]["deletionType"].as_str()), (200, Some("FULL_RESET")), "{r}");

    // retrain embeds the folder again through a new session
    let (status, body) = s.call("POST", "/api/v1/vectors/retrain", Some(json!({"pathPrefix": "/etc"})));
    assert_error(status, &body, 400, "bad_request");
    let (status, retrain) = s.call("POST", "/api/v1/vectors/retrain", Some(json!({"pathPrefix": root, "categoryId": null})));
    assert_eq!((status, retrain["session"]["status"].as_str(), retrain["assetsRequeued"].as_u64()), (200, Some("running"), Some(240)), "{retrain}");
    let new_session = retrain["newSessionId"].as_i64().unwrap();
    assert_ne!(new_session, id);
    assert_eq!(s.wait_done(new_session)["processedImages"], 240);
    let (_, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 5})));
    assert_eq!(found["results"].as_array().unwrap().len(), 5);
    let (_, evidence) = s.call("GET", &format!("/api/v1/evidence?sessionId={new_session}&pageSize=100"), None);
    assert_eq!(evidence["total"], 240, "new evidence for every asset");
    assert!(evidence["items"].as_array().unwrap().iter().all(|e| e["sessionId"] == new_session));
}

#[test]
fn a_model_upgrade_through_the_api_keeps_search_answering() {
    let (_b, b_dir) = crate::manage::second_model();
    let s = start(&["--model-root", b_dir.to_str().unwrap()]);
    let root = s.images.path().to_str().unwrap().to_owned();
    let (_, session) = s.call("POST", "/api/v1/training/sessions", Some(json!({"name": "shapes", "rootPath": root})));
    let id = session["id"].as_i64().unwrap();
    s.call("POST", &format!("/api/v1/training/sessions/{id}/start"), None);
    assert_eq!(s.wait_done(id)["processedImages"], 240);
    let (_, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 5})));
    let version_a = found["modelVersion"].as_str().unwrap().to_owned();

    let (status, body) = s.call("POST", "/api/v1/vectors/upgrade", Some(json!({"modelDir": "/nonexistent"})));
    assert_error(status, &body, 422, "unprocessable");
    // a directory outside the model roots gets the same answer as one that does not exist
    let (status, outside) = s.call("POST", "/api/v1/vectors/upgrade", Some(json!({"modelDir": fixtures().join("models/tiny-clip")})));
    assert_error(status, &outside, 422, "unprocessable");
    assert_eq!(outside["message"], body["message"], "nothing said about what exists outside");
    let (status, started) = s.call("POST", "/api/v1/vectors/upgrade", Some(json!({"modelDir": b_dir})));
    assert_eq!((status, started["state"].as_str()), (202, Some("running")), "{started}");
    let version_b = started["modelVersion"].as_str().unwrap().to_owned();
    assert_ne!(version_a, version_b);

    // searches keep answering while the new collection is built, then move to the new model
    let mut seen = Vec::new();
    let end = loop {
        let (status, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 5})));
        assert_eq!(status, 200, "a search failed during the upgrade: {found}");
        assert_eq!(found["results"].as_array().unwrap().len(), 5, "{found}");
        assert!(found["results"][0]["asset"]["path"].as_str().unwrap().contains("/red-circle-"), "{found}");
        seen.push(found["modelVersion"].as_str().unwrap().to_owned());
        let (_, u) = s.call("GET", "/api/v1/vectors/upgrade", None);
        if u["state"] != "running" {
            break u;
        }
    };
    assert_eq!(end["state"], "done", "{end}");
    assert_eq!(
        (end["result"]["collection"].as_str(), end["result"]["previous"].as_str(), end["result"]["indexed"].as_u64(), end["result"]["swapped"].as_bool()),
        (Some("image_assets_v2"), Some("image_assets_v1"), Some(240), Some(true)),
        "{end}"
    );
    let (_, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 5})));
    assert_eq!(found["modelVersion"].as_str(), Some(version_b.as_str()));
    seen.push(version_b.clone());
    let first_b = seen.iter().position(|v| *v == version_b).unwrap();
    assert!(first_b > 0, "searches answered from the old collection while the new one was built");
    assert!(seen[..first_b].iter().all(|v| *v == version_a) && seen[first_b..].iter().all(|v| *v == version_b), "{seen:?}");
    // indexing now embeds with the new model into the new collection
    let (status, _) = s.call("POST", &format!("/api/v1/training/sessions/{id}/restart-training?failed_only=false"), None);
    assert_eq!(status, 200);
    s.call("POST", &format!("/api/v1/training/sessions/{id}/start"), None);
    assert_eq!(s.wait_done(id)["processedImages"], 240);
    let (_, evidence) = s.call("GET", &format!("/api/v1/evidence?sessionId={id}&pageSize=1"), None);
    assert_eq!(evidence["items"][0]["modelVersion"].as_str(), Some(version_b.as_str()), "{evidence}");
}

impl Server {
    /// A CORS preflight from `origin` for a JSON `method` request to `path`: the status and the
    /// allowed origin answered.
    fn preflight(&self, path: &str, origin: &str, method: &str) -> (u16, Option<String>) {
        let resp = self
            .agent
            .options(&format!("{}{path}", self.base))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "content-type")
            .call()
            .unwrap();
        (resp.status().as_u16(), resp.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned()))
    }

    fn search_image_form(&self, file: &[u8], fields: &[(&str, &str)]) -> (u16, Value) {
        let boundary = "XBOUNDARYX";
        let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.png\"\r\nContent-Type: image/png\r\n\r\n").into_bytes();
        body.extend_from_slice(file);
        for (name, value) in fields {
            body.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}").as_bytes());
        }
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        self.send_raw("/api/v1/search/image", &format!("multipart/form-data; boundary={boundary}"), &body)
    }
}

/// What the replaced service's web UI and scripts rely on: CORS for the listed origin only, its
/// list envelopes and names in either spelling, unknown names refused, its session pages'
/// endpoints, the inputs it took that must not be ignored.
#[test]
fn the_replaced_services_clients_find_its_contract() {
    let s = start(&["--cors-origin", "http://localhost:3000"]);
    let root = s.images.path().canonicalize().unwrap();
    std::fs::create_dir(root.join("reds")).unwrap();
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_str().unwrap().starts_with("red-circle-") {
            std::fs::rename(&p, root.join("reds").join(p.file_name().unwrap())).unwrap();
        }
    }
    let root_str = root.to_str().unwrap();

    // CORS: the listed origin's preflight is allowed, any other is not
    assert_eq!(s.preflight("/api/v1/search", "http://localhost:3000", "POST"), (200, Some("http://localhost:3000".into())));
    assert_eq!(s.preflight("/api/v1/categories?page=1&page_size=100", "http://localhost:3000", "GET").1.as_deref(), Some("http://localhost:3000"));
    assert_eq!(s.preflight("/api/v1/search", "http://evil.example", "POST").1, None, "an origin not listed gets no CORS grant");

    // categories: the envelope, both spellings, strictness
    let (status, cat) = s.call("POST", "/api/v1/categories", Some(json!({"name": "shapes", "description": null, "color": "#3b82f6"})));
    assert_eq!((status, cat["sessionCount"].as_i64()), (201, Some(0)), "{cat}");
    let (status, body) = s.call("POST", "/api/v1/categories", Some(json!({"name": "x", "color": "blue"})));
    assert_error(status, &body, 422, "unprocessable");
    let (status, page) = s.call("GET", "/api/v1/categories?page=1&page_size=100", None);
    assert_eq!(status, 200, "{page}");
    assert_eq!((page["total"].as_i64(), page["page"].as_i64(), page["pageSize"].as_i64(), page["hasMore"].as_bool()), (Some(1), Some(1), Some(100), Some(false)), "{page}");
    let (_, camel) = s.call("GET", "/api/v1/categories?pageSize=100", None);
    assert_eq!(camel["pageSize"], 100, "camelCase names are read too");
    let (status, body) = s.call("GET", "/api/v1/categories?page=1&per_page=100", None);
    assert_error(status, &body, 422, "unprocessable");
    assert!(body["message"].as_str().unwrap().contains("perPage"), "the unknown name is named: {body}");
    let (status, body) = s.call("GET", "/api/v1/categories?page_size=101", None);
    assert_error(status, &body, 422, "unprocessable");

    let today = chrono::Utc::now().date_naive().to_string();
    // the session pages: scan, the directory browser, create with subdirectories, start, progress
    let (status, listing) = s.call("GET", &format!("/api/v1/training/directories?path={root_str}&include_training_status=true"), None);
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing[0]["name"], "reds");
    assert_eq!((listing[0]["imageCount"].as_i64(), listing[0]["trainingStatus"].as_str(), listing[0]["trainedCount"].as_i64()), (Some(20), Some("never"), Some(0)));
    let (status, preview) = s.call("GET", &format!("/api/v1/training/directories/preview?path={root_str}/reds"), None);
    assert_eq!((status, preview["imageCount"].as_i64()), (200, Some(20)), "{preview}");
    let first = preview["images"][0]["fullPath"].as_str().unwrap().to_owned();
    let (status, content_type, _) = s.get_bytes(&format!("/api/v1/training/directories/preview/thumbnail?path={first}"));
    assert_eq!((status, content_type.as_str()), (200, "image/jpeg"));
    let (status, body) = s.call("GET", "/api/v1/training/directories/preview/thumbnail?path=/etc/hostname", None);
    assert_error(status, &body, 404, "not_found");
    let create = json!({"name": "reds only", "rootPath": root_str, "categoryId": cat["id"], "subdirectories": [format!("{root_str}/reds")]});
    let (status, session) = s.call("POST", "/api/v1/training/sessions", Some(create));
    assert_eq!(status, 200, "{session}");
    let id = session["id"].as_i64().unwrap();
    let (status, started) = s.call("POST", &format!("/api/v1/training/sessions/{id}/start"), None);
    assert_eq!((status, started["message"].as_str()), (200, Some(format!("Training started for session {id}").as_str())), "{started}");
    s.wait_done(id);
    let (status, unified) = s.call("GET", &format!("/api/v1/training/sessions/{id}/progress-unified"), None);
    assert_eq!(status, 200, "{unified}");
    assert_eq!(
        (unified["overallStatus"].as_str(), unified["overallProgress"]["percentage"].as_f64(), unified["overallProgress"]["currentPhase"].as_str()),
        (Some("completed"), Some(100.0), Some("completed"))
    );
    let training = &unified["phases"]["training"];
    assert_eq!(
        (training["status"].as_str(), training["progress"]["current"].as_i64(), training["progress"]["total"].as_i64()),
        (Some("completed"), Some(20), Some(20)),
        "{unified}"
    );
    assert_eq!((unified["phases"]["face_detection"]["status"].as_str(), unified["phases"]["faceDetection"]["status"].as_str()), (Some("skipped"), Some("skipped")));
    let (status, jobs) = s.call("GET", &format!("/api/v1/training/sessions/{id}/jobs?page=1&page_size=20"), None);
    assert_eq!((status, jobs["total"].as_i64(), jobs["items"].as_array().map(Vec::len)), (200, Some(20), Some(20)), "{jobs}");
    assert!(jobs["items"][0]["imagePath"].as_str().unwrap().contains("/reds/red-circle-"), "{jobs}");
    assert_eq!((jobs["items"][0]["progress"].as_i64(), jobs["items"][0]["status"].as_str()), (Some(100), Some("completed")));
    let (_, sessions) = s.call("GET", "/api/v1/training/sessions?page=1&page_size=50", None);
    assert_eq!((sessions["total"].as_i64(), sessions["items"][0]["id"].as_i64(), sessions["items"][0]["processedImages"].as_i64()), (Some(1), Some(id), Some(20)), "{sessions}");
    let (_, listing) = s.call("GET", &format!("/api/v1/training/directories?path={root_str}&include_training_status=true"), None);
    assert_eq!((listing[0]["trainingStatus"].as_str(), listing[0]["trainedCount"].as_i64()), (Some("complete"), Some(20)), "{listing}");
    let (_, cats) = s.call("GET", "/api/v1/categories", None);
    assert_eq!(cats["items"][0]["sessionCount"], 1);
    let (_, assets) = s.call("GET", &format!("/api/v1/assets?page=1&page_size=5&from_date={today}&to_date={today}"), None);
    assert_eq!(
        (assets["total"].as_i64(), assets["items"].as_array().map(Vec::len), assets["hasMore"].as_bool()),
        (Some(20), Some(5), Some(true)),
        "the 20 indexed files are dated by mtime: today"
    );
    let (_, assets) = s.call("GET", "/api/v1/assets?to_date=2001-12-31", None);
    assert_eq!(assets["total"], 0);
    let (_, stats) = s.call("GET", "/api/v1/vectors/directories/stats", None);
    assert_eq!((stats["totalVectors"].as_u64(), stats["directories"][0]["vectorCount"].as_u64()), (Some(20), Some(20)), "{stats}");
    assert!(stats["directories"][0]["lastIndexed"].is_string(), "{stats}");

    // search: the web UI's filter names, a date alone, a category as a string; unknown keys refused
    let count = |filters: Value| {
        let (status, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 50, "offset": 0, "filters": filters})));
        assert_eq!(status, 200, "{found}");
        found["results"].as_array().unwrap().len()
    };
    assert_eq!(count(json!({"dateFrom": today, "dateTo": today, "categoryId": cat["id"].to_string()})), 20);
    assert_eq!(count(json!({"from_date": "2001-01-01", "to_date": "2001-12-31"})), 0);
    assert_eq!(count(json!({"categoryId": (cat["id"].as_i64().unwrap() + 1).to_string()})), 0);
    let (status, body) = s.call("POST", "/api/v1/search", Some(json!({"query": "x", "filters": {"fromDay": today}})));
    assert_error(status, &body, 422, "unprocessable");
    assert!(body["message"].as_str().unwrap().contains("fromDay"), "{body}");

    // image search honours its form fields; similar honours exclude_self and category_id
    let png = std::fs::read(&first).unwrap();
    let (status, found) = s.search_image_form(&png, &[("limit", "3"), ("categoryId", &cat["id"].to_string())]);
    assert_eq!((status, found["results"].as_array().map(Vec::len)), (200, Some(3)), "{found}");
    let (status, body) = s.search_image_form(&png, &[("limt", "3")]);
    assert_error(status, &body, 422, "unprocessable");
    let (_, found) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle", "limit": 1})));
    let best = found["results"][0]["asset"]["id"].as_i64().unwrap();
    let (_, similar) = s.call("GET", &format!("/api/v1/search/similar/{best}?limit=2&exclude_self=false"), None);
    assert_eq!(similar["results"][0]["asset"]["id"], best, "itself first when not excluded: {similar}");
    let (_, similar) = s.call("GET", &format!("/api/v1/search/similar/{best}?limit=2&category_id=987654321"), None);
    assert_eq!(similar["results"].as_array().map(Vec::len), Some(0), "{similar}");
}

#[test]
fn a_data_dir_from_before_integer_ids_is_refused_with_how_to_reindex() {
    let data = tempfile::tempdir().unwrap();
    let catalog = data.path().join("catalog.sqlite");
    let made_by_0_1 = "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        success BOOLEAN NOT NULL, checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);
        INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (1, 'catalog', 1, x'00', 1);";
    let status = Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()"])
        .arg(&catalog)
        .arg(made_by_0_1)
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_imgsearch")).args(["status", "--data-dir"]).arg(data.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("was made by an imgsearch before 0.2 (UUID ids)") && stderr.contains("run `imgsearch index` on your folders again"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

/// One HTTP/1.1 request written as is (any Host, Origin or content type), over a fresh connection:
/// the status and the JSON body.
fn raw(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let (status, _, json) = raw_full(base, method, path, headers, body);
    (status, json)
}

/// `raw`, with the response's head (status line and headers, lowercase).
fn raw_full(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, Value) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    // a server that refuses a body may answer and close before it is all written: read what it said
    let _ = stream.write_all(req.as_bytes());
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    // a chunked body: take the JSON between the chunk sizes
    let json = body.find('{').and_then(|i| body.rfind('}').map(|j| &body[i..=j])).unwrap_or("null");
    (status, head.to_ascii_lowercase(), serde_json::from_str(json).unwrap_or(Value::Null))
}

fn token_file(dir: &Path, token: &str) -> String {
    let path = dir.join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A token guards every request that changes something (and with `--auth all`, every request but
/// /health); the answer without it is a JSON 401 that says how to send it.
#[test]
fn mutations_need_the_token_and_auth_all_guards_reads_too() {
    let dir = tempfile::tempdir().unwrap();
    let token = "0123456789abcdef-test-token";
    let s = start(&["--auth-token-file", &token_file(dir.path(), token)]);
    let category = r#"{"name": "guarded"}"#;
    let json = ("content-type", "application/json");
    let (status, body) = raw(&s.base, "POST", "/api/v1/categories", &[json], category);
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("Authorization: Bearer"), "{body}");
    let (status, _) = raw(&s.base, "POST", "/api/v1/categories", &[json, ("authorization", "Bearer 0123456789abcdef-test-tokeX")], category);
    assert_eq!(status, 401, "a wrong token");
    let (status, body) = raw(&s.base, "POST", "/api/v1/categories", &[json, ("authorization", &format!("Bearer {token}"))], category);
    assert_eq!(status, 201, "{body}");
    let (status, _) = raw(&s.base, "DELETE", &format!("/api/v1/categories/{}", body["id"]), &[("x-api-key", token)], "");
    assert!(status < 300, "X-API-Key works too: {status}");
    for path in ["/api/v1/vectors/reset", "/api/v1/vectors/upgrade", "/api/v1/vectors/cleanup-orphans"] {
        assert_eq!(raw(&s.base, "POST", path, &[json], "{}").0, 401, "{path}");
    }
    // reads and searches need nothing by default
    assert_eq!(s.call("GET", "/api/v1/categories", None).0, 200);
    assert_eq!(s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle"}))).0, 200);
    drop(s);

    let s = start(&["--auth-token-file", &token_file(dir.path(), token), "--auth", "all"]);
    assert_eq!(s.call("GET", "/api/v1/categories", None).0, 401);
    assert_eq!(s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle"}))).0, 401);
    assert_eq!(s.call("GET", "/health", None).0, 200, "liveness stays open");
    assert_eq!(raw(&s.base, "GET", "/api/v1/categories", &[("authorization", &format!("Bearer {token}"))], "").0, 200);
}

/// Beyond loopback, `serve` will not start without a token unless told it is on purpose.
#[test]
fn serve_refuses_to_listen_beyond_loopback_without_a_token() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imgsearch"))
        .env("IMGSEARCH_MODEL", fixtures().join("models/tiny-clip"))
        .env("ORT_DYLIB_PATH", ort())
        .env_remove("IMGSEARCH_AUTH_TOKEN")
        .env_remove("IMGSEARCH_AUTH_TOKEN_FILE")
        .args(["serve", "--addr", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .args(["--allow-root"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve on 0.0.0.0:0 without a token") && err.contains("--insecure-no-auth"), "{err}");
    let (mut child, base) = crate::spawn_serve(
        Command::new(env!("CARGO_BIN_EXE_imgsearch"))
            .env("IMGSEARCH_MODEL", fixtures().join("models/tiny-clip"))
            .env("ORT_DYLIB_PATH", ort())
            .args(["serve", "--addr", "0.0.0.0:0", "--insecure-no-auth", "--data-dir"])
            .arg(data.path())
            .arg("--allow-root")
            .arg(data.path()),
    );
    let port = base.rsplit(':').next().unwrap().to_owned();
    assert_eq!(raw(&format!("http://127.0.0.1:{port}"), "GET", "/health", &[], "").0, 200);
    let _ = child.kill();
    let _ = child.wait();
}

/// What a page of another site can make a browser send (a form POST, a plain-text POST) is
/// refused, and so is a request for another Host (DNS rebinding); the allowed UI origin and
/// clients without an Origin (curl, scripts) go through.
#[test]
fn cross_site_requests_and_foreign_hosts_are_refused() {
    let s = start(&["--cors-origin", "http://localhost:3000"]);
    let evil = ("origin", "http://evil.example");
    let (status, body) = raw(&s.base, "POST", "/api/v1/vectors/cleanup-orphans", &[evil, ("content-type", "text/plain")], r#"{"confirm": true}"#);
    assert_eq!((status, body["error"].as_str()), (403, Some("cross_site")), "{body}");
    let (status, _) = raw(&s.base, "POST", "/api/v1/training/sessions/1/start", &[evil, ("content-type", "application/x-www-form-urlencoded")], "a=b");
    assert_eq!(status, 403);
    let (status, _) = raw(&s.base, "POST", "/api/v1/categories", &[("sec-fetch-site", "cross-site"), ("content-type", "application/json")], r#"{"name": "x"}"#);
    assert_eq!(status, 403, "fetch metadata without Origin");
    let (status, body) = raw(&s.base, "POST", "/api/v1/categories", &[("origin", "http://localhost:3000"), ("content-type", "application/json")], r#"{"name": "from the UI"}"#);
    assert_eq!(status, 201, "the allowed origin: {body}");
    let (status, _) = raw(&s.base, "POST", "/api/v1/categories", &[("content-type", "application/json")], r#"{"name": "from curl"}"#);
    assert_eq!(status, 201, "no Origin: not a browser page");
    let (status, body) = raw(&s.base, "GET", "/api/v1/categories", &[("host", "evil.example:8080")], "");
    assert_eq!((status, body["error"].as_str()), (421, Some("host_not_allowed")), "{body}");
    assert_eq!(raw(&s.base, "GET", "/api/v1/categories", &[("host", "localhost")], "").0, 200);
}

/// An oversized query is refused before any work and an oversized body before it is read, both with
/// the JSON error body; a flood of searches beyond the limit is answered 503 with Retry-After at
/// once while /health keeps answering.
#[test]
fn oversized_requests_and_floods_get_json_errors_and_health_keeps_answering() {
    let s = start(&[]);
    let (status, body) = s.call("POST", "/api/v1/search", Some(json!({"query": "a red circle ".repeat(100)})));
    assert_eq!((status, body["error"].as_str()), (422, Some("unprocessable")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("at most 1000 characters"), "{body}");
    // a 2 MB body: refused once the first MiB is read
    let huge = json!({"query": "x".repeat(2 << 20)}).to_string();
    let (status, body) = raw(&s.base, "POST", "/api/v1/search", &[("content-type", "application/json")], &huge);
    assert_eq!((status, body["error"].as_str()), (413, Some("payload_too_large")), "{body}");
    assert_eq!(s.call("GET", "/health", None).0, 200);
}

/// The idle timeout is for a client that sends nothing while the server waits for it, not for a
/// handler that takes long: a search held 3 s (a failpoint) behind a 1 s idle timeout is answered.
#[test]
fn a_handler_slower_than_the_idle_timeout_still_answers() {
    let s = start_with(&[("FAILPOINTS", "api.search.delay_ms=return(3000)")], &["--idle-timeout-s", "1"]);
    let (status, body) = raw(&s.base, "POST", "/api/v1/search", &[("content-type", "application/json")], r#"{"query": "a red circle"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(body["results"].is_array(), "{body}");
}

/// A request whose body stops arriving is answered (400) after the idle time, not held: its
/// handler waits for the body, which keeps the connection busy for the idle timeout.
#[test]
fn a_body_that_stops_arriving_is_cut_after_the_idle_time() {
    use std::io::{Read, Write};
    let s = start(&["--idle-timeout-s", "1"]);
    let addr = s.base.trim_start_matches("http://");
    let mut stalled = std::net::TcpStream::connect(addr).unwrap();
    stalled
        .write_all(format!("POST /api/v1/search HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{{\"query\": \"a").as_bytes())
        .unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut answer = String::new();
    let read = stalled.read_to_string(&mut answer);
    assert!(read.is_ok(), "the stalled request was held: {read:?}");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#""error":"bad_request""#), "{answer}");
}

/// Errors that no handler writes (a method a route lacks, a request target or headers too long, a
/// multipart body that is not one) are the JSON error body too, with the headers they need.
#[test]
fn errors_from_every_layer_are_the_json_error_body() {
    let s = start(&[]);
    let (status, head, body) = raw_full(&s.base, "PUT", "/api/v1/search", &[], "");
    assert_eq!((status, body["error"].as_str()), (405, Some("method_not_allowed")), "{head} {body}");
    assert!(head.contains("allow: post"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let long = format!("/api/v1/assets?fromDate={}", "9".repeat(9000));
    let (status, body) = raw(&s.base, "GET", &long, &[], "");
    assert_eq!((status, body["error"].as_str()), (414, Some("uri_too_long")), "{body}");
    let cookie = "c".repeat(40_000);
    let (status, body) = raw(&s.base, "GET", "/api/v1/assets", &[("cookie", &cookie)], "");
    assert_eq!((status, body["error"].as_str()), (431, Some("header_fields_too_large")), "{body}");
    let (status, body) = raw(&s.base, "POST", "/api/v1/search/image", &[("content-type", "multipart/form-data")], "");
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("boundary"), "{body}");
    let (status, body) = raw(&s.base, "GET", "/nowhere", &[], "");
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
}

/// Every connection is a file descriptor: started with a soft limit of 256, `serve` raises it to
/// the hard limit before it listens.
#[test]
fn serve_raises_its_open_files_limit() {
    use std::os::unix::process::CommandExt;
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgsearch"));
    cmd.env("IMGSEARCH_MODEL", fixtures().join("models/tiny-clip")).env("ORT_DYLIB_PATH", ort()).args(["serve", "--addr", "127.0.0.1:0", "--data-dir"]).arg(data.path());
    // SAFETY: only getrlimit/setrlimit between fork and exec, both async-signal-safe
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = 256.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let (mut child, _base) = crate::spawn_serve(&mut cmd);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let files: Vec<&str> = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(files[3], files[4], "soft == hard: {limits}");
    assert_ne!(files[3], "256");
}

/// With one slot for searches and every search held 4 s (a failpoint), four searches sent at once:
/// one is served, the others are answered at once with 503, Retry-After and the JSON error body;
/// /health answers meanwhile.
#[test]
fn searches_beyond_the_concurrency_limit_get_503_with_retry_after() {
    let s = start_with(&[("FAILPOINTS", "api.search.delay_ms=return(4000)")], &["--max-heavy-requests", "1"]);
    let base = s.base.clone();
    let searches: Vec<_> = (0..4)
        .map(|_| {
            let base = base.clone();
            std::thread::spawn(move || raw_full(&base, "POST", "/api/v1/search", &[("content-type", "application/json")], r#"{"query": "a red circle"}"#))
        })
        .collect();
    assert_eq!(raw(&base, "GET", "/health", &[], "").0, 200, "health answers while the searches are saturated");
    let answers: Vec<(u16, String, Value)> = searches.into_iter().map(|t| t.join().unwrap()).collect();
    let served = answers.iter().filter(|a| a.0 == 200).count();
    let busy: Vec<&(u16, String, Value)> = answers.iter().filter(|a| a.0 == 503).collect();
    assert!(served >= 1 && !busy.is_empty() && served + busy.len() == 4, "{:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    for (_, head, body) in busy {
        assert_eq!(body["error"].as_str(), Some("unavailable"), "{body}");
        assert!(head.contains("\r\nretry-after: 1"), "{head}");
    }
}

/// The ONNX Runtime library for a `serve` started by hand.
fn ort() -> std::ffi::OsString {
    std::env::var_os("ORT_DYLIB_PATH").unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-ort/libonnxruntime.so").into())
}

/// 1,100 connections opened and left idle (more than the server takes at once, more than a
/// default descriptor limit) and one that sends half a request: the idle ones are closed after the
/// idle timeout, the half request too, and /health answers.
#[test]
fn an_idle_connection_flood_and_half_sent_headers_do_not_stop_health() {
    use std::{
        io::{Read, Write},
        os::unix::process::CommandExt,
    };
    // a server whose descriptors are 1,024 in all (soft and hard): 1,100 connections would take
    // them all without the connection limit
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgsearch"));
    cmd.env("IMGSEARCH_MODEL", fixtures().join("models/tiny-clip"))
        .env("ORT_DYLIB_PATH", ort())
        .args(["serve", "--addr", "127.0.0.1:0", "--max-connections", "800", "--idle-timeout-s", "2", "--data-dir"])
        .arg(data.path());
    // SAFETY: only setrlimit between fork and exec, async-signal-safe
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let (mut child, base) = crate::spawn_serve(&mut cmd);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(60))).build().into();
    let addr = base.trim_start_matches("http://").to_owned();
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nx-never: finished").unwrap();
    let idle: Vec<std::net::TcpStream> = (0..1100).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    // health answers once the idle ones are cut (the agent waits at most 60 s)
    assert_eq!(agent.get(&format!("{base}/health")).call().unwrap().status().as_u16(), 200);
    // the half-sent request was closed, not held: its read ends
    half.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let closed = half.read_to_end(&mut buf).map(|_| true).unwrap_or_else(|e| e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut);
    assert!(closed, "the half-sent request was held");
    drop(idle);
    assert_eq!(agent.get(&format!("{base}/health")).call().unwrap().status().as_u16(), 200);
    let _ = child.kill();
    let _ = child.wait();
}
