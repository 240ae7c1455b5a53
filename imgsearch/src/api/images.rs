//! Image bytes, at the service's paths: `GET /api/v1/images/{id}/thumbnail?size=N` (a JPEG, EXIF
//! orientation applied, at most N pixels on its longer side, default 256, cached under the data
//! dir), `GET /api/v1/images/{id}/full` (the original file), and the thumbnail of a file a session
//! would index, by path (`/training/directories/preview/thumbnail`).
//!
//! Only files inside the allowed roots are read (resolved first, so a link cannot lead out). The
//! file is decoded by clip's guarded decoder with the model's limits (regular files only, size,
//! pixel, aspect and memory limits checked before decoding, a deadline, panics contained), the same
//! decoder indexing uses, so every file that indexes has a thumbnail and no file can take the
//! server down.

use std::{path::PathBuf, sync::Arc};

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use image::DynamicImage;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiResult, ApiState, error::*};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ThumbParams {
    /// Longer side in pixels, 16-1024 (default 256).
    #[param(minimum = 16, maximum = 1024)]
    size: Option<u32>,
}

/// Images change rarely and their ids are never reused: browsers may keep them a day.
const CACHE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "public, max-age=86400");

fn encode(rgb: image::RgbImage, size: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(rgb).thumbnail(size, size).to_rgb8().write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).map_err(|e| e.to_string())?;
    Ok(out)
}

/// `path` resolved (links followed) if it lies inside the allowed roots; otherwise a 404 that
/// does not say whether it exists.
pub(crate) fn confined(s: &ApiState, path: &std::path::Path, what: &str) -> ApiResult<PathBuf> {
    let hidden = || ApiError::not_found(format!("{what} not found"));
    let resolved = path.canonicalize().map_err(|_| hidden())?;
    if s.allowed_roots.iter().any(|a| resolved.starts_with(a)) { Ok(resolved) } else { Err(hidden()) }
}

async fn thumbnail_of(s: &ApiState, path: PathBuf, size: u32, cache_as: Option<String>) -> ApiResult<Response> {
    if !(16..=1024).contains(&size) {
        return Err(ApiError::unprocessable("size must be between 16 and 1024"));
    }
    let cached = s.thumbnail_dir.as_ref().zip(cache_as).map(|(d, name)| d.join(format!("{name}-{size}.jpg")));
    if let Some(c) = &cached
        && let Ok(bytes) = tokio::fs::read(c).await
    {
        return Ok(([(header::CONTENT_TYPE, "image/jpeg"), CACHE], bytes).into_response());
    }
    let model = s.model();
    let bytes = tokio::task::spawn_blocking(move || -> ApiResult<Vec<u8>> {
        let rgb = model.preprocessor().decode_file_for_display(&path, size)?;
        encode(rgb, size).map_err(ApiError::internal)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    if let Some(c) = cached {
        // best effort: a cache that cannot be written only costs time
        if let Some(dir) = c.parent() {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        let _ = tokio::fs::write(&c, &bytes).await;
    }
    Ok(([(header::CONTENT_TYPE, "image/jpeg"), CACHE], bytes).into_response())
}

/// The file of an asset, resolved inside the allowed roots.
async fn asset_file(s: &ApiState, id: i64) -> ApiResult<PathBuf> {
    let asset = s.catalog.get_asset(id).await?;
    confined(s, &protocol::paths::from_stored(&asset.path), &format!("the file of asset {id}"))
}

/// A JPEG thumbnail of an asset.
#[utoipa::path(get, path = "/api/v1/images/{id}/thumbnail", params(("id" = i64, Path), ThumbParams),
    responses((status = 200, content_type = "image/jpeg"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn thumbnail(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>, ApiQuery(p): ApiQuery<ThumbParams>) -> ApiResult<Response> {
    let path = asset_file(&s, id).await?;
    thumbnail_of(&s, path, p.size.unwrap_or(256), Some(id.to_string())).await
}

/// The original file of an asset, with its media type (by content).
#[utoipa::path(get, path = "/api/v1/images/{id}/full", params(("id" = i64, Path)),
    responses((status = 200, content_type = "image/*"), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(crate) async fn full(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    let path = asset_file(&s, id).await?;
    let limits = s.model().preprocessor().limits();
    let (bytes, mime) = tokio::task::spawn_blocking(move || -> ApiResult<(Vec<u8>, &'static str)> {
        let mime = ingest::image_type(&path).ok_or_else(|| ApiError::not_found(format!("the file of asset {id} no longer holds an image")))?;
        Ok((clip::guard::read_file(&path, &limits)?, mime))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, mime), CACHE], bytes).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PreviewThumbParams {
    /// An image file inside the allowed roots.
    path: String,
    /// Longer side in pixels, 16-1024 (default 256).
    #[param(minimum = 16, maximum = 1024)]
    size: Option<u32>,
}

/// A JPEG thumbnail of a file inside the allowed roots, indexed or not (the directory preview).
#[utoipa::path(get, path = "/api/v1/training/directories/preview/thumbnail", params(PreviewThumbParams),
    responses((status = 200, content_type = "image/jpeg"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn preview_thumbnail(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<PreviewThumbParams>) -> ApiResult<Response> {
    let path = confined(&s, &protocol::paths::from_stored(&p.path), "file")?;
    thumbnail_of(&s, path, p.size.unwrap_or(256), None).await
}
