//! The `imgsearch` binary as a user runs it: what it prints, its exit status, its error lines.

use std::{
    path::Path,
    process::{Command, Output},
};

use sha2::{Digest, Sha256};

use crate::fixtures;

fn imgsearch(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgsearch"));
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        cmd.env("ORT_DYLIB_PATH", Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-ort/libonnxruntime.so"));
    }
    cmd.args(args).output().expect("run imgsearch")
}

fn tiny() -> String {
    fixtures().join("models/tiny-clip").display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn embed_text_prints_a_normalized_vector_with_its_checksum() {
    let out = imgsearch(&["embed", "--model", &tiny(), "--text", "a photo of a red circle"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rec = &json_lines(&out)[0];
    let v = floats(&rec["embedding"]);
    assert_eq!((rec["dim"].as_u64(), v.len()), (Some(64), 64));
    assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
    assert_eq!(rec["device"], "cpu");
    assert_eq!(rec["model"], "tiny-clip");
    // the checksum is sha256 of the little-endian f32 bytes, as printed
    let mut h = Sha256::new();
    v.iter().for_each(|x| h.update(x.to_le_bytes()));
    assert_eq!(rec["checksum"].as_str().unwrap(), hex::encode(h.finalize()));
}

#[test]
fn embed_images_goes_on_past_a_bad_file_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.jpg");
    let good = std::fs::read(fixtures().join("photos/chelsea.jpg")).unwrap();
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let a = fixtures().join("shapes/red-circle-00.png");
    let b = fixtures().join("photos/rocket-exif8.jpg");
    let out = imgsearch(&["embed", "--model", &tiny(), a.to_str().unwrap(), bad.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(!out.status.success());
    let recs = json_lines(&out);
    assert_eq!(recs.len(), 2, "the two good images are embedded");
    assert_eq!(recs[1]["image"]["orientation"], 8);
    assert_eq!((recs[1]["image"]["width"].as_u64(), recs[1]["image"]["height"].as_u64()), (Some(640), Some(427)));
    let err = stderr(&out);
    assert!(err.contains("broken.jpg: corrupt or truncated image"), "{err}");
    assert!(err.contains("1 of 3 images could not be embedded"), "{err}");
}

#[test]
fn preprocess_writes_the_model_input_as_npy() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("astronaut.npy");
    let out = imgsearch(&["preprocess", fixtures().join("photos/astronaut.jpg").to_str().unwrap(), "--out", out_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (shape, got) = clip::npy::read_f32(std::fs::File::open(&out_file).unwrap()).unwrap();
    assert_eq!(shape, vec![1, 3, 224, 224]);
    let (_, expected) = clip::npy::read_f32(std::fs::File::open(fixtures().join("reference/photos/astronaut.npy")).unwrap()).unwrap();
    let worst = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 0.02, "max abs diff to PIL + open_clip: {worst}");

    let small = dir.path().join("tiny.npy");
    let out = imgsearch(&["preprocess", fixtures().join("photos/astronaut.jpg").to_str().unwrap(), "--out", small.to_str().unwrap(), "--model", &tiny()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(clip::npy::read_f32(std::fs::File::open(&small).unwrap()).unwrap().0, vec![1, 3, 64, 64]);
}

#[test]
fn a_missing_model_is_one_line_that_says_what_to_do() {
    let cache = tempfile::tempdir().unwrap();
    // a hub that does not answer: the model cannot be fetched first
    let out = Command::new(env!("CARGO_BIN_EXE_imgsearch"))
        .env("IMGSEARCH_MODEL_HUB", "http://127.0.0.1:9")
        .args(["embed", "--text", "x", "--model-cache", cache.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: model ViT-B-32__openai is not in the model cache"), "{err}");
    assert!(last.contains("could not be downloaded from http://127.0.0.1:9"), "{err}");
    let err = last.to_owned();
    assert!(err.contains("run `imgsearch model fetch ViT-B-32__openai`"), "{err}");

    let broken = tempfile::tempdir().unwrap();
    std::fs::write(broken.path().join("config.json"), "{}").unwrap();
    let out = imgsearch(&["embed", "--text", "x", "--model", broken.path().to_str().unwrap()]);
    let err = stderr(&out);
    assert!(err.contains("visual/model.onnx is missing"), "{err}");
}

#[test]
fn a_missing_onnx_runtime_says_how_to_get_it() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_imgsearch")).env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so").args(["embed", "--model", &tiny(), "--text", "x"]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("onnx runtime library not found (looked at /nonexistent/libonnxruntime.so)"), "{err}");
    assert!(err.contains("scripts/setup-ort.sh"), "{err}");
}
