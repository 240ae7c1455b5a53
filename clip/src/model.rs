//! A CLIP model directory in the layout Immich publishes for its OpenCLIP exports:
//!
//! ```text
//! ViT-B-32__openai/
//!   config.json                 open_clip model config: embed_dim, vision_cfg.image_size, text_cfg.context_length
//!   visual/model.onnx           image tower: input `image` [n, 3, H, W] f32, output `embedding` [n, D]
//!   visual/preprocess_cfg.json  size, mean, std, interpolation, resize_mode
//!   textual/model.onnx          text tower: input `text` [n, context] i32, output `embedding` [n, D]
//!   textual/tokenizer.json      Hugging Face tokenizers file (CLIP BPE)
//!   textual/tokenizer_config.json  pad_token
//! ```
//!
//! This module only reads and validates the files; it never loads ONNX Runtime.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::error::ModelError;

/// The model every command uses when none is given.
pub const DEFAULT_MODEL: &str = "ViT-B-32__openai";

/// The files of the layout, relative to the model directory.
pub const CONFIG: &str = "config.json";
pub const VISUAL_MODEL: &str = "visual/model.onnx";
pub const PREPROCESS_CFG: &str = "visual/preprocess_cfg.json";
pub const TEXTUAL_MODEL: &str = "textual/model.onnx";
pub const TOKENIZER: &str = "textual/tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "textual/tokenizer_config.json";
/// Every file a model needs; `imgsearch model fetch` downloads exactly these.
pub const REQUIRED_FILES: [&str; 6] = [CONFIG, VISUAL_MODEL, PREPROCESS_CFG, TEXTUAL_MODEL, TOKENIZER, TOKENIZER_CONFIG];

const REFETCH: &str = "fetch the model again with `imgsearch model fetch`";

/// The parts of open_clip's `config.json` this project uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    /// Dimension of both towers' output (512 for ViT-B-32).
    pub embed_dim: usize,
    pub vision_cfg: VisionConfig,
    pub text_cfg: TextConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VisionConfig {
    pub image_size: ImageSize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TextConfig {
    /// Tokens per text, start and end tokens included (77 for CLIP).
    #[serde(default = "default_context_length")]
    pub context_length: usize,
}

fn default_context_length() -> usize {
    77
}

/// open_clip writes sizes either as one number or as `[h, w]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ImageSize {
    Square(u32),
    Pair([u32; 2]),
}

impl ImageSize {
    /// (height, width)
    pub fn hw(self) -> (u32, u32) {
        match self {
            ImageSize::Square(s) => (s, s),
            ImageSize::Pair([h, w]) => (h, w),
        }
    }
}

/// How images are resampled; open_clip's names.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Bicubic,
    Bilinear,
    Nearest,
}

/// How an image is brought to the model's size; open_clip's names.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Resize the shortest side to the size, then center-crop (open_clip's default).
    #[default]
    Shortest,
    /// Resize both sides to the size, ignoring the aspect ratio.
    Squash,
}

/// `visual/preprocess_cfg.json`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PreprocessConfig {
    pub size: ImageSize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    #[serde(default = "default_interpolation")]
    pub interpolation: Interpolation,
    #[serde(default)]
    pub resize_mode: ResizeMode,
}

fn default_interpolation() -> Interpolation {
    Interpolation::Bicubic
}

