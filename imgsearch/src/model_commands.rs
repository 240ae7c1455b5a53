//! The model commands: `embed`, `preprocess`, `model fetch|info`, and how `--model` is resolved
//! (a directory, or a name in the model cache, fetched when missing).

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use clip::{
    ClipModel, ModelDir, PreprocessConfig, Preprocessor, RuntimeOptions, Towers, embedding_checksum,
    fetch::{FetchProgress, FetchSource, fetch_model},
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::{EmbedArgs, ModelArgs, PreprocessArgs};

/// `model fetch NAME`: downloads into the cache, resuming and verifying every file.
pub(crate) fn fetch(name: &str, model_cache: Option<PathBuf>, hub: String, owner: String) -> Result<()> {
    let cache = model_cache_dir(model_cache)?;
    let source = FetchSource { base_url: hub, owner, ..Default::default() };
    let progress = BarProgress::new();
    let (dir, report) = fetch_model(name, &cache, &source, &progress)?;
    progress.bar.finish_and_clear();
    ModelDir::open(&dir).context("the downloaded model does not open")?;
    println!("{name} is in {} ({} files downloaded, {} already there, {} bytes)", dir.display(), report.downloaded.len(), report.already_present.len(), report.bytes);
    Ok(())
}

/// `model info`: what a model directory holds.
pub(crate) fn info(model: &str, model_cache: Option<PathBuf>) -> Result<()> {
    let dir = resolve_model(model, model_cache)?;
    let info = serde_json::json!({
        "name": dir.name,
        "path": dir.root(),
        "version": dir.version()?,
        "embedDim": dir.config.embed_dim,
        "imageSize": dir.preprocess.size.hw(),
        "contextLength": dir.config.text_cfg.context_length,
    });
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}

pub(crate) fn model_cache_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    match explicit {
        Some(p) => Ok(p),
        None => Ok(dirs::cache_dir().context("no cache directory on this platform; pass --model-cache DIR")?.join("imgsearch/models")),
    }
}

/// `--model` is a directory when it names one, else a model name in the cache. A model missing from
/// the cache is fetched first (from `IMGSEARCH_MODEL_HUB`, default Hugging Face), with a progress bar.
pub(crate) fn resolve_model(model: &str, cache: Option<PathBuf>) -> Result<ModelDir> {
    let as_path = Path::new(model);
    let dir = if as_path.is_dir() || model.contains('/') { as_path.to_owned() } else { model_cache_dir(cache.clone())?.join(model) };
    if !dir.exists() && !model.contains('/') {
        let cache = model_cache_dir(cache)?;
        let hub = std::env::var("IMGSEARCH_MODEL_HUB").unwrap_or_else(|_| "https://huggingface.co".into());
        eprintln!("model {model} is not in the model cache; fetching it from {hub}");
        let source = FetchSource { base_url: hub.clone(), owner: "immich-app".into(), ..Default::default() };
        let progress = BarProgress::new();
        let fetched = fetch_model(model, &cache, &source, &progress);
        progress.bar.finish_and_clear();
        if let Err(e) = fetched {
            bail!(
                "model {model} is not in the model cache ({}) and could not be downloaded from {hub} ({e}); run `imgsearch model fetch {model}` where the hub is reachable and copy the directory there, or pass --model DIR",
                dir.display()
            );
        }
    }
    Ok(ModelDir::open(dir)?)
}

/// The model's `towers`: a command loads only what it runs.
pub(crate) fn load_model(args: &ModelArgs, towers: Towers) -> Result<ClipModel> {
    let dir = resolve_model(&args.model, args.model_cache.clone())?;
    let options = RuntimeOptions { device: args.device, library: args.ort_lib.clone(), ..Default::default() };
    Ok(ClipModel::load_towers(&dir, &options, towers)?)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EmbeddingOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    model: &'a str,
    model_version: &'a str,
    device: &'a str,
    dim: usize,
    checksum: String,
    embedding: &'a [f32],
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a clip::ImageInfo>,
}

pub(crate) fn embed(args: EmbedArgs) -> Result<()> {
    if args.text.is_none() && args.images.is_empty() {
        bail!("nothing to embed; pass image files, or --text \"...\"");
    }
    let model = load_model(&args.model, if args.text.is_some() { Towers::Text } else { Towers::Image })?;
    let mut out = std::io::stdout().lock();
    let record = |device: &str, v: &[f32], path: Option<&Path>, text: Option<&str>, image: Option<&clip::ImageInfo>| {
        let rec = EmbeddingOut { path, text, model: &model.name, model_version: &model.version, device, dim: v.len(), checksum: embedding_checksum(v), embedding: v, image };
        serde_json::to_string(&rec)
    };
    if let Some(text) = &args.text {
        let v = model.embed_texts(&[text])?.row(0).to_vec();
        writeln!(out, "{}", record(&model.text_device(), &v, None, Some(text), None)?)?;
        return Ok(());
    }
    let pre = model.preprocessor().clone().with_fast_jpeg(args.fast_jpeg);
    let mut failed = 0;
    let device = model.image_device();
    // one JSON object per line, in the order given; a bad file is reported and the rest go on
    for path in &args.images {
        let prepared = match pre.prepare_file(path) {
            Ok(p) => p,
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", path.display());
                continue;
            }
        };
        let v = model.embed_images(std::slice::from_ref(&prepared))?.row(0).to_vec();
        writeln!(out, "{}", record(&device, &v, Some(path), None, Some(&prepared.info))?)?;
    }
    if failed > 0 {
        bail!("{failed} of {} images could not be embedded", args.images.len());
    }
    Ok(())
}

pub(crate) fn preprocess(args: PreprocessArgs) -> Result<()> {
    let cfg = match &args.model {
        Some(dir) => ModelDir::open(dir)?.preprocess,
        None => PreprocessConfig::openclip_vit_b32(),
    };
    let pre = Preprocessor::new(cfg).with_fast_jpeg(args.fast_jpeg);
    let prepared = pre.prepare_file(&args.image).with_context(|| format!("cannot preprocess {}", args.image.display()))?;
    let (h, w) = pre.output_hw();
    let file = std::fs::File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    clip::npy::write_f32(std::io::BufWriter::new(file), &[1, 3, h as usize, w as usize], &prepared.pixels)?;
    eprintln!("wrote {} (1x3x{h}x{w} float32)", args.out.display());
    Ok(())
}

/// An indicatif bar per file, with bytes, rate and ETA.
struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    fn new() -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(ProgressStyle::with_template("{msg:32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}").expect("static template").progress_chars("=> "));
        BarProgress { bar }
    }
}

impl FetchProgress for BarProgress {
    fn file_started(&self, file: &str, size: u64, resumed_at: u64) {
        self.bar.reset();
        self.bar.set_length(size);
        self.bar.set_position(resumed_at);
        self.bar.set_message(if resumed_at > 0 { format!("{file} (resumed)") } else { file.to_owned() });
    }
    fn bytes(&self, n: u64) {
        self.bar.inc(n);
    }
    fn file_done(&self, file: &str) {
        self.bar.println(format!("  {file} verified"));
    }
}
