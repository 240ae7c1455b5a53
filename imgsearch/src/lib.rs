//! The `imgsearch` application: wires the stages into the embedded default (one process, SQLite,
//! embedded Qdrant, bounded in-process queues) and answers searches. `main.rs` is only the command
//! line over this.

pub mod api;
pub mod app;
pub mod config;
pub mod local_serve;
pub mod manage;
pub mod pipeline;
pub mod roles;
pub mod search;
pub mod sessions;

pub use app::App;
