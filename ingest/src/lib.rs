//! Ingest: walks image folders and records assets (path, size, mtime, content hash) so the
//! coordinator can turn them into jobs. It reads files and the catalog; it never embeds or talks to a
//! vector store.
//!
//! Empty until the embedded-pipeline issue fills it (see ARCHITECTURE.md).