impl PreprocessConfig {
    /// OpenCLIP ViT-B-32's preprocessing (the OpenAI weights): 224, bicubic, shortest side, OpenAI mean/std.
    pub fn openclip_vit_b32() -> Self {
        PreprocessConfig {
            size: ImageSize::Square(224),
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
            interpolation: Interpolation::Bicubic,
            resize_mode: ResizeMode::Shortest,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct TokenizerConfig {
    pad_token: String,
}

/// A validated model directory: every file present, every config parsed.
#[derive(Debug, Clone)]
pub struct ModelDir {
    root: PathBuf,
    pub name: String,
    pub config: ModelConfig,
    pub preprocess: PreprocessConfig,
    pub pad_token: String,
}

impl ModelDir {
    /// Checks that `root` holds a complete model and reads its configs.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ModelError> {
        let root = root.into();
        if !root.is_dir() {
            return Err(ModelError::NoDirectory { dir: root });
        }
        for file in REQUIRED_FILES {
            let path = root.join(file);
            if !path.is_file() {
                let hint = if root.join(format!("{file}.part")).exists() {
                    "a download was interrupted; run `imgsearch model fetch` again to resume it"
                } else {
                    "the directory is not a complete CLIP model in the Immich layout; fetch it with `imgsearch model fetch`"
                };
                return Err(ModelError::MissingFile { path, hint });
            }
        }
        let config: ModelConfig = read_json(&root.join(CONFIG))?;
        let preprocess: PreprocessConfig = read_json(&root.join(PREPROCESS_CFG))?;
        let tokenizer_cfg: TokenizerConfig = read_json(&root.join(TOKENIZER_CONFIG))?;
        if config.embed_dim == 0 || config.text_cfg.context_length < 2 {
            return Err(ModelError::Malformed { path: root.join(CONFIG), reason: "embed_dim must be positive and text_cfg.context_length at least 2".into() });
        }
        if preprocess.std.iter().any(|s| *s <= 0.0) {
            return Err(ModelError::Malformed { path: root.join(PREPROCESS_CFG), reason: "std values must be positive".into() });
        }
        let name = root.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "model".into());
        Ok(ModelDir { root, name, config, preprocess, pad_token: tokenizer_cfg.pad_token })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    /// A short content hash of both towers: two directories with the same weights have the same
    /// version, and a changed file changes it. Recorded with every embedding.
    ///
    /// The answer is kept in the directory ([`VERSION_CACHE`]) with each tower file's size, mtime
    /// and inode, and hashed again only when one of them changed (as `index` treats images): for
    /// ViT-B-32 that is 600 MB read and hashed per process, the image tower's 350 MB included in a
    /// `search` that never runs it. A directory that cannot be written is hashed each time.
    pub fn version(&self) -> Result<String, ModelError> {
        let stamps = [VISUAL_MODEL, TEXTUAL_MODEL].map(|file| FileStamp::of(&self.path(file)));
        let stamps = stamps.into_iter().collect::<Result<Vec<_>, _>>()?;
        let cache = self.path(VERSION_CACHE);
        if let Some(kept) = fs::read(&cache).ok().and_then(|bytes| serde_json::from_slice::<VersionCache>(&bytes).ok())
            && kept.files == stamps
        {
            return Ok(kept.version);
        }
        let mut hasher = Sha256::new();
        for file in [VISUAL_MODEL, TEXTUAL_MODEL] {
            let path = self.path(file);
            let mut f = fs::File::open(&path).map_err(|source| ModelError::Io { path: path.clone(), source })?;
            std::io::copy(&mut f, &mut hasher).map_err(|source| ModelError::Io { path, source })?;
        }
        let version = hex::encode(&hasher.finalize()[..6]);
        // the stamps were taken before the hash: a file changed meanwhile mismatches next time
        let kept = serde_json::to_vec(&VersionCache { files: stamps, version: version.clone() }).expect("plain data serializes");
        // a temporary file of its own renamed into place (readers see the old file or the new one);
        // one that cannot be written or renamed is removed when dropped
        let _ = tempfile::Builder::new().prefix(VERSION_CACHE).suffix(".tmp").tempfile_in(&self.root).and_then(|mut tmp| {
            std::io::Write::write_all(&mut tmp, &kept)?;
            tmp.persist(&cache).map_err(|e| e.error)
        });
        Ok(version)
    }
}

/// The file in a model directory where [`ModelDir::version`] keeps its answer.
pub const VERSION_CACHE: &str = ".imgsearch-version.json";

#[derive(Serialize, Deserialize)]
struct VersionCache {
    files: Vec<FileStamp>,
    version: String,
}

/// What says a file is still the one that was hashed.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct FileStamp {
    len: u64,
    mtime_ns: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Result<Self, ModelError> {
        let meta = fs::metadata(path).map_err(|source| ModelError::Io { path: path.to_owned(), source })?;
        let mtime_ns = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as u64);
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(FileStamp { len: meta.len(), mtime_ns, inode })
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let text = fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_owned(), source })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Malformed { path: path.to_owned(), reason: format!("{e}; {REFETCH}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/tiny-clip")
    }

    fn copy_model(to: &Path) {
        for file in REQUIRED_FILES {
            fs::create_dir_all(to.join(file).parent().unwrap()).unwrap();
            fs::copy(tiny().join(file), to.join(file)).unwrap();
        }
    }

    #[test]
    fn opens_the_tiny_model() {
        let m = ModelDir::open(tiny()).unwrap();
        assert_eq!(m.config.embed_dim, 64);
        assert_eq!(m.config.text_cfg.context_length, 77);
        assert_eq!(m.preprocess.size.hw(), (64, 64));
        assert_eq!(m.preprocess.interpolation, Interpolation::Bicubic);
        assert_eq!(m.pad_token, "<|endoftext|>");
        assert_eq!(m.name, "tiny-clip");
        assert_eq!(m.version().unwrap().len(), 12);
    }

    #[test]
    fn the_version_is_kept_until_a_tower_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        copy_model(dir.path());
        let m = ModelDir::open(dir.path()).unwrap();
        let first = m.version().unwrap();
        assert_eq!(first, ModelDir::open(tiny()).unwrap().version().unwrap(), "same weights, same version");
        assert!(dir.path().join(VERSION_CACHE).is_file());
        // kept: a cache that says otherwise for these very files is believed (that is the point) ...
        let kept = fs::read_to_string(dir.path().join(VERSION_CACHE)).unwrap();
        fs::write(dir.path().join(VERSION_CACHE), kept.replace(&first, "0123456789ab")).unwrap();
        assert_eq!(m.version().unwrap(), "0123456789ab");
        // ... until a tower file changes: then the files are hashed again
        let mut weights = fs::read(dir.path().join(TEXTUAL_MODEL)).unwrap();
        weights.push(0);
        fs::write(dir.path().join(TEXTUAL_MODEL), weights).unwrap();
        let changed = m.version().unwrap();
        assert_ne!(changed, "0123456789ab");
        assert_ne!(changed, first);
        assert_eq!(m.version().unwrap(), changed);
        // a cache that is not JSON is hashed over, not an error
        fs::write(dir.path().join(VERSION_CACHE), "garbage").unwrap();
        assert_eq!(m.version().unwrap(), changed);
    }

    #[test]
    fn missing_file_names_the_file_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        copy_model(dir.path());
        fs::remove_file(dir.path().join(TEXTUAL_MODEL)).unwrap();
        let err = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("textual/model.onnx is missing"), "{err}");
        assert!(err.contains("imgsearch model fetch"), "{err}");
    }

    #[test]
    fn interrupted_download_says_resume() {
        let dir = tempfile::tempdir().unwrap();
        copy_model(dir.path());
        fs::rename(dir.path().join(VISUAL_MODEL), dir.path().join("visual/model.onnx.part")).unwrap();
        let err = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("interrupted") && err.contains("resume"), "{err}");
    }

    #[test]
    fn malformed_config_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        copy_model(dir.path());
        fs::write(dir.path().join(PREPROCESS_CFG), r#"{"size": 224, "mean": [0.5, 0.5]}"#).unwrap();
        let err = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("visual/preprocess_cfg.json is malformed"), "{err}");
    }

    #[test]
    fn no_directory() {
        let err = ModelDir::open("/nonexistent/model").unwrap_err().to_string();
        assert!(err.starts_with("model directory /nonexistent/model does not exist"), "{err}");
    }

    #[test]
    fn reads_both_size_forms() {
        let a: PreprocessConfig = serde_json::from_str(r#"{"size": 224, "mean": [0,0,0], "std": [1,1,1]}"#).unwrap();
        let b: PreprocessConfig = serde_json::from_str(r#"{"size": [224, 224], "mean": [0,0,0], "std": [1,1,1], "interpolation": "bicubic", "resize_mode": "squash"}"#).unwrap();
        assert_eq!(a.size.hw(), b.size.hw());
        assert_eq!(a.resize_mode, ResizeMode::Shortest);
        assert_eq!(b.resize_mode, ResizeMode::Squash);
    }
}
