//! A local HTTP server that serves a model directory the way the Hugging Face hub does
//! (`/api/models/{repo}/tree/{rev}` with checksums, `/{repo}/resolve/{rev}/{file}` with range
//! requests), and can cut a download in the middle or serve a corrupted file. Shared by the tests of
//! `clip` and `imgsearch` (`#[path]`-included).

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::PathBuf,
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
use clip::model::REQUIRED_FILES;
use sha1::Sha1;
use sha2::{Digest, Sha256};

#[derive(Default)]
pub struct Hub {
    pub root: PathBuf,
    /// files whose next download stops half way, connection dropped
    pub cut_next: Mutex<HashSet<String>>,
    /// files served with one byte changed
    pub corrupt: HashSet<String>,
    /// (file, first byte asked for) of every download
    pub requests: Mutex<Vec<(String, u64)>>,
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
    let from =
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("bytes=")).and_then(|v| v.trim_end_matches('-').parse::<u64>().ok()).unwrap_or(0);
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

pub async fn serve(hub: Arc<Hub>) -> SocketAddr {
    let app = Router::new().route("/api/models/{owner}/{name}/tree/{rev}", get(tree)).route("/{owner}/{name}/resolve/{rev}/{*file}", get(resolve)).with_state(hub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}
