//! Categories: create, read, rename, delete (their assets and sessions keep existing without one).

use chrono::Utc;

use super::{Catalog, Result, rows::*, sql};
use crate::{error::CatalogError, model::*};

/// A category's columns, with how many sessions it has.
const CATEGORY_COLUMNS: &str =
    "id, name, description, color, is_default, created_at, updated_at, (SELECT COUNT(*) FROM training_sessions s WHERE s.category_id = categories.id) AS session_count";

impl Catalog {
    pub async fn create_category(&self, new: NewCategory) -> Result<Category> {
        let now = Utc::now();
        let row: (i64,) = on_pool!(self, p => sqlx::query_as(
            "INSERT INTO categories (name, description, color, is_default, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)
             RETURNING id")
            .bind(&new.name).bind(&new.description).bind(&new.color).bind(new.is_default).bind(now)
            .fetch_one(p).await)
        .map_err(|e| CatalogError::from_write(e, "category", &new.name))?;
        self.get_category(row.0).await
    }

    pub async fn get_category(&self, id: i64) -> Result<Category> {
        let row: Option<CategoryRow> = on_pool!(self, p => sqlx::query_as(
            sql(format!("SELECT {CATEGORY_COLUMNS} FROM categories WHERE id = $1")))
            .bind(id).fetch_optional(p).await)?;
        row.map(Into::into).ok_or_else(|| CatalogError::not_found("category", id))
    }

    pub async fn category_by_name(&self, name: &str) -> Result<Option<Category>> {
        let row: Option<CategoryRow> = on_pool!(self, p => sqlx::query_as(
            sql(format!("SELECT {CATEGORY_COLUMNS} FROM categories WHERE name = $1")))
            .bind(name).fetch_optional(p).await)?;
        Ok(row.map(Into::into))
    }

    /// A page of the categories, by name, with how many sessions each has.
    pub async fn list_categories(&self, page: Page) -> Result<Listing<Category>> {
        let (rows, total): (Vec<CategoryRow>, i64) = on_pool!(self, p => {
            let rows = sqlx::query_as(sql(format!("SELECT {CATEGORY_COLUMNS} FROM categories ORDER BY name, id LIMIT $1 OFFSET $2")))
                .bind(page.limit).bind(page.offset).fetch_all(p).await?;
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM categories").fetch_one(p).await?;
            (rows, total)
        });
        Ok(Listing { items: rows.into_iter().map(Into::into).collect(), total })
    }

    pub async fn update_category(&self, id: i64, patch: CategoryPatch) -> Result<Category> {
        let row: Option<(i64,)> = on_pool!(self, p => sqlx::query_as(
            "UPDATE categories SET name = COALESCE($2, name), description = COALESCE($3, description),
                 color = COALESCE($4, color), is_default = COALESCE($5, is_default), updated_at = $6
             WHERE id = $1
             RETURNING id")
            .bind(id).bind(&patch.name).bind(&patch.description).bind(&patch.color).bind(patch.is_default).bind(Utc::now())
            .fetch_optional(p).await)
        .map_err(|e| CatalogError::from_write(e, "category", patch.name.as_deref().unwrap_or("")))?;
        match row {
            Some(_) => self.get_category(id).await,
            None => Err(CatalogError::not_found("category", id)),
        }
    }

    /// Deletes a category; its assets and sessions keep existing without one.
    pub async fn delete_category(&self, id: i64) -> Result<()> {
        let done = on_pool!(self, p => sqlx::query("DELETE FROM categories WHERE id = $1").bind(id).execute(p).await?.rows_affected());
        if done == 0 {
            return Err(CatalogError::not_found("category", id));
        }
        Ok(())
    }
}
