//! The errors this crate returns at its boundary. Every message names the file or input at fault and
//! says what to do; none ends with a period.

use std::path::PathBuf;

/// A model directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model directory {dir} does not exist; fetch a model with `imgsearch model fetch` or pass --model DIR")]
    NoDirectory { dir: PathBuf },
    #[error("model file {path} is missing; {hint}")]
    MissingFile { path: PathBuf, hint: &'static str },
    #[error("model file {path} is malformed: {reason}; fetch the model again with `imgsearch model fetch`")]
    Malformed { path: PathBuf, reason: String },
    #[error("model file {path} cannot be read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// An image that cannot be turned into a model input. These are permanent: retrying never helps.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("not a supported image (jpeg, png, webp, gif, bmp, tiff)")]
    UnsupportedFormat,
    #[error("corrupt or truncated image: {0}")]
    Decode(String),
    #[error("image of {width}x{height} has more than {limit} pixels; raise the pixel limit to accept it")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("image is empty (0 pixels)")]
    Empty,
}

impl ImageError {
    /// A short, fixed label for metrics and summaries (`reason` in the metric names).
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::Io { .. } => "io",
            ImageError::UnsupportedFormat => "unsupported_format",
            ImageError::Decode(_) => "corrupt",
            ImageError::TooManyPixels { .. } => "too_many_pixels",
            ImageError::Empty => "empty",
        }
    }
}

/// Everything the crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(
        "onnx runtime library not found (looked at {looked_at}); run scripts/setup-ort.sh or set ORT_DYLIB_PATH to libonnxruntime.so"
    )]
    RuntimeLibraryMissing { looked_at: String },
    #[error("onnx runtime failed to {action}: {reason}")]
    Runtime { action: &'static str, reason: String },
    #[error("tokenizer failed on {text:?}: {reason}")]
    Tokenize { text: String, reason: String },
    #[error("model output has shape {shape:?}, expected [batch, {expected_dim}]; is this a CLIP model?")]
    OutputShape { shape: Vec<usize>, expected_dim: usize },
}

pub(crate) fn runtime(action: &'static str) -> impl FnOnce(ort::Error) -> ClipError {
    move |e| ClipError::Runtime { action, reason: e.to_string() }
}
