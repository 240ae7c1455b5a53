//! Preprocessing throughput on one thread, exact and fast JPEG path, next to the Python reference
//! measured by bench/preprocess.sh on the same files (passed in `PYTHON_REFERENCE`), and how far the
//! fast path drifts: cosine of the ViT-B-32 input tensors, and of the tiny CLIP's embeddings.
//!
//! Run it through bench/preprocess.sh; alone: `cargo bench -p clip --bench preprocess -- DIR`.

use std::{path::PathBuf, time::Instant};

use clip::{ClipModel, ModelDir, PreprocessConfig, Preprocessor, RuntimeOptions, cosine};

/// (images/s, mean decode ms, mean resize + crop + normalize ms)
fn rate(pre: &Preprocessor, files: &[PathBuf]) -> (f64, f64, f64) {
    for f in files.iter().take(5) {
        pre.prepare_file(f).expect("warm-up");
    }
    let (mut decode, mut resize) = (0.0, 0.0);
    let t = Instant::now();
    for f in files {
        let out = pre.prepare_file(f).expect("bench image");
        decode += out.info.decode_ms;
        resize += out.info.resize_ms;
        std::hint::black_box(out);
    }
    let n = files.len() as f64;
    (n / t.elapsed().as_secs_f64(), decode / n, resize / n)
}

fn min_mean(v: &[f32]) -> (f32, f32) {
    (v.iter().copied().fold(1.0, f32::min), v.iter().sum::<f32>() / v.len() as f32)
}

fn main() {
    let dir = std::env::args().skip(1).find(|a| !a.starts_with('-')).expect("usage: preprocess IMAGES_DIR");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).expect("images dir").map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "jpg")).collect();
    files.sort();
    let exact = Preprocessor::new(PreprocessConfig::openclip_vit_b32());
    let fast = exact.clone().with_fast_jpeg(true);

    let (exact_rate, exact_decode, exact_resize) = rate(&exact, &files);
    let (fast_rate, fast_decode, fast_resize) = rate(&fast, &files);
    let python: Option<serde_json::Value> = std::env::var("PYTHON_REFERENCE").ok().and_then(|s| serde_json::from_str(&s).ok());
    let py_rate = python.as_ref().and_then(|p| p["images_per_s"].as_f64());

    println!("preprocessing, {} JPEGs of about 1 megapixel -> 1x3x224x224, one thread", files.len());
    println!("{:52} {:>9} {:>8} {:>10}  decode + resize/normalize ms", "path", "images/s", "ms/img", "vs python");
    let row = |name: &str, r: f64, split: Option<(f64, f64)>| {
        let ratio = py_rate.map(|p| format!("{:.2}x", r / p)).unwrap_or_else(|| "-".into());
        let split = split.map(|(d, z)| format!("{d:.2} + {z:.2}")).unwrap_or_default();
        println!("{name:52} {r:>9.1} {:>8.2} {ratio:>10}  {split}", 1000.0 / r);
    };
    if let (Some(p), Some(py)) = (py_rate, &python) {
        row(&format!("python: PIL {} + open_clip {}", py["pillow"].as_str().unwrap_or("?"), py["open_clip"].as_str().unwrap_or("?")), p, None);
    }
    row("rust exact (libjpeg-turbo + Pillow-order bicubic)", exact_rate, Some((exact_decode, exact_resize)));
    row("rust fast JPEG (DCT-domain 1/2-1/8 decode)", fast_rate, Some((fast_decode, fast_resize)));

    // drift of the fast path from the exact one
    let mut tensor_cos = Vec::new();
    let mut scales = Vec::new();
    for f in &files {
        let a = exact.prepare_file(f).unwrap();
        let b = fast.prepare_file(f).unwrap();
        scales.push(b.info.decode_scale);
        tensor_cos.push(cosine(&a.pixels, &b.pixels));
    }
    let (min, mean) = min_mean(&tensor_cos);
    println!("fast path drift, ViT-B-32 input tensors: cosine min {min:.5} mean {mean:.5} (decoded at 1/{})", scales.iter().max().unwrap());

    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/tiny-clip");
    let model = ModelDir::open(&tiny).ok().and_then(|d| ClipModel::load(&d, &RuntimeOptions::default()).ok());
    match model {
        Some(model) => {
            let exact = model.preprocessor().clone();
            let fast = exact.clone().with_fast_jpeg(true);
            let mut emb_cos = Vec::new();
            for chunk in files.chunks(32) {
                let a: Vec<_> = chunk.iter().map(|f| exact.prepare_file(f).unwrap()).collect();
                let b: Vec<_> = chunk.iter().map(|f| fast.prepare_file(f).unwrap()).collect();
                let (ea, eb) = (model.embed_images(&a).unwrap(), model.embed_images(&b).unwrap());
                for (x, y) in ea.rows().into_iter().zip(eb.rows()) {
                    emb_cos.push(cosine(x.as_slice().unwrap(), y.as_slice().unwrap()));
                }
            }
            let (min, mean) = min_mean(&emb_cos);
            println!("fast path drift, tiny CLIP embeddings (64 px input, 1/8 decode): cosine min {min:.5} mean {mean:.5}");
        }
        None => println!("fast path drift of embeddings: skipped (tiny model or ONNX Runtime not available)"),
    }
}
