//! CLIP for image search: model files in the Immich layout, the CLIP BPE tokenizer, open_clip's image
//! preprocessing, and both towers on ONNX Runtime (CPU, or CUDA with the `cuda` feature).
//!
//! This is the only crate that links ONNX Runtime. It knows nothing of queues, catalogs or vector
//! stores: bytes and strings in, normalized vectors out.

pub mod embed;
pub mod error;
#[cfg(feature = "fetch")]
pub mod fetch;
pub mod guard;
pub mod model;
pub mod npy;
pub mod preprocess;
pub mod runtime;
pub mod text;

pub use embed::{ClipModel, Towers, cosine, embedding_checksum};
pub use error::{ClipError, ImageError, ModelError};
pub use guard::Limits;
pub use model::{DEFAULT_MODEL, ModelDir, PreprocessConfig};
pub use preprocess::{ImageInfo, PreparedImage, Preprocessor};
pub use runtime::{DeviceRequest, RuntimeOptions};
