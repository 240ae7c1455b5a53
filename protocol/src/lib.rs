//! Protocol: the versioned message types that cross a queue (`EmbedJob`, `EmbedResult`), ids and
//! shared config types. Only these types cross a queue. No I/O here.
//!
//! Empty until the embedded-pipeline issue fills it (see ARCHITECTURE.md).
