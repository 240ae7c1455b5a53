//! Listings as the service this replaces answers them: `page` (1-based) and `page_size` in, the
//! envelope `{items, total, page, pageSize, hasMore}` out.

use catalog::{Listing, Page};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiResult, error::ApiError};

/// The most items a page holds, as in the service.
pub(crate) const MAX_PAGE_SIZE: i64 = 100;

/// A page asked for: 1-based `page`, `page_size` 1-100 (the default differs per listing).
pub(crate) fn page(page: Option<i64>, page_size: Option<i64>, default_size: i64) -> ApiResult<Page> {
    let (page, size) = (page.unwrap_or(1), page_size.unwrap_or(default_size));
    if page < 1 {
        return Err(ApiError::unprocessable(format!("page must be 1 or more, not {page}")));
    }
    if !(1..=MAX_PAGE_SIZE).contains(&size) {
        return Err(ApiError::unprocessable(format!("page_size must be between 1 and {MAX_PAGE_SIZE}, not {size}")));
    }
    let offset = (page - 1).checked_mul(size).ok_or_else(|| ApiError::unprocessable(format!("page {page} is beyond any listing")))?;
    Ok(Page::new(offset, size))
}

/// One page of a listing.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Paged<T> {
    pub(crate) items: Vec<T>,
    /// Items in the whole listing.
    pub(crate) total: i64,
    pub(crate) page: i64,
    pub(crate) page_size: i64,
    /// Whether a later page holds more.
    pub(crate) has_more: bool,
}

impl<T> Paged<T> {
    pub(crate) fn new<U>(listing: Listing<U>, page: Page, view: impl FnMut(U) -> T) -> Self {
        let has_more = page.offset + (listing.items.len() as i64) < listing.total;
        Paged { items: listing.items.into_iter().map(view).collect(), total: listing.total, page: page.offset / page.limit + 1, page_size: page.limit, has_more }
    }
}
