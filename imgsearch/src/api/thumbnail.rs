//! `GET /api/v1/assets/{id}/thumbnail?size=N`: a JPEG of the asset, EXIF orientation applied, at
//! most N pixels on its longer side (default 256), cached under the data dir.
//!
//! The file is decoded by clip's guarded decoder with the model's limits (regular files only, size,
//! pixel, aspect and memory limits checked before decoding, a deadline, panics contained), the same
//! decoder indexing uses, so every file that indexes has a thumbnail (arithmetic-coded JPEGs
//! included) and no file can take the server down.

use std::sync::Arc;

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use image::DynamicImage;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::{ApiResult, ApiState, error::*};

#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct ThumbParams {
    /// Longer side in pixels, 16-1024 (default 256).
    size: Option<u32>,
}

fn encode(rgb: image::RgbImage, size: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(rgb).thumbnail(size, size).to_rgb8().write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).map_err(|e| e.to_string())?;
    Ok(out)
}

#[utoipa::path(get, path = "/api/v1/assets/{id}/thumbnail", params(("id" = Uuid, Path), ThumbParams),
    responses((status = 200, content_type = "image/jpeg"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn thumbnail(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>, ApiQuery(p): ApiQuery<ThumbParams>) -> ApiResult<Response> {
    let size = p.size.unwrap_or(256);
    if !(16..=1024).contains(&size) {
        return Err(ApiError::unprocessable("size must be between 16 and 1024"));
    }
    let asset = s.catalog.get_asset(id).await?;
    let cached = s.thumbnail_dir.as_ref().map(|d| d.join(format!("{id}-{size}.jpg")));
    if let Some(c) = &cached
        && let Ok(bytes) = tokio::fs::read(c).await
    {
        return Ok(([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response());
    }
    let path = protocol::paths::from_stored(&asset.path);
    if !path.exists() {
        return Err(ApiError::not_found(format!("the file of asset {id} is gone: {}", asset.path)));
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
    Ok(([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response())
}
