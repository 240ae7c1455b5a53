//! Writer: consumes embedding messages in batches, upserts vectors, then commits jobs and evidence to
//! the catalog, and acknowledges only after both are durable. It never decodes images.
//!
//! Empty until the embedded-pipeline issue fills it (see ARCHITECTURE.md).
