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

/// An image that cannot be turned into a model input. All are permanent (retrying the same bytes
/// never helps) except `Io` and `Busy`.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a regular file ({kind}); only regular files are read")]
    NotARegularFile { path: PathBuf, kind: &'static str },
    #[error("not a supported image (jpeg, png, webp, gif, bmp, tiff)")]
    UnsupportedFormat,
    #[error("corrupt or truncated image: {0}")]
    Decode(String),
    #[error("image of {width}x{height} has more than {limit} pixels; raise the pixel limit to accept it")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("image of {width}x{height} has a side longer than {limit} pixels")]
    SideTooLong { width: u32, height: u32, limit: u32 },
    #[error("file of {size} bytes is larger than the limit of {limit} bytes")]
    FileTooLarge { size: u64, limit: u64 },
    #[error("decoding needs {needed} bytes of memory, more than the budget of {limit} bytes")]
    OverMemoryBudget { needed: u64, limit: u64 },
    #[error("the decoder refused to go over its limits: {0}")]
    DecoderLimit(String),
    #[error("jpeg has {scans} scans, more than the limit of {limit} (each scan is a pass over the whole image)")]
    TooManyScans { scans: usize, limit: usize },
    #[error("image of {width}x{height} is more than {limit} times longer than it is wide; such strips are not indexed")]
    ExtremeAspect { width: u32, height: u32, limit: u32 },
    #[error("image is empty (0 pixels)")]
    Empty,
    #[error("the image decoder crashed on this file: {0}")]
    DecoderPanic(String),
    #[error("decoding took longer than {0:?}; the file is treated as hostile")]
    DecodeTimeout(std::time::Duration),
    #[error("no decode thread could be started: {0}")]
    Busy(String),
}

impl ImageError {
    /// A short, fixed label for metrics and summaries (`reason` in the metric names).
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::Io { .. } => "io",
            ImageError::NotARegularFile { .. } => "not_a_regular_file",
            ImageError::UnsupportedFormat => "unsupported_format",
            ImageError::Decode(_) => "corrupt",
            ImageError::TooManyPixels { .. }
            | ImageError::SideTooLong { .. }
            | ImageError::FileTooLarge { .. }
            | ImageError::OverMemoryBudget { .. }
            | ImageError::DecoderLimit(_)
            | ImageError::TooManyScans { .. } => "too_large",
            ImageError::ExtremeAspect { .. } => "extreme_aspect",
            ImageError::Empty => "empty",
            ImageError::DecoderPanic(_) => "decoder_panic",
            ImageError::DecodeTimeout(_) => "decode_timeout",
            ImageError::Busy(_) => "busy",
        }
    }

    /// Whether the same file may succeed later (an I/O error, no thread to decode on); everything
    /// else is a property of the bytes and is recorded once.
    pub fn is_transient(&self) -> bool {
        matches!(self, ImageError::Io { .. } | ImageError::Busy(_))
    }
}

/// Everything the crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("onnx runtime library not found (looked at {looked_at}); run scripts/setup-ort.sh or set ORT_DYLIB_PATH to libonnxruntime.so")]
    RuntimeLibraryMissing { looked_at: String },
    #[error("onnx runtime failed to {action}: {reason}")]
    Runtime { action: &'static str, reason: String },
    #[error("tokenizer failed on {text:?}: {reason}")]
    Tokenize { text: String, reason: String },
    #[error("model output has shape {shape:?}, expected [batch, {expected_dim}]; is this a CLIP model?")]
    OutputShape { shape: Vec<usize>, expected_dim: usize },
    #[error("the model's {tower} tower was not loaded by this process")]
    TowerNotLoaded { tower: &'static str },
}

pub(crate) fn runtime(action: &'static str) -> impl FnOnce(ort::Error) -> ClipError {
    move |e| ClipError::Runtime { action, reason: e.to_string() }
}
