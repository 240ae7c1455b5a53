//! Hostile input, as a user meets it: a folder of broken, hostile and unusual files (the corpus of
//! `hostile_corpus`) mixed with good ones, indexed by `imgsearch index` under a memory cap, then
//! uploaded to and thumbnailed by `imgsearch serve` under the same cap. Nothing may crash or hang;
//! every good and unusual file is indexed, every broken one failed or skipped with its reason, a
//! second run changes nothing, and the server answers 4xx or 200 to each file, never 5xx.

use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use catalog::{Catalog, Page, TrainingStatus};
use serde_json::Value;

use crate::{
    fixtures,
    hostile_corpus::{self, Case, Expect},
};

/// The address space each process may map (2 GiB). Large enough for the runtime's own reservations (ONNX
/// Runtime, thread stacks, allocator arenas), far below what one unbounded decode would take (the
/// 1,000,000 x 1 PNG alone once asked for tens of GB).
const ADDRESS_SPACE: u64 = 2 << 30;

fn imgsearch(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgsearch"));
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        cmd.env("ORT_DYLIB_PATH", Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-ort/libonnxruntime.so"));
    }
    cmd.env("IMGSEARCH_DATA_DIR", data).env("IMGSEARCH_MODEL", fixtures().join("models/tiny-clip"));
    // SAFETY: setrlimit is async-signal-safe, and nothing else runs between fork and exec
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: ADDRESS_SPACE, rlim_max: ADDRESS_SPACE };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Runs a command to its end, or kills it after `limit` and fails the test (a hang).
fn run_bounded(mut cmd: Command, limit: Duration) -> (std::process::ExitStatus, String, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start imgsearch");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("imgsearch hung: no exit after {limit:?}; stderr: {}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

fn index(data: &Path, root: &Path, extra: &[&str]) -> Value {
    let mut cmd = imgsearch(data);
    cmd.arg("index").arg(root).args(["--json"]).args(extra);
    let (status, out, err) = run_bounded(cmd, Duration::from_secs(600));
    assert!(status.success(), "index crashed ({status}); stderr: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn status(data: &Path) -> Value {
    let mut cmd = imgsearch(data);
    cmd.args(["status", "--json"]);
    let (status, out, err) = run_bounded(cmd, Duration::from_secs(120));
    assert!(status.success(), "status: {err}");
    serde_json::from_str(&out).unwrap()
}

fn expected_counts(cases: &[Case]) -> (usize, BTreeMap<&'static str, usize>, BTreeMap<&'static str, usize>) {
    let (mut indexed, mut failed, mut skipped) = (0, BTreeMap::new(), BTreeMap::new());
    for c in cases {
        match c.expect {
            Expect::Indexed => indexed += 1,
            Expect::Failed(r) => *failed.entry(r).or_default() += 1,
            Expect::Skipped(r) => *skipped.entry(r).or_default() += 1,
        }
    }
    (indexed, failed, skipped)
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_files_never_stop_the_work() {
    let root = tempfile::tempdir().unwrap();
    let cases = hostile_corpus::write(root.path());
    assert!(cases.len() >= 40, "the corpus has {} kinds", cases.len());
    let (want_indexed, want_failed, want_skipped) = expected_counts(&cases);
    let data = tempfile::tempdir().unwrap();

    // 1. the whole folder indexes under the memory cap, without a crash or a hang
    let summary = index(data.path(), root.path(), &[]);
    let got_failed: BTreeMap<String, usize> =
        summary["failedReasons"].as_array().unwrap().iter().map(|r| (r["reason"].as_str().unwrap().to_owned(), r["count"].as_u64().unwrap() as usize)).collect();
    let got_skipped: BTreeMap<String, usize> = summary["skipped"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap() as usize)).collect();
    let as_strings = |m: &BTreeMap<&str, usize>| m.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>();
    assert_eq!(got_failed, as_strings(&want_failed), "failures by reason; summary: {summary:#}");
    assert_eq!(got_skipped, as_strings(&want_skipped), "skips by reason; summary: {summary:#}");
    assert_eq!(summary["indexed"].as_u64(), Some(want_indexed as u64), "{summary:#}");
    assert_eq!(summary["sessionStatus"], "completed");

    // every file ended as its case says: the catalog is checked file by file
    let catalog = Catalog::connect_sqlite(&data.path().join("catalog.sqlite")).await.unwrap();
    let mut assets = BTreeMap::new();
    for a in catalog.list_assets(Page::new(0, 1000)).await.unwrap().items {
        assets.insert(protocol::paths::from_stored(&a.path), a);
    }
    for case in &cases {
        let canonical = case.path.canonicalize().unwrap_or_else(|_| case.path.clone());
        let asset = assets.get(&canonical);
        match (&case.expect, asset) {
            (Expect::Indexed, Some(a)) => assert_eq!(a.training_status, TrainingStatus::Trained, "{}: {}", case.kind, a.path),
            (Expect::Failed(reason), Some(a)) => {
                assert_eq!(a.training_status, TrainingStatus::Failed, "{}: {}", case.kind, a.path);
                let failures = catalog.failures(1000).await.unwrap();
                let group = failures.iter().find(|g| g.examples.contains(&a.path));
                assert_eq!(group.map(|g| g.reason.as_str()), Some(*reason), "{}: {}", case.kind, a.path);
            }
            (Expect::Skipped(_), None) => {}
            (expect, found) => panic!("{} ({}): expected {expect:?}, the catalog has {:?}", case.kind, case.path.display(), found.map(|a| a.training_status)),
        }
    }
    // a name that is not UTF-8 is stored escaped, and opened again from what is stored
    assert!(assets.keys().any(|p| p.to_str().is_none()), "a non-UTF-8 path was indexed");
    assert!(summary["failedExamples"].as_array().unwrap().iter().all(|e| e["path"].as_str().is_some()));

    // 2. a second run changes nothing: no retry of permanent failures, no doubled counts
    let before = status(data.path());
    let again = index(data.path(), root.path(), &[]);
    assert_eq!((again["indexed"].as_u64(), again["failed"].as_u64()), (Some(0), Some(0)), "{again:#}");
    assert_eq!(again["skippedUnchanged"].as_u64(), Some((want_indexed + want_failed.values().sum::<usize>()) as u64));
    let after = status(data.path());
    assert_eq!(
        (after["failedJobs"].clone(), after["failedAssets"].clone(), after["vectors"].clone()),
        (before["failedJobs"].clone(), before["failedAssets"].clone(), before["vectors"].clone())
    );
    // status lists the failures by reason, with examples
    let listed: BTreeMap<String, usize> =
        after["failures"].as_array().unwrap().iter().map(|g| (g["reason"].as_str().unwrap().to_owned(), g["count"].as_u64().unwrap() as usize)).collect();
    assert_eq!(listed, as_strings(&want_failed));
    assert!(after["failures"].as_array().unwrap().iter().all(|g| !g["examples"].as_array().unwrap().is_empty()));
    // --retry-failed tries them again: they fail the same way, and files are still counted once
    let retried = index(data.path(), root.path(), &["--retry-failed"]);
    assert_eq!(retried["failed"].as_u64(), Some(want_failed.values().sum::<usize>() as u64), "{retried:#}");
    assert_eq!(status(data.path())["failedAssets"], before["failedAssets"]);

    // 3. serve, under the same cap: each regular file uploaded, each asset's thumbnail fetched
    let mut cmd = imgsearch(data.path());
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--allow-root"]).arg(root.path());
    let (mut child, base) = crate::spawn_serve(&mut cmd);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(120))).build().into();
    let mut answers: Vec<(String, u16)> = Vec::new();
    for case in &cases {
        let Ok(meta) = std::fs::metadata(&case.path) else { continue };
        if !meta.is_file() {
            continue;
        }
        let file = std::fs::read(&case.path).unwrap();
        let boundary = "XBOUNDARYX";
        let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"upload\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
        body.extend_from_slice(&file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let resp = agent.post(&format!("{base}/api/v1/search/image?limit=3")).header("content-type", format!("multipart/form-data; boundary={boundary}")).send(&body[..]);
        let status = resp.unwrap_or_else(|e| panic!("upload of {} ({}): the server did not answer: {e}", case.kind, case.path.display())).status().as_u16();
        answers.push((format!("upload {}", case.kind), status));
        if case.expect == Expect::Indexed {
            assert_eq!(status, 200, "upload of {}", case.kind);
        }
    }
    for asset in assets.values() {
        let resp = agent.get(&format!("{base}/api/v1/images/{}/thumbnail?size=128", asset.id)).call();
        let mut resp = resp.unwrap_or_else(|e| panic!("thumbnail of {}: the server did not answer: {e}", asset.path));
        let status = resp.status().as_u16();
        answers.push((format!("thumbnail {}", asset.path), status));
        if asset.training_status == TrainingStatus::Trained {
            assert_eq!(status, 200, "thumbnail of {}: {}", asset.path, resp.body_mut().read_to_string().unwrap_or_default());
        }
    }
    let server_errors: Vec<&(String, u16)> = answers.iter().filter(|(_, s)| *s >= 500 || *s < 200).collect();
    assert!(server_errors.is_empty(), "never a 5xx: {server_errors:?}");
    let health = agent.get(&format!("{base}/health")).call().expect("the server is alive").status().as_u16();
    assert_eq!(health, 200);
    assert!(child.try_wait().unwrap().is_none(), "serve is still running");
    let _ = child.kill();
    let _ = child.wait();
}
