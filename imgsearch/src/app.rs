//! The stores of one data directory, and the collection a model writes to.
//!
//! Layout of the data directory: `catalog.sqlite` and `vectors/` (the embedded Qdrant shards). The
//! name searches use is the alias `image_assets`, pointing at `image_assets_v{N}`; the model version
//! that built a collection is recorded on it, and a model with another version is refused instead
//! of mixing vectors of two models in one collection.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result, bail};
use catalog::{Catalog, NewCategory};
use vectors::{CollectionSpec, DEFAULT_COLLECTION, VectorStore};

pub struct App {
    pub data_dir: PathBuf,
    pub catalog: Catalog,
    pub vectors: Arc<VectorStore>,
}

/// The data directory: the given one, else the platform data dir (`~/.local/share/imgsearch`).
pub fn data_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    match explicit {
        Some(d) => Ok(d),
        None => Ok(dirs::data_dir().context("no data directory on this platform; pass --data-dir DIR")?.join("imgsearch")),
    }
}

impl App {
    /// Opens (creating if needed) the embedded stores under `data_dir`.
    pub async fn open_embedded(data_dir: &Path) -> Result<Self> {
        Self::open(data_dir, None).await
    }

    /// The catalog under `data_dir`, and the vectors there too, or in the Qdrant server at
    /// `qdrant_url` (gRPC) when one is given.
    pub async fn open(data_dir: &Path, qdrant_url: Option<&str>) -> Result<Self> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let catalog = Catalog::connect_sqlite(&data_dir.join("catalog.sqlite")).await.context("cannot open the catalog")?;
        let vectors = match qdrant_url {
            Some(url) => VectorStore::server(url)?,
            None => VectorStore::embedded(&data_dir.join("vectors")).with_context(|| format!("cannot open the vector store in {}", data_dir.display()))?,
        };
        Ok(App { data_dir: data_dir.to_owned(), catalog, vectors: Arc::new(vectors) })
    }

    /// The collection this model writes to (see `collection_for`).
    pub async fn collection_for(&self, model_version: &str, dim: usize) -> Result<String> {
        collection_for(&self.vectors, model_version, dim).await
    }
}

/// The collection a model writes to: the one the alias points at when its model matches, else a
/// new `image_assets_v1` (with the alias) when there is none yet.
pub async fn collection_for(vectors: &VectorStore, model_version: &str, dim: usize) -> Result<String> {
    if let Some(info) = vectors.spec(DEFAULT_COLLECTION).await? {
        if info.model_version != model_version || info.dim != dim {
            bail!(
                "the index ({}) was built with model version {} ({}-d); this model is {model_version} ({dim}-d). Use the model that built it, or re-index into a new collection",
                info.name,
                info.model_version,
                info.dim
            );
        }
        return Ok(info.name);
    }
    let name = format!("{DEFAULT_COLLECTION}_v1");
    vectors.ensure_collection(&CollectionSpec { name: name.clone(), dim, model_version: model_version.to_owned() }).await?;
    vectors.set_alias(DEFAULT_COLLECTION, &name).await?;
    Ok(name)
}

/// The id of the category named `name`; created when missing and `create` is set.
pub async fn category_id(catalog: &Catalog, name: Option<&str>, create: bool) -> Result<Option<i64>> {
    let Some(name) = name else { return Ok(None) };
    if let Some(c) = catalog.category_by_name(name).await? {
        return Ok(Some(c.id));
    }
    if !create {
        bail!("no category named {name:?}; `imgsearch index --category {name:?} DIR` creates it");
    }
    Ok(Some(catalog.create_category(NewCategory { name: name.to_owned(), ..Default::default() }).await?.id))
}
