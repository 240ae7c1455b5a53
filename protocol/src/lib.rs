//! Protocol: the versioned message types that cross a queue (`EmbedJob`, `EmbedResult`). Only these
//! types cross a queue, in-process or over RabbitMQ. No I/O here.
//!
//! Messages are small: a job carries ids and the path, never image bytes; a result carries the vector
//! as little-endian f32 bytes plus the evidence. Every message has a `v` field; a reader refuses a
//! version it does not know instead of guessing.

pub mod batch;
pub mod paths;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The message version this build writes and reads. Version 3: the results queue carries
/// [`Report`]s (version 2 carried bare results; version 1 had UUIDs).
pub const VERSION: u32 = 3;

/// An asset's id: the catalog's integer key, which is also its Qdrant point id (and, as a string,
/// the point's `asset_id` payload field), as in the service this replaces. Never reused.
pub type AssetId = i64;
/// A training session's id.
pub type SessionId = i64;
/// A training job's id: one per (session, asset).
pub type JobId = i64;

/// One asset to embed, for one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedJob {
    pub v: u32,
    pub job_id: JobId,
    pub asset_id: AssetId,
    pub session_id: SessionId,
    pub path: String,
    /// Copied to the vector payload so the writer needs no catalog read.
    pub created_at: DateTime<Utc>,
    pub category_id: Option<i64>,
    /// Which run of the job this is: 1 + the runs of it that started before (as the catalog counts
    /// them). A job that fails for a transient reason on its last allowed attempt is failed.
    pub attempt: u32,
}

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// The file itself is bad (corrupt, not an image, too many pixels): recorded as a failed job.
    Permanent,
    /// Something around it failed (I/O, the runtime): the job is retried, then dead-lettered.
    Transient,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    Embedded {
        /// The L2-normalised embedding as little-endian f32 bytes.
        #[serde(with = "hex_bytes")]
        vector: Vec<u8>,
        /// sha256 of those bytes, hex.
        checksum: String,
    },
    Failed {
        /// A fixed label (`corrupt`, `unsupported_format`, `too_large`, `extreme_aspect`, `empty`,
        /// `decoder_panic`, `decode_timeout`, `not_a_regular_file`, `io`, ...).
        reason: String,
        message: String,
        kind: FailureKind,
    },
}

/// What the embedder knows about how a result was made, recorded as the job's evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceInfo {
    pub model_name: String,
    pub model_version: String,
    pub device: String,
    /// `image`, `embedding`, `environment` and `timing` sections.
    pub metadata: serde_json::Value,
    pub processing_time_ms: i64,
}

/// The embedder's answer to one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedResult {
    pub v: u32,
    pub job_id: JobId,
    pub asset_id: AssetId,
    pub session_id: SessionId,
    pub path: String,
    pub created_at: DateTime<Utc>,
    pub category_id: Option<i64>,
    pub outcome: Outcome,
    pub evidence: EvidenceInfo,
}

/// An embedder is about to run these jobs (one report per batch, before it decodes a file). The
/// writer counts it as an attempt of each job in the catalog, once per `run`: attempts are the runs
/// that really started, not the broker's redeliveries (a worker that dies holding jobs it never
/// started charges them nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStarted {
    pub v: u32,
    /// A random id of this run of the batch.
    pub run: i64,
    pub jobs: Vec<JobId>,
}

/// What the embedders send the writers on the results queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Report {
    /// A batch is about to run.
    Started(RunStarted),
    /// A job the broker gave back (a worker died holding it, or gave it back to retry): the writer
    /// publishes it again, or fails it once its runs reached the limit (a file that kills every
    /// worker that opens it), and dead-letters it.
    Returned(EmbedJob),
    /// A job's result.
    Result(EmbedResult),
}

impl Report {
    /// The version of the message inside.
    pub fn v(&self) -> u32 {
        match self {
            Report::Started(s) => s.v,
            Report::Returned(j) => j.v,
            Report::Result(r) => r.v,
        }
    }
}

