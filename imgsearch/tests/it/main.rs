//! The `imgsearch` binary and its API as a user meets them, in one integration test binary:
//! `cli` (embed, preprocess, model errors), `index` (index, search, status on the embedded default),
//! `api` (`imgsearch serve` started on port 0 and driven over HTTP).

mod api;
mod cli;
mod distributed;
mod hostile;
mod hostile_corpus;
mod index;
mod manage;

#[path = "../../../clip/tests/support/hub.rs"]
mod hub;

use std::path::{Path, PathBuf};

/// The committed fixtures: the tiny trained CLIP, the held-out shapes, real photographs.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Starts `imgsearch serve` (the command as given) and waits for its first line, "serving
/// http://ADDR (...)": the child and its base URL. The rest of its stderr is drained.
pub fn spawn_serve(cmd: &mut std::process::Command) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().expect("start imgsearch serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("imgsearch serve printed where it listens").unwrap();
        if let Some(rest) = line.strip_prefix("serving ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}
