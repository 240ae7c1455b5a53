//! The `imgsearch` binary and its API as a user meets them, in one integration test binary:
//! `cli` (embed, preprocess, model errors), `index` (index, search, status on the embedded default),
//! `api` (`imgsearch serve` started on port 0 and driven over HTTP).

mod api;
mod cli;
mod distributed;
mod manage;
mod index;

#[path = "../../../clip/tests/support/hub.rs"]
mod hub;

use std::path::{Path, PathBuf};

/// The committed fixtures: the tiny trained CLIP, the held-out shapes, real photographs.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}
