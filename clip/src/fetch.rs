//! Downloads a model in the Immich layout from a Hugging Face style hub into the model cache.
//!
//! The hub lists a repository's files with their checksums (`/api/models/{repo}/tree/{rev}`): large
//! files carry the sha256 of their content (`lfs.oid`), small ones their git blob id (`oid`, sha1 of
//! `"blob {len}\0" + content`). Each file downloads to `{file}.part`, resumes from where it stopped with
//! an HTTP range request, is verified against its checksum, and only then is renamed into place. So a
//! model directory never holds an unverified file under its real name.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::model::REQUIRED_FILES;

/// Where models come from. `base_url` is the hub (Hugging Face, or a mirror that serves its API).
#[derive(Debug, Clone)]
pub struct FetchSource {
    pub base_url: String,
    /// Repository owner; the repository is `{owner}/{model name}` as Immich publishes them.
    pub owner: String,
    pub revision: String,
}

impl Default for FetchSource {
    fn default() -> Self {
        FetchSource { base_url: "https://huggingface.co".into(), owner: "immich-app".into(), revision: "main".into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot reach {url}: {reason}; without network, copy a model directory onto this machine and pass --model DIR")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}; check the model name (e.g. ViT-B-32__openai) and the hub address")]
    Status { url: String, status: u16 },
    #[error("the model repository {repo} has no {file}; it is not a CLIP model in the Immich layout")]
    MissingInRepository { repo: String, file: String },
    #[error("{file} failed its checksum (expected {expected}, got {actual}); the partial file was removed, run the command again")]
    Checksum { file: String, expected: String, actual: String },
    #[error("the hub listing for {repo} is malformed: {reason}")]
    Listing { repo: String, reason: String },
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Told about each file and every chunk of bytes, so a caller can draw a progress bar.
pub trait FetchProgress {
    /// A file starts; `resumed_at` bytes of `size` were already on disk.
    fn file_started(&self, file: &str, size: u64, resumed_at: u64);
    fn bytes(&self, n: u64);
    fn file_done(&self, file: &str);
}

/// Progress that goes nowhere.
pub struct Silent;
impl FetchProgress for Silent {
    fn file_started(&self, _: &str, _: u64, _: u64) {}
    fn bytes(&self, _: u64) {}
    fn file_done(&self, _: &str) {}
}

#[derive(Debug, Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    size: u64,
    oid: String,
    lfs: Option<Lfs>,
}

#[derive(Debug, Deserialize)]
struct Lfs {
    oid: String,
    size: u64,
}

enum Expected {
    Sha256(String),
    GitBlob(String),
}

/// What one fetch did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FetchReport {
    pub downloaded: Vec<String>,
    pub already_present: Vec<String>,
    pub bytes: u64,
}

/// Fetches model `name` into `cache_dir/name` and returns that directory.
pub fn fetch_model(name: &str, cache_dir: &Path, source: &FetchSource, progress: &dyn FetchProgress) -> Result<(PathBuf, FetchReport), FetchError> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_connect(Some(Duration::from_secs(15))).timeout_recv_body(Some(Duration::from_secs(60))).http_status_as_error(false).build().into();
    let repo = format!("{}/{}", source.owner, name);
    let base = source.base_url.trim_end_matches('/');
    let listing_url = format!("{base}/api/models/{repo}/tree/{}?recursive=true", source.revision);
    let listing = get(&agent, &listing_url, None)?.into_body().read_to_string().map_err(|e| unreachable(&listing_url, e))?;
    let entries: Vec<TreeEntry> = serde_json::from_str(&listing).map_err(|e| FetchError::Listing { repo: repo.clone(), reason: e.to_string() })?;

    let dest = cache_dir.join(name);
    let mut report = FetchReport::default();
    for file in REQUIRED_FILES {
        let entry = entries.iter().find(|e| e.kind == "file" && e.path == file).ok_or_else(|| FetchError::MissingInRepository { repo: repo.clone(), file: file.into() })?;
        let (size, expected) = match &entry.lfs {
            Some(lfs) => (lfs.size, Expected::Sha256(lfs.oid.clone())),
            None => (entry.size, Expected::GitBlob(entry.oid.clone())),
        };
        let target = dest.join(file);
        if target.is_file() && verify(&target, &expected).is_ok() {
            report.already_present.push(file.into());
            continue;
        }
        let url = format!("{base}/{repo}/resolve/{}/{file}", source.revision);
        report.bytes += download(&agent, &url, &target, size, &expected, file, progress)?;
        report.downloaded.push(file.into());
    }
    Ok((dest, report))
}

