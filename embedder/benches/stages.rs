//! The embed stage's two halves alone, on the same images and machine: decode + preprocess on the
//! decode pool (every core), and the image tower on ready tensors. The distributed bench
//! (`bench/distributed.sh`) prints these next to the end-to-end rate.
//!
//!   cargo bench -p embedder --bench stages -- MODEL_DIR IMAGE_DIR [BATCH] [--device cpu|cuda]
//!
//! Prints one JSON line: {"images", "batch", "device", "decodeImagesPerSecond", "inferenceImagesPerSecond"}.

use std::{path::PathBuf, sync::Arc, time::Instant};

use clip::{ClipModel, ModelDir, RuntimeOptions};
use embedder::Embedder;
use protocol::EmbedJob;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let device = args.iter().position(|a| a == "--device").map(|i| args[i + 1].clone()).unwrap_or_else(|| "cpu".into());
    let positional: Vec<&String> = args.iter().enumerate().filter(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--device")).map(|(_, a)| a).collect();
    let [model_dir, image_dir, rest @ ..] = positional.as_slice() else {
        eprintln!("usage: cargo bench -p embedder --bench stages -- MODEL_DIR IMAGE_DIR [BATCH] [--device cpu|cuda]");
        std::process::exit(2);
    };
    let batch: usize = rest.first().map(|b| b.parse().expect("BATCH is a number")).unwrap_or(32);
    let dir = ModelDir::open(model_dir.as_str()).expect("a model directory");
    let options = RuntimeOptions { device: device.parse().expect("cpu or cuda"), ..Default::default() };
    let model = Arc::new(ClipModel::load(&dir, &options).expect("the model loads"));
    let embedder = Embedder::new(model.clone(), 0, false);

    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(image_dir.as_str()).into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_file()).map(|e| e.into_path()).collect();
    files.sort();
    let jobs: Vec<EmbedJob> = files
        .iter()
        .map(|p| EmbedJob {
            v: protocol::VERSION,
            job_id: protocol::next_test_id(),
            asset_id: protocol::next_test_id(),
            session_id: 0,
            path: p.to_string_lossy().into_owned(),
            created_at: chrono::Utc::now(),
            category_id: None,
            attempt: 1,
        })
        .collect();

    // warm up both halves (first inference allocates)
    let warm = embedder.decode(jobs.iter().take(batch).cloned().collect());
    let _ = embedder.infer(warm);

    // decode only: every image, batch by batch, on the decode pool
    let t = Instant::now();
    let mut decoded = Vec::new();
    for chunk in jobs.chunks(batch) {
        decoded.push(embedder.decode(chunk.to_vec()));
    }
    let decode_rate = jobs.len() as f64 / t.elapsed().as_secs_f64();

    // inference only: the decoded batches through the image tower
    let t = Instant::now();
    let mut failed = 0;
    for d in decoded {
        failed += embedder.infer(d).1.failed;
    }
    let inference_rate = jobs.len() as f64 / t.elapsed().as_secs_f64();
    assert_eq!(failed, 0, "every bench image embeds");
    println!(
        "{}",
        serde_json::json!({
            "images": jobs.len(),
            "batch": batch,
            "device": model.image_device(),
            "decodeImagesPerSecond": decode_rate,
            "inferenceImagesPerSecond": inference_rate,
        })
    );
}
