//! The resources as the service this replaces shows them (its names, integer ids, `url` and
//! `thumbnailUrl` for images), with this system's extra fields beside them.

use catalog::{Asset, Category, Job, JobStatus, Session};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// An image asset: the catalog row, where to fetch it, and its file name.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AssetView {
    #[serde(flatten)]
    pub(crate) asset: Asset,
    /// The original file: `/api/v1/images/{id}/full`, relative to the API's origin.
    pub(crate) url: String,
    /// A JPEG thumbnail: `/api/v1/images/{id}/thumbnail`.
    pub(crate) thumbnail_url: String,
    /// The last part of the path.
    pub(crate) filename: String,
    /// Not read from EXIF (yet): always null.
    #[schema(value_type = Option<String>)]
    pub(crate) taken_at: Option<()>,
    #[schema(value_type = Option<Object>)]
    pub(crate) camera: Option<()>,
    #[schema(value_type = Option<Object>)]
    pub(crate) location: Option<()>,
}

impl From<Asset> for AssetView {
    fn from(asset: Asset) -> Self {
        let filename = asset.path.rsplit('/').next().unwrap_or_default().to_owned();
        AssetView {
            url: format!("/api/v1/images/{}/full", asset.id),
            thumbnail_url: format!("/api/v1/images/{}/thumbnail", asset.id),
            filename,
            asset,
            taken_at: None,
            camera: None,
            location: None,
        }
    }
}

/// A training session with its category.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionView {
    #[serde(flatten)]
    pub(crate) session: Session,
    pub(crate) category: Option<Category>,
    /// Always 0: an unchanged image is not a job of the session, so none is skipped.
    pub(crate) skipped_images: i64,
    /// Options are not per session here: always null.
    #[schema(value_type = Option<Object>)]
    pub(crate) config: Option<()>,
}

impl SessionView {
    pub(crate) async fn of(catalog: &catalog::Catalog, session: Session) -> Result<Self, catalog::CatalogError> {
        Ok(Self::many(catalog, vec![session]).await?.remove(0))
    }

    /// Sessions with their categories, each category read once.
    pub(crate) async fn many(catalog: &catalog::Catalog, sessions: Vec<Session>) -> Result<Vec<Self>, catalog::CatalogError> {
        let mut categories: std::collections::HashMap<i64, Option<Category>> = std::collections::HashMap::new();
        let mut views = Vec::with_capacity(sessions.len());
        for session in sessions {
            let category = match session.category_id {
                Some(id) => match categories.entry(id) {
                    std::collections::hash_map::Entry::Occupied(known) => known.get().clone(),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        let found = match catalog.get_category(id).await {
                            Ok(c) => Some(c),
                            Err(catalog::CatalogError::NotFound { .. }) => None,
                            Err(e) => return Err(e),
                        };
                        slot.insert(found).clone()
                    }
                },
                None => None,
            };
            views.push(SessionView { session, category, skipped_images: 0, config: None });
        }
        Ok(views)
    }
}

/// A training job: one image of one session.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobView {
    pub(crate) id: i64,
    pub(crate) session_id: i64,
    pub(crate) asset_id: i64,
    pub(crate) status: JobStatus,
    /// The broker message id (the service's queue job id).
    pub(crate) rq_job_id: Option<String>,
    /// 0-100.
    pub(crate) progress: i64,
    pub(crate) error_message: Option<String>,
    pub(crate) processing_time_ms: Option<i64>,
    pub(crate) image_path: Option<String>,
    /// Always null: nothing is skipped (see `skippedImages`).
    pub(crate) skip_reason: Option<String>,
    pub(crate) attempts: i32,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) completed_at: Option<DateTime<Utc>>,
}

impl JobView {
    pub(crate) fn new(job: Job, image_path: Option<String>) -> Self {
        JobView {
            id: job.id,
            session_id: job.session_id,
            asset_id: job.asset_id,
            status: job.status,
            rq_job_id: job.broker_message_id,
            progress: (job.progress * 100.0).round() as i64,
            error_message: job.error_message,
            processing_time_ms: job.processing_time_ms,
            image_path,
            skip_reason: None,
            attempts: job.attempts,
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            completed_at: job.completed_at,
        }
    }

    /// The jobs of a page, with their image paths read in one query.
    pub(crate) async fn page(catalog: &catalog::Catalog, jobs: Vec<Job>) -> Result<Vec<JobView>, catalog::CatalogError> {
        let ids: Vec<i64> = jobs.iter().map(|j| j.asset_id).collect();
        let paths: std::collections::HashMap<i64, String> = catalog.assets_by_ids(&ids).await?.into_iter().map(|a| (a.id, a.path)).collect();
        Ok(jobs
            .into_iter()
            .map(|j| {
                let path = paths.get(&j.asset_id).cloned();
                JobView::new(j, path)
            })
            .collect())
    }
}