/// Downloads `url` to `target` through `target.part`, resuming a partial file. Returns bytes received.
fn download(agent: &ureq::Agent, url: &str, target: &Path, size: u64, expected: &Expected, file: &str, progress: &dyn FetchProgress) -> Result<u64, FetchError> {
    let part = PathBuf::from(format!("{}.part", target.display()));
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| FetchError::Io { path, source }
    };
    fs::create_dir_all(part.parent().expect("file in a directory")).map_err(io_err(&part))?;
    let mut have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if have > size {
        fs::remove_file(&part).map_err(io_err(&part))?;
        have = 0;
    }
    let mut received = 0;
    if have < size {
        let resp = get(agent, url, (have > 0).then_some(have))?;
        // 206: the server resumes; 200: it sends everything again, so start over
        let mut out = if resp.status().as_u16() == 206 {
            OpenOptions::new().append(true).open(&part).map_err(io_err(&part))?
        } else {
            have = 0;
            File::create(&part).map_err(io_err(&part))?
        };
        progress.file_started(file, size, have);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|e| unreachable(url, e))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(io_err(&part))?;
            received += n as u64;
            progress.bytes(n as u64);
        }
        out.sync_all().map_err(io_err(&part))?;
    } else {
        progress.file_started(file, size, have);
    }
    if let Err(actual) = verify(&part, expected) {
        let _ = fs::remove_file(&part);
        let expected = match expected {
            Expected::Sha256(h) | Expected::GitBlob(h) => h.clone(),
        };
        return Err(FetchError::Checksum { file: file.into(), expected, actual });
    }
    fs::rename(&part, target).map_err(io_err(target))?;
    progress.file_done(file);
    Ok(received)
}

fn get(agent: &ureq::Agent, url: &str, range_from: Option<u64>) -> Result<ureq::http::Response<ureq::Body>, FetchError> {
    let mut req = agent.get(url);
    if let Some(from) = range_from {
        req = req.header("Range", format!("bytes={from}-"));
    }
    let resp = req.call().map_err(|e| unreachable(url, e))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(FetchError::Status { url: url.into(), status });
    }
    Ok(resp)
}

fn unreachable(url: &str, e: impl std::fmt::Display) -> FetchError {
    FetchError::Unreachable { url: url.into(), reason: e.to_string() }
}

/// Checks a file against its expected checksum; `Err` carries the actual one.
fn verify(path: &Path, expected: &Expected) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let (actual, want) = match expected {
        Expected::Sha256(want) => {
            let mut h = Sha256::new();
            io::copy(&mut f, &mut h).map_err(|e| e.to_string())?;
            (hex::encode(h.finalize()), want)
        }
        Expected::GitBlob(want) => {
            let len = f.metadata().map_err(|e| e.to_string())?.len();
            let mut h = Sha1::new();
            h.update(format!("blob {len}\0").as_bytes());
            io::copy(&mut f, &mut h).map_err(|e| e.to_string())?;
            (hex::encode(h.finalize()), want)
        }
    };
    if &actual == want { Ok(()) } else { Err(actual) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_id_matches_git() {
        // printf 'hello\n' | git hash-object --stdin
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, "hello\n").unwrap();
        assert!(verify(&p, &Expected::GitBlob("ce013625030ba8dba906f756967f9e9ca394464a".into())).is_ok());
        assert!(verify(&p, &Expected::GitBlob("0000".into())).is_err());
    }
}
