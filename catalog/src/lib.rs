//! The catalog: categories, image assets, training sessions and their subdirectories, jobs, evidence
//! and vector deletion logs, on PostgreSQL (distributed) or SQLite (embedded default).
//!
//! This is the only crate that holds SQL. It never talks to the vector store: the writer upserts
//! vectors first and then records the results here.

mod error;
pub mod model;
mod store;

pub use error::CatalogError;
pub use model::*;
pub use store::Catalog;
