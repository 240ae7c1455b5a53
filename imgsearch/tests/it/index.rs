//! The embedded default as a new user runs it: `imgsearch index`, `search` and `status` on folders
//! of real files, against the tiny trained CLIP. Each test has its own data directory.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use catalog::{Catalog, JobStatus, Page};

use crate::{fixtures, hub};

fn command(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgsearch"));
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        cmd.env("ORT_DYLIB_PATH", Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-ort/libonnxruntime.so"));
    }
    cmd.env("IMGSEARCH_DATA_DIR", data).env("IMGSEARCH_MODEL", fixtures().join("models/tiny-clip")).args(args);
    cmd
}

fn run(data: &Path, args: &[&str]) -> Output {
    command(data, args).output().expect("run imgsearch")
}

fn ok_json(data: &Path, args: &[&str]) -> serde_json::Value {
    let out = run(data, args);
    assert!(out.status.success(), "imgsearch {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `copies` copies of the 240 held-out shapes, in sub-folders of a fresh directory.
fn shapes(copies: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for c in 0..copies {
        let sub = dir.path().join(format!("set{c}"));
        std::fs::create_dir(&sub).unwrap();
        for e in std::fs::read_dir(fixtures().join("shapes")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), sub.join(e.file_name())).unwrap();
        }
    }
    dir
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn index_then_search_finds_the_described_images() {
    let data = tempfile::tempdir().unwrap();
    let images = shapes(1);
    let summary = ok_json(data.path(), &["index", path_str(images.path()), "--json", "--category", "shapes"]);
    assert_eq!((summary["indexed"].as_u64(), summary["failed"].as_u64(), summary["skippedUnchanged"].as_u64()), (Some(240), Some(0), Some(0)));
    assert_eq!(summary["sessionStatus"], "completed");

    let status = ok_json(data.path(), &["status", "--json"]);
    assert_eq!((status["assets"].as_i64(), status["vectors"].as_u64()), (Some(240), Some(240)));
    assert_eq!(status["assetsByStatus"]["trained"], 240);
    assert_eq!(status["collection"], "image_assets_v1");

    let found = ok_json(data.path(), &["search", "a red circle", "--limit", "10", "--json"]);
    let results = found["results"].as_array().unwrap();
    assert_eq!(results.len(), 10);
    for r in results {
        let path = r["asset"]["path"].as_str().unwrap();
        assert!(path.contains("/red-circle-"), "{path} in the top 10 for 'a red circle'");
    }
    let scores: Vec<f64> = results.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    assert!(results[0]["asset"]["categoryId"].is_i64(), "hydrated from the catalog");

    // the next page continues the ranking
    let next = ok_json(data.path(), &["search", "a red circle", "--limit", "5", "--offset", "5", "--json"]);
    let page2: Vec<&str> = next["results"].as_array().unwrap().iter().map(|r| r["asset"]["path"].as_str().unwrap()).collect();
    let top: Vec<&str> = results[5..].iter().map(|r| r["asset"]["path"].as_str().unwrap()).collect();
    assert_eq!(page2, top);

    // the category filter and a date range that excludes everything (files are dated by mtime: now)
    let in_cat = ok_json(data.path(), &["search", "a blue square", "--category", "shapes", "--limit", "3", "--json"]);
    assert_eq!(in_cat["results"].as_array().unwrap().len(), 3);
    let old = ok_json(data.path(), &["search", "a blue square", "--to", "2001-01-01", "--json"]);
    assert_eq!(old["results"].as_array().unwrap().len(), 0);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let recent = ok_json(data.path(), &["search", "a blue square", "--from", &today, "--limit", "3", "--json"]);
    assert_eq!(recent["results"].as_array().unwrap().len(), 3);

    // human output: ranked paths with scores
    let out = run(data.path(), &["search", "a green triangle", "--limit", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().next().unwrap().starts_with("  1. 0."), "{text}");
}

/// (asset id, score) of each result, and whether the running server answered.
fn ranking(data: &Path, args: &[&str]) -> (Vec<(i64, f64)>, bool) {
    let out = run(data, args);
    assert!(out.status.success(), "imgsearch {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ranked = found["results"].as_array().unwrap().iter().map(|r| (r["asset"]["id"].as_i64().unwrap(), r["score"].as_f64().unwrap())).collect();
    (ranked, String::from_utf8_lossy(&out.stderr).contains("answered by the server at"))
}

#[test]
fn a_search_beside_a_running_server_asks_it_and_a_dead_servers_file_is_ignored() {
    let data = tempfile::tempdir().unwrap();
    let images = shapes(1);
    ok_json(data.path(), &["index", path_str(images.path()), "--json", "--category", "shapes"]);
    let query = ["search", "a red circle", "--limit", "7", "--json"];
    let (alone, asked) = ranking(data.path(), &query);
    assert_eq!((alone.len(), asked), (7, false));
    let filtered = ["search", "a blue square", "--category", "shapes", "--to", "2001-01-01", "--json"];

    let serve = || crate::spawn_serve(&mut command(data.path(), &["serve", "--addr", "127.0.0.1:0"]));
    let advert = data.path().join(imgsearch::local_serve::FILE);
    let (server, base) = serve();
    // the store is the server's (a second process is refused it): the CLI asks the server, and
    // prints what a search of its own prints, filters included
    let (beside, asked) = ranking(data.path(), &query);
    assert!(asked, "the server answered");
    assert_eq!(beside.iter().map(|r| r.0).collect::<Vec<_>>(), alone.iter().map(|r| r.0).collect::<Vec<_>>(), "the same ranking");
    assert!(beside.iter().zip(&alone).all(|(a, b)| (a.1 - b.1).abs() < 1e-5), "{beside:?} vs {alone:?}");
    assert_eq!(ranking(data.path(), &filtered), (vec![], true));
    assert_eq!(imgsearch::local_serve::find(data.path()).unwrap().url, base);

    // stopped as a service manager stops it (SIGTERM): it exits cleanly and takes its file along
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let mut server = server;
    assert!(server.wait().unwrap().success());
    assert!(!advert.exists());
    let ids = |r: &[(i64, f64)]| r.iter().map(|r| r.0).collect::<Vec<_>>();
    let (after, asked) = ranking(data.path(), &query);
    assert_eq!((ids(&after), asked), (ids(&alone), false));

    // killed, it leaves the file behind: nothing listens there, the CLI searches on its own
    let (mut server, _) = serve();
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(advert.exists());
    let (after, asked) = ranking(data.path(), &query);
    assert_eq!((ids(&after), asked), (ids(&alone), false));
}

#[test]
fn a_second_run_skips_unchanged_files_and_embeds_changed_ones() {
    let data = tempfile::tempdir().unwrap();
    let images = shapes(1);
    let first_run = ok_json(data.path(), &["index", path_str(images.path()), "--json"]);
    assert_eq!(first_run["hashedFiles"].as_u64(), Some(240));
    let again = ok_json(data.path(), &["index", path_str(images.path()), "--json"]);
    assert_eq!((again["indexed"].as_u64(), again["skippedUnchanged"].as_u64()), (Some(0), Some(240)));
    // same size and mtime as the catalog has: not opened, not hashed
    assert_eq!(again["hashedFiles"].as_u64(), Some(0), "{again}");

    // one file replaced by another picture, one deleted
    let set = images.path().join("set0");
    let first = |prefix: &str| {
        let mut names: Vec<PathBuf> =
            std::fs::read_dir(&set).unwrap().map(|e| e.unwrap().path()).filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix)).collect();
        names.sort();
        names.remove(0)
    };
    std::fs::write(first("red-circle-"), std::fs::read(first("blue-square-")).unwrap()).unwrap();
    std::fs::remove_file(first("green-triangle-")).unwrap();
    let third = ok_json(data.path(), &["index", path_str(images.path()), "--json"]);
    assert_eq!((third["indexed"].as_u64(), third["skippedUnchanged"].as_u64(), third["missingOnDisk"].as_u64()), (Some(1), Some(238), Some(1)));
    assert_eq!(third["hashedFiles"].as_u64(), Some(1), "only the rewritten file is read: {third}");
}

#[test]
fn bad_files_fail_with_their_reason_and_the_rest_is_indexed() {
    let data = tempfile::tempdir().unwrap();
    let images = shapes(1);
    let dir = images.path();
    let photo = std::fs::read(fixtures().join("photos/rocket-exif8.jpg")).unwrap();
    std::fs::write(dir.join("truncated.jpg"), &photo[..photo.len() / 3]).unwrap();
    let mut corrupt = photo.clone();
    for b in corrupt.iter_mut().skip(600).take(4000) {
        *b = 0xff;
    }
    std::fs::write(dir.join("corrupt.jpg"), &corrupt).unwrap();
    std::fs::write(dir.join("notes.jpg"), b"this is text, not a picture").unwrap();
    std::fs::write(dir.join("README.txt"), b"hello").unwrap();
    let summary = ok_json(data.path(), &["index", path_str(dir), "--json"]);
    assert_eq!(summary["indexed"].as_u64(), Some(240), "{summary}");
    assert_eq!(summary["failed"].as_u64(), Some(2), "{summary}");
    assert_eq!(summary["failedReasons"][0]["reason"], "corrupt");
    assert_eq!(summary["notImages"].as_u64(), Some(2), "sniffed by content, whatever the extension");
    assert_eq!(summary["sessionStatus"], "completed");
    let status = ok_json(data.path(), &["status", "--json"]);
    assert_eq!((status["failedJobs"].as_i64(), status["assetsByStatus"]["failed"].as_i64()), (Some(2), Some(2)));
}

async fn completed_jobs(data: &Path) -> (i64, i64) {
    let catalog = Catalog::connect_sqlite(&data.join("catalog.sqlite")).await.unwrap();
    let sessions = catalog.list_sessions(None, Page::new(0, 10)).await.unwrap();
    let mut done = 0;
    let mut evidence = 0;
    for s in &sessions.items {
        done += catalog.list_jobs(s.id, Some(JobStatus::Completed), Page::new(0, 1)).await.unwrap().total;
        evidence += catalog.evidence_for_session(s.id, Page::new(0, 1)).await.unwrap().total;
    }
    catalog.close().await;
    (done, evidence)
}

/// Starts an index run, waits until part of it is recorded, then stops it with `signal`.
async fn interrupt_midway(data: &Path, images: &Path, signal: &str) -> i64 {
    let mut child = command(data, &["index", path_str(images), "--json", "--batch-size", "4"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if data.join("catalog.sqlite").exists() && completed_jobs(data).await.0 >= 50 {
            break;
        }
        assert!(Instant::now() < deadline, "the run never recorded 50 jobs");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be interrupted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
    completed_jobs(data).await.0
}

#[tokio::test]
async fn a_killed_run_resumes_without_embedding_finished_images_again() {
    let data = tempfile::tempdir().unwrap();
    let images = shapes(4);
    let done = interrupt_midway(data.path(), images.path(), "-KILL").await;
    assert!((50..960).contains(&done), "{done} jobs completed before the kill");
    let summary = ok_json(data.path(), &["index", path_str(images.path()), "--json"]);
    assert_eq!(summary["resumed"], true);
    assert_eq!(summary["indexed"].as_i64(), Some(960 - done), "only what was left is embedded: {summary}");
    assert_eq!(summary["sessionStatus"], "completed");
    assert_eq!(completed_jobs(data.path()).await, (960, 960), "one completed job and one evidence row per image");
    let status = ok_json(data.path(), &["status", "--json"]);
    assert_eq!((status["assets"].as_i64(), status["vectors"].as_u64()), (Some(960), Some(960)));
}

#[tokio::test]
async fn ctrl_c_pauses_the_session_and_the_next_run_finishes_it() {
    let data = tempfile::tempdir().unwrap();
    let images = shapes(4);
    let done = interrupt_midway(data.path(), images.path(), "-INT").await;
    assert!(done >= 50);
    let status = ok_json(data.path(), &["status", "--json"]);
    assert_eq!(status["sessions"]["paused"], 1, "{status}");
    let summary = ok_json(data.path(), &["index", path_str(images.path()), "--json"]);
    assert_eq!(summary["resumed"], true);
    assert_eq!(summary["sessionStatus"], "completed");
    assert_eq!(completed_jobs(data.path()).await, (960, 960));
}

#[test]
fn search_before_anything_is_indexed_is_empty_not_an_error() {
    let data = tempfile::tempdir().unwrap();
    let found = ok_json(data.path(), &["search", "anything", "--json"]);
    assert_eq!(found["results"].as_array().unwrap().len(), 0);
    let out = run(data.path(), &["search", "anything", "--limit", "101"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limit must be between 1 and 100"), "{err}");
}

#[test]
fn decode_overlapped_with_inference_indexes_the_same() {
    let data = tempfile::tempdir().unwrap();
    let images = shapes(1);
    let summary = ok_json(data.path(), &["index", path_str(images.path()), "--json", "--overlap-decode", "on", "--batch-size", "7"]);
    assert_eq!((summary["indexed"].as_u64(), summary["failed"].as_u64()), (Some(240), Some(0)), "{summary}");
    let found = ok_json(data.path(), &["search", "a yellow square", "--limit", "5", "--json"]);
    for r in found["results"].as_array().unwrap() {
        assert!(r["asset"]["path"].as_str().unwrap().contains("/yellow-square-"), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_missing_from_the_cache_is_fetched_first() {
    let addr = hub::serve(std::sync::Arc::new(hub::Hub { root: fixtures().join("models/tiny-clip"), ..Default::default() })).await;
    let (data, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let images = shapes(1);
    let out = command(data.path(), &["index", path_str(images.path()), "--json"])
        .env("IMGSEARCH_MODEL", "tiny-clip")
        .env("IMGSEARCH_MODEL_CACHE", cache.path())
        .env("IMGSEARCH_MODEL_HUB", format!("http://{addr}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["indexed"].as_u64(), Some(240));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model tiny-clip is not in the model cache; fetching it from"));
    assert!(cache.path().join("tiny-clip/visual/model.onnx").is_file(), "the model stays in the cache");
}

#[test]
fn vectors_delete_cleanup_reset_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let images = shapes(2);
    ok_json(data.path(), &["index", path_str(images.path()), "--json"]);
    let set0 = images.path().join("set0");

    // soft: hidden from search, then restored
    let top = ok_json(data.path(), &["search", "a red circle", "--limit", "1", "--json"])["results"][0]["asset"]["id"].as_i64().unwrap();
    let top_arg = top.to_string();
    assert_eq!(ok_json(data.path(), &["vectors", "delete", "--asset", &top_arg, "--soft", "--json"])["softDeleted"], 1);
    let hidden = ok_json(data.path(), &["search", "a red circle", "--limit", "100", "--json"]);
    assert!(hidden["results"].as_array().unwrap().iter().all(|r| r["asset"]["id"] != top));
    assert_eq!(ok_json(data.path(), &["vectors", "restore", "--asset", &top_arg, "--json"])["restored"], 1);
    assert_eq!(ok_json(data.path(), &["search", "a red circle", "--limit", "1", "--json"])["results"][0]["asset"]["id"], top);

    let out = run(data.path(), &["vectors", "delete", "--dir", path_str(&set0)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("add --yes"), "{err}");

    let d = ok_json(data.path(), &["vectors", "delete", "--dir", path_str(&set0), "--yes", "--reason", "duplicates", "--json"]);
    assert_eq!((d["deletedVectors"].as_u64(), d["assetsUpdated"].as_u64()), (Some(240), Some(240)), "{d}");
    let status = ok_json(data.path(), &["status", "--json"]);
    assert_eq!(status["vectors"].as_u64(), Some(240), "{status}");

    let c = ok_json(data.path(), &["vectors", "cleanup", "--dry-run", "--json"]);
    assert_eq!((c["vectorsScanned"].as_u64(), c["orphanVectors"].as_u64(), c["assetsRequeued"].as_u64()), (Some(240), Some(0), Some(0)), "{c}");
    let logs = ok_json(data.path(), &["vectors", "logs", "--json"]);
    assert_eq!((logs[0]["deletionType"].as_str(), logs[0]["vectorCount"].as_i64(), logs[0]["reason"].as_str()), (Some("DIRECTORY"), Some(240), Some("duplicates")), "{logs}");
    assert_eq!(logs[1]["metadata"]["soft"], true, "{logs}");

    let out = run(data.path(), &["vectors", "reset"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("a reset deletes every vector; add --yes"), "{}", String::from_utf8_lossy(&out.stderr));
    let r = ok_json(data.path(), &["vectors", "reset", "--yes", "--json"]);
    assert_eq!(r["deletedVectors"].as_u64(), Some(240));

    // the next index embeds them all again
    let again = ok_json(data.path(), &["index", path_str(images.path()), "--json"]);
    assert_eq!(again["indexed"].as_u64(), Some(480), "{again}");

    // reindex one folder: exactly its images, through the pipeline (a new session, new evidence)
    let r = ok_json(data.path(), &["vectors", "reindex", "--dir", path_str(&set0), "--json"]);
    assert_eq!((r["indexed"].as_u64(), r["sessionStatus"].as_str()), (Some(240), Some("completed")), "{r}");
    assert_ne!(r["session"], again["session"], "a new session");
    let status = ok_json(data.path(), &["status", "--json"]);
    assert_eq!(status["vectors"].as_u64(), Some(480), "vectors replaced, not added: {status}");

    // a model upgrade builds image_assets_v2 and moves the alias; the old model is then refused
    let (_b, b) = crate::manage::second_model();
    let up = ok_json(data.path(), &["vectors", "upgrade", "--model", path_str(&b), "--json"]);
    assert_eq!(
        (up["collection"].as_str(), up["previous"].as_str(), up["indexed"].as_u64(), up["swapped"].as_bool()),
        (Some("image_assets_v2"), Some("image_assets_v1"), Some(480), Some(true)),
        "{up}"
    );
    let out = run(data.path(), &["search", "a red circle"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("was built with model version"), "{}", String::from_utf8_lossy(&out.stderr));
    let found = ok_json(data.path(), &["search", "a red circle", "--limit", "3", "--model", path_str(&b), "--json"]);
    assert_eq!(found["results"].as_array().map(|a| a.len()), Some(3), "{found}");
    let out = run(data.path(), &["vectors", "drop-collection", "image_assets_v2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is what search uses"), "{}", String::from_utf8_lossy(&out.stderr));
    ok_json(data.path(), &["vectors", "drop-collection", "image_assets_v1", "--json"]);
}

#[test]
fn files_deleted_on_disk_lose_their_vectors_at_the_next_index() {
    let data = tempfile::tempdir().unwrap();
    let images = shapes(1);
    ok_json(data.path(), &["index", path_str(images.path()), "--json"]);
    let gone: Vec<PathBuf> = ["red-circle-00.png", "red-circle-01.jpg", "blue-circle-00.jpg"].iter().map(|f| images.path().join("set0").join(f)).collect();
    for f in &gone {
        std::fs::remove_file(f).unwrap();
    }
    let again = ok_json(data.path(), &["index", path_str(images.path()), "--json"]);
    assert_eq!((again["missingOnDisk"].as_u64(), again["removedVectorsOfMissing"].as_u64(), again["indexed"].as_u64()), (Some(3), Some(3), Some(0)), "{again}");
    let status = ok_json(data.path(), &["status", "--json"]);
    assert_eq!(status["vectors"].as_u64(), Some(237), "{status}");
    let found = ok_json(data.path(), &["search", "a red circle", "--limit", "100", "--json"]);
    let paths: Vec<&str> = found["results"].as_array().unwrap().iter().map(|r| r["asset"]["path"].as_str().unwrap()).collect();
    assert!(!paths.iter().any(|p| p.ends_with("/red-circle-00.png") || p.ends_with("/red-circle-01.jpg")), "{paths:?}");
    let logs = ok_json(data.path(), &["vectors", "logs", "--json"]);
    assert_eq!((logs[0]["reason"].as_str(), logs[0]["vectorCount"].as_i64()), (Some("file deleted on disk"), Some(3)), "{logs}");
    // a third run reports nothing new; a file put back is embedded again
    let third = ok_json(data.path(), &["index", path_str(images.path()), "--json"]);
    assert_eq!(third["missingOnDisk"].as_u64(), Some(0), "{third}");
    std::fs::copy(fixtures().join("shapes/red-circle-00.png"), &gone[0]).unwrap();
    let back = ok_json(data.path(), &["index", path_str(images.path()), "--json"]);
    assert_eq!(back["indexed"].as_u64(), Some(1), "{back}");
}
