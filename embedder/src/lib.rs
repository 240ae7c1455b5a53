//! Embedder: consumes jobs, decodes and preprocesses on a CPU pool, batches across messages, runs the
//! image tower (the `clip` crate) and publishes one embedding message per job. It never writes to a
//! store.
//!
//! Empty until the embedded-pipeline issue fills it (see ARCHITECTURE.md).