/// A vector as the little-endian bytes a result carries.
pub fn vector_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector back from its bytes; `None` if the length is not a whole number of f32s.
pub fn vector_from_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Vector bytes as a hex string in JSON.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl EmbedResult {
    /// The answer to `job`: its ids and payload fields copied, with this outcome and evidence.
    pub fn for_job(job: &EmbedJob, outcome: Outcome, evidence: EvidenceInfo) -> Self {
        EmbedResult {
            v: VERSION,
            job_id: job.job_id,
            asset_id: job.asset_id,
            session_id: job.session_id,
            path: job.path.clone(),
            created_at: job.created_at,
            category_id: job.category_id,
            outcome,
            evidence,
        }
    }
}

/// `scheme://user:secret@host/...` -> `scheme://user:***@host/...`; other URLs as they are. What
/// may be printed, logged or returned of a URL that can hold a password (the broker's, the
/// catalog's). A password with `@` or `/` in it (percent-encoded or not) is hidden whole.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    // the authority ends at the first '/', '?' or '#' after the last '@' (a raw '@' or '/' may be
    // inside a password)
    let Some(at) = rest.rfind('@') else { return url.to_owned() };
    let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// A fresh id for a message made up by a test or a bench (a process-wide counter); a catalog gives
/// the real ones.
#[doc(hidden)]
pub fn next_test_id() -> i64 {
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Test hook behind a `fail` failpoint (compiled in only with the `failpoints` features): says on
/// stderr that the failpoint was reached and blocks this thread for good, so a test can kill the
/// process with SIGKILL at exactly that point.
pub fn hang_at_failpoint(name: &str) -> ! {
    eprintln!("failpoint {name} reached");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_bytes_and_json() {
        let v = vec![0.5f32, -1.25, 3.0e-8];
        let bytes = vector_to_bytes(&v);
        assert_eq!(bytes.len(), 12);
        assert_eq!(vector_from_bytes(&bytes).unwrap(), v);
        assert!(vector_from_bytes(&bytes[..5]).is_none());
        let outcome = Outcome::Embedded { vector: bytes.clone(), checksum: "x".into() };
        let json = serde_json::to_string(&outcome).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), outcome);
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(redact_url("amqp://app:s3cret@mq:5672/%2f"), "amqp://app:***@mq:5672/%2f");
        assert_eq!(redact_url("postgres://app:p@ss/w0rd@db/imgsearch"), "postgres://app:***@db/imgsearch");
        assert_eq!(redact_url("postgres://app@db/imgsearch"), "postgres://app@db/imgsearch");
        assert_eq!(redact_url("http://127.0.0.1:6334"), "http://127.0.0.1:6334");
    }

    #[test]
    fn reports_say_their_kind_and_round_trip() {
        let started = Report::Started(RunStarted { v: VERSION, run: -7, jobs: vec![1, 2] });
        let json = serde_json::to_value(&started).unwrap();
        assert_eq!(json["kind"], "started");
        assert_eq!(serde_json::from_value::<Report>(json).unwrap(), started);
        let job = EmbedJob { v: VERSION, job_id: 3, asset_id: 4, session_id: 5, path: "/a.jpg".into(), created_at: Utc::now(), category_id: None, attempt: 2 };
        let returned = Report::Returned(job.clone());
        let json = serde_json::to_string(&returned).unwrap();
        assert!(json.contains(r#""kind":"returned""#), "{json}");
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), returned);
        let result = Report::Result(EmbedResult::for_job(
            &job,
            Outcome::Embedded { vector: vector_to_bytes(&[1.0]), checksum: "c".into() },
            EvidenceInfo { model_name: "m".into(), model_version: "1".into(), device: "cpu".into(), metadata: serde_json::json!({}), processing_time_ms: 1 },
        ));
        let json = serde_json::to_string(&result).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), result);
        assert_eq!(result.v(), VERSION);
        // a bare result (version 2's body) is not a report
        assert!(serde_json::from_str::<Report>(r#"{"v":2,"job_id":1}"#).is_err());
    }
}
