//! How `imgsearch search` finds a `serve` of the same data directory and asks it, rather than load
//! the vector store itself: the store is one process's (a second one is refused, `InUse`), and a
//! server has it open and warm, so a CLI search beside a running server costs a request, not a
//! load of the shard (at a million images, most of a second).
//!
//! The embedded `serve` writes `serve.json` into its data directory once it listens (where to reach
//! it, and its process id) and removes it when it stops. A file left by a server that was killed
//! points at nothing: the CLI's connection is refused at once and it searches locally, as it does
//! with no server. No secret is written: a server that wants a token for searches (`--auth all`)
//! gets the one in `IMGSEARCH_AUTH_TOKEN`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use vectors::Hit;

use crate::search::SearchRequest;

/// The file's name in the data directory.
pub const FILE: &str = "serve.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Advert {
    /// `http://HOST:PORT`, a loopback address where the server listens on every interface.
    pub url: String,
    pub pid: u32,
}

/// Removes the advert when the server stops (only its own: a later server's stays).
#[derive(Debug)]
pub struct Advertised {
    path: PathBuf,
}

impl Drop for Advertised {
    fn drop(&mut self) {
        if read(&self.path).is_some_and(|a| a.pid == std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where a client on this machine reaches a listener on `addr`.
pub fn url_for(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Writes `serve.json` (a temporary file renamed over it: a reader never sees half of one).
pub fn advertise(data_dir: &Path, addr: SocketAddr) -> Result<Advertised> {
    let path = data_dir.join(FILE);
    let tmp = data_dir.join(format!("{FILE}.{}.tmp", std::process::id()));
    let advert = Advert { url: url_for(addr), pid: std::process::id() };
    std::fs::write(&tmp, serde_json::to_vec(&advert)?).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Advertised { path })
}

fn read(path: &Path) -> Option<Advert> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The server a data directory's `serve.json` names, if it has one.
pub fn find(data_dir: &Path) -> Option<Advert> {
    read(&data_dir.join(FILE))
}

/// What the server answered: the ranked hits (hydrated by the caller from its own catalog, so the
/// output is the same as a local search's), or `None` when nothing listens there (a stale advert).
pub fn search(advert: &Advert, req: &SearchRequest, token: Option<&str>) -> Result<Option<Vec<Hit>>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Response {
        results: Vec<Found>,
        model_version: Option<String>,
    }
    #[derive(Deserialize)]
    struct Found {
        asset: Id,
        score: f32,
    }
    #[derive(Deserialize)]
    struct Id {
        id: i64,
    }
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_connect(Some(Duration::from_secs(2))).timeout_global(Some(Duration::from_secs(120))).build().into();
    let f = &req.filter;
    let body = serde_json::json!({
        "query": req.query,
        "limit": req.limit,
        "offset": req.offset,
        "filters": {"fromDate": f.from.map(|t| t.to_rfc3339()), "toDate": f.to.map(|t| t.to_rfc3339()), "categoryId": f.category_id},
    });
    let mut call = agent.post(format!("{}/api/v1/search", advert.url)).header("content-type", "application/json");
    if let Some(token) = token {
        call = call.header("authorization", format!("Bearer {token}"));
    }
    let mut resp = match call.send(body.to_string()) {
        Ok(resp) => resp,
        // nothing there: a server that stopped without removing its file
        Err(ureq::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset) => return Ok(None),
        Err(ureq::Error::ConnectionFailed) => return Ok(None),
        Err(e) => bail!("the server at {} (serve.json in the data directory) did not answer: {e}", advert.url),
    };
    let status = resp.status();
    let text = resp.body_mut().read_to_string().with_context(|| format!("reading the answer of {}", advert.url))?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["detail"].as_str().map(str::to_owned)).unwrap_or(text);
        let hint = if status == 401 { " (set IMGSEARCH_AUTH_TOKEN to its token)" } else { "" };
        bail!("the server at {} answered {status}: {message}{hint}", advert.url);
    }
    let found: Response = serde_json::from_str(&text).with_context(|| format!("the server at {} answered what is not a search result", advert.url))?;
    Ok(Some(
        found
            .results
            .into_iter()
            .map(|r| Hit { asset_id: r.asset.id, score: r.score, path: None, created_at: None, category_id: None, model_version: found.model_version.clone() })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_on_every_interface_is_reached_on_loopback() {
        assert_eq!(url_for("0.0.0.0:8000".parse().unwrap()), "http://127.0.0.1:8000");
        assert_eq!(url_for("[::]:8000".parse().unwrap()), "http://[::1]:8000");
        assert_eq!(url_for("10.1.2.3:80".parse().unwrap()), "http://10.1.2.3:80");
    }

    #[test]
    fn the_advert_is_removed_by_its_own_server_only() {
        let dir = tempfile::tempdir().unwrap();
        let ours = advertise(dir.path(), "127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(find(dir.path()).unwrap().url, "http://127.0.0.1:9");
        drop(ours);
        assert!(find(dir.path()).is_none());
        // a later server's file (another pid) outlives an earlier server's stop
        let earlier = advertise(dir.path(), "127.0.0.1:9".parse().unwrap()).unwrap();
        std::fs::write(dir.path().join(FILE), r#"{"url":"http://127.0.0.1:10","pid":1}"#).unwrap();
        drop(earlier);
        assert_eq!(find(dir.path()).unwrap().url, "http://127.0.0.1:10");
    }
}
