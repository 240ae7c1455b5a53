//! The catalog's errors. The API maps them to status codes in one place: `Unavailable` -> 503,
//! `NotFound` -> 404, `Conflict` and `InvalidTransition` -> 409.

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog unavailable: {0}; check that the database is running and reachable")]
    Unavailable(String),
    /// The transaction lost a race with another (a deadlock, a serialization failure, SQLite
    /// busy): running it again is expected to succeed.
    #[error("catalog busy, try again: {0}")]
    Busy(String),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{what} {value:?} already exists")]
    Conflict { what: &'static str, value: String },
    #[error("cannot move {what} {id} from {from} to {to}")]
    InvalidTransition { what: &'static str, id: String, from: String, to: String },
    #[error("catalog configuration: {0}")]
    Config(String),
    #[error("catalog migration failed: {0}")]
    Migration(String),
    /// Made by an earlier version whose ids this one does not read; the text says how to re-index.
    #[error("{0}")]
    Outdated(String),
    #[error("catalog holds a value this version does not know: {0}")]
    Corrupt(String),
    #[error("catalog query failed: {0}")]
    Database(String),
}

impl CatalogError {
    /// Whether running the same operation again later can succeed: the database is unreachable,
    /// or the transaction lost a race.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CatalogError::Unavailable(_) | CatalogError::Busy(_))
    }

    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        CatalogError::NotFound { what, id: id.to_string() }
    }

    /// A write error, with unique violations turned into `Conflict` on `what`/`value`.
    pub(crate) fn from_write(e: sqlx::Error, what: &'static str, value: &str) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            return CatalogError::Conflict { what, value: value.to_owned() };
        }
        e.into()
    }
}

impl From<sqlx::Error> for CatalogError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => CatalogError::Unavailable(e.to_string()),
            sqlx::Error::Database(db) if lost_a_race(db.code().as_deref()) => CatalogError::Busy(db.to_string()),
            sqlx::Error::Database(db) if connection_lost(db.code().as_deref()) => CatalogError::Unavailable(db.to_string()),
            other => CatalogError::Database(other.to_string()),
        }
    }
}

/// PostgreSQL's serialization failure (40001) and deadlock (40P01); SQLite's BUSY (5), LOCKED (6)
/// and their extended codes (BUSY_RECOVERY 261, BUSY_SNAPSHOT 517, BUSY_TIMEOUT 773, LOCKED_SHAREDCACHE 262).
fn lost_a_race(code: Option<&str>) -> bool {
    matches!(code, Some("40001" | "40P01" | "5" | "6" | "261" | "262" | "517" | "773"))
}

/// PostgreSQL's connection exceptions (class 08) and a server that terminated the connection or is
/// shutting down or starting (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now):
/// the next connection can work.
fn connection_lost(code: Option<&str>) -> bool {
    matches!(code, Some(c) if c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03"))
}

#[cfg(test)]
mod tests {
    use super::{connection_lost, lost_a_race};

    #[test]
    fn a_terminated_or_lost_connection_is_unavailable_not_a_fault() {
        for code in ["57P01", "57P02", "57P03", "08006", "08003"] {
            assert!(connection_lost(Some(code)), "{code}");
        }
        for code in [None, Some("23505"), Some("40001"), Some("57014")] {
            assert!(!connection_lost(code), "{code:?}");
        }
    }

    #[test]
    fn deadlocks_serialization_failures_and_busy_are_races_not_faults() {
        for code in ["40001", "40P01", "5", "6", "517"] {
            assert!(lost_a_race(Some(code)), "{code}");
        }
        for code in [None, Some("23505"), Some("42P01"), Some("19")] {
            assert!(!lost_a_race(code), "{code:?}");
        }
    }
}
