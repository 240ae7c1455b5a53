//! ONNX Runtime: finding the shared library, one environment per process, sessions on the device asked
//! for with a CPU fallback that says so.
//!
//! The `ort` crate loads `libonnxruntime` at run time (`load-dynamic`); a missing library would be a
//! panic inside `ort`, so the path is resolved and checked here first and a missing one is an error.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use ort::{
    environment::Environment,
    session::{Session, builder::GraphOptimizationLevel},
};
use serde::{Deserialize, Serialize};

use crate::error::{ClipError, runtime};

/// Where inference should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceRequest {
    #[default]
    Cpu,
    /// CUDA device 0 when this build has the `cuda` feature and the provider loads; CPU otherwise.
    Cuda,
}

impl std::str::FromStr for DeviceRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" | "gpu" => Ok(DeviceRequest::Cuda),
            other => Err(format!("unknown device {other:?}; use cpu or cuda")),
        }
    }
}

/// How to build sessions.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    pub device: DeviceRequest,
    /// Threads ONNX Runtime uses inside one inference; 0 lets it decide.
    pub intra_threads: usize,
    /// Explicit path to `libonnxruntime.so`; otherwise `ORT_DYLIB_PATH`, then the usual places.
    pub library: Option<PathBuf>,
}

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// The directories searched for the library when neither `--ort-lib` nor `ORT_DYLIB_PATH` is set.
fn library_candidates() -> Vec<PathBuf> {
    let name = "libonnxruntime.so";
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.join(name));
        dirs.push(dir.join("lib").join(name));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share"))) {
        dirs.push(data.join("imgsearch/lib").join(name));
    }
    dirs.push(PathBuf::from("/usr/local/lib").join(name));
    dirs.push(PathBuf::from("/usr/lib").join(name));
    dirs
}

/// Resolves the ONNX Runtime library: explicit path, `ORT_DYLIB_PATH`, then [`library_candidates`].
pub fn resolve_library(explicit: Option<&Path>) -> Result<PathBuf, ClipError> {
    let mut looked_at = Vec::new();
    let given = explicit.map(Path::to_owned).or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from));
    if let Some(path) = given {
        if path.is_file() {
            return Ok(path);
        }
        return Err(ClipError::RuntimeLibraryMissing { looked_at: path.display().to_string() });
    }
    for path in library_candidates() {
        if path.is_file() {
            return Ok(path);
        }
        looked_at.push(path.display().to_string());
    }
    Err(ClipError::RuntimeLibraryMissing { looked_at: looked_at.join(", ") })
}

/// The process-wide environment, loading the library on first use.
pub fn environment(options: &RuntimeOptions) -> Result<&'static Environment, ClipError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let library = resolve_library(options.library.as_deref())?;
    let builder = ort::init_from(&library).map_err(|e| ClipError::Runtime { action: "load its library", reason: format!("{}: {e}", library.display()) })?;
    let env = builder.with_name("imgsearch").build().map_err(runtime("create an environment"))?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

/// A session and the device it actually runs on (`cpu`, `cuda:0`).
pub struct DeviceSession {
    pub session: Session,
    pub device: String,
}

/// Builds a session for `model` on the requested device, falling back to CPU with a warning.
pub fn open_session(model: &Path, options: &RuntimeOptions) -> Result<DeviceSession, ClipError> {
    let env = environment(options)?;
    if options.device == DeviceRequest::Cuda {
        match cuda_session(env, model, options) {
            Ok(session) => return Ok(DeviceSession { session, device: "cuda:0".into() }),
            Err(reason) => tracing::warn!(model = %model.display(), %reason, "cuda execution provider unavailable; running on cpu"),
        }
    }
    let session = base_builder(env, options)?.commit_from_file(model).map_err(runtime("load a model"))?;
    Ok(DeviceSession { session, device: "cpu".into() })
}

fn base_builder(env: &Environment, options: &RuntimeOptions) -> Result<ort::session::builder::SessionBuilder, ClipError> {
    let mut builder = Session::builder(env)
        .map_err(runtime("create a session builder"))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| ClipError::Runtime { action: "set the optimization level", reason: e.to_string() })?;
    if options.intra_threads > 0 {
        builder = builder.with_intra_threads(options.intra_threads).map_err(|e| ClipError::Runtime { action: "set intra-op threads", reason: e.to_string() })?;
    }
    Ok(builder)
}

#[cfg(feature = "cuda")]
fn cuda_session(env: &Environment, model: &Path, options: &RuntimeOptions) -> Result<Session, String> {
    use ort::ep::{self, ExecutionProvider};
    if !ep::CUDA::is_available().map_err(|e| e.to_string())? {
        return Err("this onnx runtime library has no cuda provider (install onnxruntime-gpu)".into());
    }
    let builder = base_builder(env, options).map_err(|e| e.to_string())?;
    builder.with_execution_providers([ep::CUDA::default().build().error_on_failure()]).map_err(|e| e.to_string())?.commit_from_file(model).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn cuda_session(_env: &Environment, _model: &Path, _options: &RuntimeOptions) -> Result<Session, String> {
    Err("this build has no cuda support (rebuild with --features cuda)".into())
}
