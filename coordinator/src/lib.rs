//! Coordinator: creates or resumes a session and publishes one embedding job per asset to the jobs
//! queue, with confirms. It never decodes images and never writes vectors.
//!
//! Empty until the embedded-pipeline issue fills it (see ARCHITECTURE.md).
