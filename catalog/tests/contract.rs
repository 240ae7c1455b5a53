//! One contract suite, run against both backends: PostgreSQL (the real server on the machine, a fresh
//! schema per test, dropped afterwards) and SQLite (a fresh file per test).
//!
//! `IMGSEARCH_TEST_POSTGRES` overrides the server (default postgres://postgres@127.0.0.1:5432/postgres).

use std::{future::Future, panic::AssertUnwindSafe};

use catalog::*;
use futures_util::FutureExt;
use uuid::Uuid;

fn postgres_url() -> String {
    std::env::var("IMGSEARCH_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn with_postgres<F, Fut>(case: F)
where
    F: FnOnce(Catalog) -> Fut,
    Fut: Future<Output = ()>,
{
    with_postgres_schema(|catalog, _| case(catalog)).await
}

/// `with_postgres`, telling the case its schema (for a raw connection of its own in it).
async fn with_postgres_schema<F, Fut>(case: F)
where
    F: FnOnce(Catalog, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let schema = format!("t_{}", Uuid::new_v4().simple());
    let catalog = Catalog::connect_postgres(&postgres_url(), Some(&schema)).await.expect("PostgreSQL on 127.0.0.1:5432 (see .ci/run)");
    let outcome = AssertUnwindSafe(case(catalog, schema.clone())).catch_unwind().await;
    let admin = Catalog::connect_postgres(&postgres_url(), None).await.unwrap();
    admin.drop_schema_for_tests(&schema).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn with_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Catalog) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect(&format!("sqlite://{}", dir.path().join("catalog.db").display())).await.unwrap();
    case(catalog).await;
}

macro_rules! contract {
    ($($case:ident),+ $(,)?) => {
        mod postgres {
            $( #[tokio::test] async fn $case() { super::with_postgres(super::$case).await } )+
        }
        mod sqlite {
            $( #[tokio::test] async fn $case() { super::with_sqlite(super::$case).await } )+
        }
    };
}

contract!(
    categories_have_unique_names_and_full_crud,
    assets_are_keyed_by_path_and_changes_are_noticed,
    a_batch_of_files_is_recorded_in_few_statements_keeping_known_ids,
    assets_hydrate_by_ids_in_one_call,
    sessions_move_only_along_their_state_machine,
    sessions_list_by_status_and_page,
    one_job_per_session_and_asset,
    a_batch_of_results_commits_together_and_a_redelivery_changes_nothing,
    failed_results_are_counted_as_failures,
    a_cancelled_job_cannot_complete,
    deletion_logs_list_newest_first,
    subdirectories_keep_their_selection_across_scans,
    a_session_restarts_renames_and_deletes,
    a_cancelled_session_restarted_embeds_what_it_left_undone,
    runs_that_started_are_counted_once_each_and_open_jobs_requeue,
);

fn asset(path: &str, hash: &str) -> NewAsset {
    NewAsset { path: path.into(), file_size: Some(1000), content_hash: Some(hash.into()), mime_type: Some("image/jpeg".into()), ..Default::default() }
}

fn evidence(checksum: &str) -> NewEvidence {
    NewEvidence {
        model_name: "tiny-clip".into(),
        model_version: "abc123".into(),
        embedding_checksum: Some(checksum.into()),
        device: Some("cpu".into()),
        metadata: serde_json::json!({"image": {"width": 64}, "timing": {"decodeMs": 1.5}}),
    }
}

fn completed(job: JobId, checksum: &str) -> JobResult {
    JobResult { job_id: job, outcome: JobOutcome::Completed, processing_time_ms: Some(12), evidence: evidence(checksum) }
}

/// A session with `n` assets and their jobs.
async fn session_with_jobs(c: &Catalog, n: usize) -> (Session, Vec<Job>) {
    let session = c.create_session(NewSession { name: "s".into(), root_path: "/photos".into(), category_id: None }).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(c.upsert_asset(asset(&format!("/photos/{session_id}/{i}.jpg", session_id = session.id), "h")).await.unwrap().0.id);
    }
    assert_eq!(c.create_jobs(session.id, &ids).await.unwrap(), n as u64);
    let jobs = c.list_jobs(session.id, None, Page::new(0, 1000)).await.unwrap().items;
    (session, jobs)
}

async fn categories_have_unique_names_and_full_crud(c: Catalog) {
    let cat = c.create_category(NewCategory { name: "holidays".into(), color: Some("#ff0000".into()), ..Default::default() }).await.unwrap();
    assert_eq!(c.get_category(cat.id).await.unwrap().name, "holidays");
    let err = c.create_category(NewCategory { name: "holidays".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.to_string(), "category \"holidays\" already exists");
    c.create_category(NewCategory { name: "animals".into(), ..Default::default() }).await.unwrap();
    let names: Vec<_> = c.list_categories(Page::new(0, 100)).await.unwrap().items.into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["animals", "holidays"]);
    let updated = c.update_category(cat.id, CategoryPatch { description: Some("summer".into()), ..Default::default() }).await.unwrap();
    assert_eq!((updated.name.as_str(), updated.description.as_deref(), updated.color.as_deref()), ("holidays", Some("summer"), Some("#ff0000")));
    let err = c.update_category(cat.id, CategoryPatch { name: Some("animals".into()), ..Default::default() }).await.unwrap_err();
    assert!(matches!(err, CatalogError::Conflict { .. }), "{err}");
    assert_eq!(c.category_by_name("holidays").await.unwrap().map(|c| c.id), Some(cat.id));
    c.delete_category(cat.id).await.unwrap();
    assert!(matches!(c.get_category(cat.id).await.unwrap_err(), CatalogError::NotFound { .. }));
    assert!(matches!(c.delete_category(cat.id).await.unwrap_err(), CatalogError::NotFound { .. }));
}

async fn assets_are_keyed_by_path_and_changes_are_noticed(c: Catalog) {
    let (a, change) = c.upsert_asset(asset("/p/a.jpg", "h1")).await.unwrap();
    assert_eq!(change, AssetChange::Inserted);
    assert!(a.id > 0, "catalog ids are positive: they are the vector point ids");
    let (b, _) = c.upsert_asset(asset("/p/b.jpg", "h1")).await.unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(a.training_status, TrainingStatus::Pending);
    let (again, change) = c.upsert_asset(asset("/p/a.jpg", "h1")).await.unwrap();
    assert_eq!((again.id, change), (a.id, AssetChange::Unchanged));
    let session = c.create_session(NewSession { name: "s".into(), root_path: "/p".into(), category_id: None }).await.unwrap();
    c.create_jobs(session.id, &[a.id]).await.unwrap();
    let job = c.list_jobs(session.id, None, Page::new(0, 1)).await.unwrap().items[0].id;
    c.record_results(&[completed(job, "x")]).await.unwrap();
    assert_eq!(c.get_asset(a.id).await.unwrap().training_status, TrainingStatus::Trained);
    let (changed, change) = c.upsert_asset(asset("/p/a.jpg", "h2")).await.unwrap();
    assert_eq!((changed.id, change), (a.id, AssetChange::Changed));
    assert_eq!(changed.training_status, TrainingStatus::Pending, "a changed file must be embedded again");
    assert_eq!(changed.content_hash.as_deref(), Some("h2"));
    let listing = c.list_assets(Page::new(0, 10)).await.unwrap();
    assert_eq!((listing.total, listing.items.len()), (2, 2));
    assert!(matches!(c.get_asset(987_654_321).await.unwrap_err(), CatalogError::NotFound { .. }));
}

async fn a_batch_of_files_is_recorded_in_few_statements_keeping_known_ids(c: Catalog) {
    let (known, _) = c.upsert_asset(asset("/b/0007.jpg", "old")).await.unwrap();
    let batch: Vec<NewAsset> = (0..1200).map(|i| asset(&format!("/b/{i:04}.jpg"), "h")).collect();
    let rows = c.record_assets(&batch).await.unwrap();
    assert_eq!(rows.len(), 1200);
    let again = rows.iter().find(|a| a.path == "/b/0007.jpg").unwrap();
    assert_eq!((again.id, again.content_hash.as_deref(), again.training_status), (known.id, Some("h"), TrainingStatus::Pending));
    let ids: std::collections::HashSet<i64> = rows.iter().map(|a| a.id).collect();
    assert_eq!(ids.len(), 1200, "one row per path");
    assert_eq!(c.list_assets(Page::new(0, 1)).await.unwrap().total, 1200);
}

async fn assets_hydrate_by_ids_in_one_call(c: Catalog) {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(c.upsert_asset(asset(&format!("/p/{i}.jpg"), "h")).await.unwrap().0.id);
    }
    let unknown: AssetId = 987_654_321;
    let got = c.assets_by_ids(&[ids[3], unknown, ids[0]]).await.unwrap();
    let mut paths: Vec<_> = got.iter().map(|a| a.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/p/0.jpg", "/p/3.jpg"]);
    assert!(c.assets_by_ids(&[]).await.unwrap().is_empty());
    let page = c.list_assets(Page::new(3, 10)).await.unwrap();
    assert_eq!((page.total, page.items.len()), (5, 2));
}

async fn sessions_move_only_along_their_state_machine(c: Catalog) {
    let s = c.create_session(NewSession { name: "first".into(), root_path: "/photos".into(), category_id: None }).await.unwrap();
    assert_eq!(s.status, SessionStatus::Pending);
    let err = c.transition_session(s.id, SessionStatus::Paused).await.unwrap_err();
    assert_eq!(err.to_string(), format!("cannot move session {} from pending to paused", s.id));
    let running = c.transition_session(s.id, SessionStatus::Running).await.unwrap();
    assert!(running.started_at.is_some());
    let paused = c.transition_session(s.id, SessionStatus::Paused).await.unwrap();
    assert!(paused.paused_at.is_some());
    let resumed = c.transition_session(s.id, SessionStatus::Running).await.unwrap();
    assert_eq!(resumed.started_at, running.started_at, "resuming keeps the first start");
    let done = c.transition_session(s.id, SessionStatus::Completed).await.unwrap();
    assert!(done.completed_at.is_some());
    let err = c.transition_session(s.id, SessionStatus::Running).await.unwrap_err();
    assert!(matches!(err, CatalogError::InvalidTransition { .. }), "starting a completed session is refused: {err}");
    assert!(matches!(c.get_session(987_654_321).await.unwrap_err(), CatalogError::NotFound { .. }));
}

async fn sessions_list_by_status_and_page(c: Catalog) {
    for i in 0..5 {
        let s = c.create_session(NewSession { name: format!("s{i}"), root_path: "/r".into(), category_id: None }).await.unwrap();
        if i % 2 == 0 {
            c.transition_session(s.id, SessionStatus::Running).await.unwrap();
        }
    }
    let running = c.list_sessions(Some(SessionStatus::Running), Page::new(0, 10)).await.unwrap();
    assert_eq!((running.total, running.items.len()), (3, 3));
    assert!(running.items.iter().all(|s| s.status == SessionStatus::Running));
    let page = c.list_sessions(None, Page::new(2, 2)).await.unwrap();
    assert_eq!((page.total, page.items.len()), (5, 2));
    let first = c.list_sessions(None, Page::new(0, 2)).await.unwrap();
    assert!(first.items.iter().all(|s| !page.items.contains(s)), "pages do not overlap");
}

async fn one_job_per_session_and_asset(c: Catalog) {
    let (session, jobs) = session_with_jobs(&c, 3).await;
    let assets: Vec<AssetId> = jobs.iter().map(|j| j.asset_id).collect();
    assert_eq!(c.create_jobs(session.id, &assets).await.unwrap(), 0, "creating again adds nothing");
    assert_eq!(c.get_session(session.id).await.unwrap().total_images, 3);
    let queued = c.mark_jobs_queued(&jobs.iter().map(|j| (j.id, format!("msg-{}", j.id))).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(queued, 3);
    assert_eq!(c.mark_jobs_queued(&[(jobs[0].id, "again".into())]).await.unwrap(), 0, "queued once");
    let job = c.get_job(jobs[0].id).await.unwrap();
    assert_eq!((job.status, job.broker_message_id.as_deref()), (JobStatus::Queued, Some(format!("msg-{}", jobs[0].id).as_str())));
    assert_eq!(c.get_asset(job.asset_id).await.unwrap().training_status, TrainingStatus::Queued);
    let listing = c.list_jobs(session.id, Some(JobStatus::Queued), Page::new(0, 10)).await.unwrap();
    assert_eq!(listing.total, 3);
}

async fn a_batch_of_results_commits_together_and_a_redelivery_changes_nothing(c: Catalog) {
    let (session, jobs) = session_with_jobs(&c, 4).await;
    c.transition_session(session.id, SessionStatus::Running).await.unwrap();
    let batch: Vec<JobResult> = jobs.iter().take(3).map(|j| completed(j.id, &format!("sum-{}", j.id))).collect();
    let report = c.record_results(&batch).await.unwrap();
    assert_eq!(report.applied.len(), 3);
    let s = c.get_session(session.id).await.unwrap();
    assert_eq!((s.total_images, s.processed_images, s.failed_images), (4, 3, 0));
    let asset = c.get_asset(jobs[0].asset_id).await.unwrap();
    assert_eq!(asset.training_status, TrainingStatus::Trained);
    assert!(asset.indexed_at.is_some());
    let ev = c.evidence_for_asset(jobs[0].asset_id).await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].embedding_checksum.as_deref(), Some(format!("sum-{}", jobs[0].id).as_str()));
    assert_eq!(ev[0].metadata["timing"]["decodeMs"], 1.5);
    assert_eq!(c.get_job(jobs[0].id).await.unwrap().status, JobStatus::Completed);

    // the writer died before its ack: the same batch arrives again
    let replay = c.record_results(&batch).await.unwrap();
    assert!(replay.applied.is_empty());
    assert_eq!(replay.already_done.len(), 3);
    let s2 = c.get_session(session.id).await.unwrap();
    assert_eq!((s2.processed_images, s2.failed_images), (3, 0), "nothing counted twice");
    assert_eq!(c.evidence_for_session(session.id, Page::new(0, 100)).await.unwrap().total, 3, "no second evidence row");
    assert_eq!(c.get_asset(jobs[0].asset_id).await.unwrap().indexed_at, asset.indexed_at);
}

/// Attempts are runs that started, each counted once however often its report arrives; a finished
/// job counts no more; requeueing an unfinished session keeps the counts.
async fn runs_that_started_are_counted_once_each_and_open_jobs_requeue(c: Catalog) {
    let (session, jobs) = session_with_jobs(&c, 3).await;
    c.transition_session(session.id, SessionStatus::Running).await.unwrap();
    let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
    assert_eq!(c.record_started(7, &ids).await.unwrap(), 3);
    assert_eq!(c.record_started(7, &ids).await.unwrap(), 0, "the same run's report again counts nothing");
    assert_eq!(c.record_started(8, &ids[..1]).await.unwrap(), 1);
    c.record_results(&[completed(ids[2], "sum")]).await.unwrap();
    assert_eq!(c.record_started(9, &ids).await.unwrap(), 2, "a finished job counts no more runs");
    let attempts: std::collections::HashMap<i64, (JobStatus, i32)> = c.job_attempts(&ids).await.unwrap().into_iter().map(|(id, s, n)| (id, (s, n))).collect();
    assert_eq!(attempts[&ids[0]], (JobStatus::Running, 3));
    assert_eq!(attempts[&ids[1]], (JobStatus::Running, 2));
    assert_eq!(attempts[&ids[2]], (JobStatus::Completed, 1));
    assert_eq!(c.requeue_open_jobs(session.id).await.unwrap(), 2, "running jobs go back to pending");
    let job = c.get_job(ids[0]).await.unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Pending, 3), "with their attempts");
}

async fn failed_results_are_counted_as_failures(c: Catalog) {
    let (session, jobs) = session_with_jobs(&c, 3).await;
    let failed = |job_id, error: &str, permanent| JobResult {
        job_id,
        outcome: JobOutcome::Failed { error: error.into(), permanent },
        processing_time_ms: Some(3),
        evidence: NewEvidence { model_name: "tiny-clip".into(), model_version: "abc".into(), ..Default::default() },
    };
    let batch = [completed(jobs[0].id, "x"), failed(jobs[1].id, "corrupt or truncated image", true), failed(jobs[2].id, "io: cannot read image", false)];
    let report = c.record_results(&batch).await.unwrap();
    assert_eq!(report.applied.len(), 3);
    let s = c.get_session(session.id).await.unwrap();
    assert_eq!((s.processed_images, s.failed_images), (1, 2));
    // a transient failure leaves its asset to the next run; a permanent one marks it failed
    assert_eq!(c.get_asset(jobs[2].asset_id).await.unwrap().training_status, TrainingStatus::Pending);
    // asked for again in the same (resumed) session, a failed job opens again; a completed one stays
    assert_eq!(c.create_jobs(session.id, &[jobs[0].asset_id, jobs[2].asset_id]).await.unwrap(), 1);
    let reopened = c.get_job(jobs[2].id).await.unwrap();
    assert_eq!((reopened.status, reopened.error_message), (JobStatus::Pending, None));
    assert_eq!(c.get_job(jobs[0].id).await.unwrap().status, JobStatus::Completed);
    let job = c.get_job(jobs[1].id).await.unwrap();
    assert_eq!((job.status, job.error_message.as_deref()), (JobStatus::Failed, Some("corrupt or truncated image")));
    let asset = c.get_asset(jobs[1].asset_id).await.unwrap();
    assert_eq!(asset.training_status, TrainingStatus::Failed);
    assert!(asset.indexed_at.is_none());
    assert_eq!(c.evidence_for_asset(jobs[1].asset_id).await.unwrap()[0].error_message.as_deref(), Some("corrupt or truncated image"));
}

async fn a_cancelled_job_cannot_complete(c: Catalog) {
    let (session, jobs) = session_with_jobs(&c, 2).await;
    c.cancel_job(jobs[0].id).await.unwrap();
    let report = c.record_results(&[completed(jobs[0].id, "x"), completed(987_654_321, "y")]).await.unwrap();
    assert!(report.applied.is_empty());
    assert_eq!(report.refused.len(), 2);
    assert_eq!(report.refused[0], (jobs[0].id, "job is cancelled".to_owned()));
    assert_eq!(report.refused[1].1, "no such job");
    assert_eq!(c.get_job(jobs[0].id).await.unwrap().status, JobStatus::Cancelled);
    let err = c.cancel_job(jobs[0].id).await.unwrap_err();
    assert_eq!(err.to_string(), format!("cannot move job {} from cancelled to cancelled", jobs[0].id));
    assert_eq!(c.get_session(session.id).await.unwrap().processed_images, 0);
}

async fn deletion_logs_list_newest_first(c: Catalog) {
    for (i, kind) in [DeletionType::Asset, DeletionType::Directory, DeletionType::FullReset].into_iter().enumerate() {
        c.log_deletion(NewDeletionLog {
            deletion_type: kind,
            target: Some(format!("target-{i}")),
            vector_count: i as i64 * 10,
            reason: Some("test".into()),
            metadata: serde_json::json!({"i": i}),
        })
        .await
        .unwrap();
    }
    let first = c.list_deletion_logs(Page::new(0, 2)).await.unwrap();
    assert_eq!(first.total, 3);
    assert_eq!(first.items.iter().map(|l| l.deletion_type).collect::<Vec<_>>(), [DeletionType::FullReset, DeletionType::Directory]);
    assert_eq!(first.items[0].vector_count, 20);
    assert_eq!(first.items[0].metadata["i"], 2);
    let rest = c.list_deletion_logs(Page::new(2, 2)).await.unwrap();
    assert_eq!(rest.items.iter().map(|l| l.target.as_deref()).collect::<Vec<_>>(), [Some("target-0")]);
}

async fn subdirectories_keep_their_selection_across_scans(c: Catalog) {
    let s = c.create_session(NewSession { name: "s".into(), root_path: "/photos".into(), category_id: None }).await.unwrap();
    let scan = |n: i64| vec![("/photos/2023".to_owned(), "2023".to_owned(), n), ("/photos/2024".to_owned(), "2024".to_owned(), 2 * n)];
    c.upsert_subdirectories(s.id, &scan(5)).await.unwrap();
    let off = c.set_subdirectory_selected(s.id, "/photos/2023", false).await.unwrap();
    assert!(!off.selected);
    c.upsert_subdirectories(s.id, &scan(7)).await.unwrap();
    let dirs = c.list_subdirectories(s.id).await.unwrap();
    assert_eq!(dirs.iter().map(|d| (d.path.as_str(), d.selected, d.image_count)).collect::<Vec<_>>(), [("/photos/2023", false, 7), ("/photos/2024", true, 14)]);
    let err = c.set_subdirectory_selected(s.id, "/elsewhere", true).await.unwrap_err();
    assert_eq!(err.to_string(), "subdirectory /elsewhere not found");
}

/// Workers and the coordinator started together on a new schema all open it (CREATE SCHEMA IF NOT
/// EXISTS once failed one of them on a duplicate key).
#[tokio::test]
async fn five_processes_creating_one_schema_at_once_all_open_it() {
    let schema = format!("t_{}", Uuid::new_v4().simple());
    let url = postgres_url();
    let opened = futures_util::future::join_all((0..5).map(|_| Catalog::connect_postgres(&url, Some(&schema)))).await;
    let admin = Catalog::connect_postgres(&postgres_url(), None).await.unwrap();
    admin.drop_schema_for_tests(&schema).await;
    for o in opened {
        o.expect("every opener gets the schema");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    let err = match Catalog::connect("postgres://postgres@127.0.0.1:1/postgres").await {
        Err(e) => e,
        Ok(_) => panic!("nothing listens on port 1"),
    };
    assert!(matches!(err, CatalogError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("check that the database is running"), "{err}");
}

/// A session cancelled midway, then restarted for what did not complete: its cancelled and queued
/// jobs are the ones embedded again, its completed one is kept.
async fn a_cancelled_session_restarted_embeds_what_it_left_undone(c: Catalog) {
    let (session, jobs) = session_with_jobs(&c, 3).await;
    c.transition_session(session.id, SessionStatus::Running).await.unwrap();
    c.mark_jobs_queued(&[(jobs[2].id, "m2".into())]).await.unwrap();
    c.record_results(&[completed(jobs[0].id, "c")]).await.unwrap();
    c.cancel_job(jobs[1].id).await.unwrap();
    c.transition_session(session.id, SessionStatus::Cancelled).await.unwrap();
    let (again, count) = c.restart_session(session.id, None, true).await.unwrap();
    assert_eq!((again.status, again.processed_images, count), (SessionStatus::Pending, 1, 1));
    assert_eq!(c.get_job(jobs[2].id).await.unwrap().status, JobStatus::Pending, "a queued job is published again");
    assert_eq!(c.create_jobs(session.id, &[jobs[1].asset_id]).await.unwrap(), 1, "the cancelled job opens again");
    assert_eq!(c.get_job(jobs[1].id).await.unwrap().status, JobStatus::Pending);
    assert_eq!(c.get_job(jobs[0].id).await.unwrap().status, JobStatus::Completed, "the completed one is kept");
}

async fn a_session_restarts_renames_and_deletes(c: Catalog) {
    let (session, jobs) = session_with_jobs(&c, 3).await;
    let err = c.restart_session(session.id, None, false).await.unwrap_err();
    assert!(matches!(err, CatalogError::InvalidTransition { .. }), "a pending session has nothing to restart: {err}");
    c.transition_session(session.id, SessionStatus::Running).await.unwrap();
    let mut results: Vec<JobResult> = jobs[..2].iter().map(|j| completed(j.id, "c")).collect();
    results.push(JobResult { outcome: JobOutcome::Failed { error: "corrupt: no".into(), permanent: true }, ..completed(jobs[2].id, "f") });
    c.record_results(&results).await.unwrap();
    assert!(matches!(c.delete_session(session.id).await.unwrap_err(), CatalogError::InvalidTransition { .. }), "running");
    c.transition_session(session.id, SessionStatus::Completed).await.unwrap();
    assert_eq!(c.evidence_for_session(session.id, Page::new(0, 10)).await.unwrap().total, 3);

    // the failed image only: its evidence goes and its asset is asked for again; the rest stays
    let (again, count) = c.restart_session(session.id, Some("retry"), true).await.unwrap();
    assert_eq!((again.status, again.total_images, again.processed_images, again.failed_images, count), (SessionStatus::Pending, 3, 2, 0, 1));
    assert_eq!(c.evidence_for_session(session.id, Page::new(0, 10)).await.unwrap().total, 2);
    assert_eq!(c.get_asset(jobs[2].asset_id).await.unwrap().training_status, TrainingStatus::Pending);
    assert_eq!(c.get_asset(jobs[0].asset_id).await.unwrap().training_status, TrainingStatus::Trained);
    c.create_jobs(session.id, &[jobs[2].asset_id]).await.unwrap();
    c.transition_session(session.id, SessionStatus::Running).await.unwrap();
    c.record_results(&[completed(jobs[2].id, "c")]).await.unwrap();
    c.transition_session(session.id, SessionStatus::Completed).await.unwrap();
    assert_eq!(c.evidence_for_session(session.id, Page::new(0, 10)).await.unwrap().total, 3, "the retry's evidence is written");

    let renamed = c.update_session(session.id, Some("holidays"), Some(None)).await.unwrap();
    assert_eq!((renamed.name.as_str(), renamed.category_id), ("holidays", None));

    let (again, count) = c.restart_session(session.id, Some("new model"), false).await.unwrap();
    assert_eq!(count, 3);
    assert_eq!((again.status, again.total_images, again.processed_images), (SessionStatus::Pending, 0, 0));
    assert_eq!(again.reset_reason.as_deref(), Some("new model"));
    assert!(again.reset_at.is_some() && again.started_at.is_none() && again.completed_at.is_none());
    assert_eq!(c.list_jobs(session.id, None, Page::new(0, 10)).await.unwrap().total, 0);
    assert_eq!(c.evidence_for_session(session.id, Page::new(0, 10)).await.unwrap().total, 0);
    let assets = c.assets_by_ids(&jobs.iter().map(|j| j.asset_id).collect::<Vec<_>>()).await.unwrap();
    assert!(assets.iter().all(|a| a.training_status == TrainingStatus::Pending), "its images are embedded again");

    c.delete_session(session.id).await.unwrap();
    assert!(matches!(c.get_session(session.id).await.unwrap_err(), CatalogError::NotFound { .. }));
    assert_eq!(c.assets_by_ids(&[jobs[0].asset_id]).await.unwrap().len(), 1, "assets outlive the session");
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_opening_a_new_sqlite_file_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.sqlite");
    let opens = (0..4).map(|_| {
        let path = path.clone();
        tokio::spawn(async move { Catalog::connect_sqlite(&path).await.map(|_| ()) })
    });
    for r in futures_util::future::join_all(opens).await {
        r.unwrap().expect("every opener migrates or finds the migration applied");
    }
}

/// On SQLite a recount that waits for another writer commits after it. Its transaction once began
/// with a read (the session "lock"), and a transaction that has read cannot take the write lock
/// after another writer committed (its snapshot is stale): SQLite failed it at once with "database
/// is locked" (schemathesis found it, as a 503 from `retrain`). The other writer holds the lock for
/// 300 ms so that the recount starts while it is held; on a machine too slow for that the test
/// passes without having raced, it cannot fail falsely.
#[tokio::test]
async fn a_recount_waiting_for_another_sqlite_writer_commits_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.sqlite");
    let c = Catalog::connect_sqlite(&path).await.unwrap();
    let (session, jobs) = session_with_jobs(&c, 2).await;
    let other = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let mut tx = other.begin().await.unwrap();
    sqlx::query("UPDATE training_jobs SET status = 'completed' WHERE id = $1").bind(jobs[0].id).execute(&mut *tx).await.unwrap();
    let recount = tokio::spawn({
        let c = c.clone();
        async move { c.recount_session(session.id).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tx.commit().await.unwrap();
    recount.await.unwrap().expect("the recount waited for the other writer and committed");
    assert_eq!(c.get_session(session.id).await.unwrap().processed_images, 1, "the other writer's job is counted");
}

/// Two writers commit results of one session at once: the one that waited on the other recounts
/// after the other committed. Writer A is played by hand, stopped while it holds the session row;
/// writer B (`record_results`) must wait, and must count A's job once A commits (it once
/// recounted from a snapshot taken before, and the counters ended one short).
#[tokio::test]
async fn two_writers_committing_one_sessions_batches_at_once_count_both() {
    with_postgres_schema(|c, schema| async move {
        let (session, jobs) = session_with_jobs(&c, 2).await;
        c.transition_session(session.id, SessionStatus::Running).await.unwrap();
        let a = raw_in(&schema).await;
        let mut tx = a.begin().await.unwrap();
        let a_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *tx).await.unwrap();
        sqlx::query("UPDATE training_jobs SET status = 'completed' WHERE id = $1").bind(jobs[0].id).execute(&mut *tx).await.unwrap();
        sqlx::query("SELECT id FROM training_sessions WHERE id = $1 FOR UPDATE").bind(session.id).execute(&mut *tx).await.unwrap();

        let b = tokio::spawn({
            let c = c.clone();
            let job = jobs[1].id;
            async move { c.record_results(&[completed(job, "b")]).await.unwrap() }
        });
        // B is waiting on a lock A holds
        let watcher = raw_in(&schema).await;
        let mut waited = false;
        for _ in 0..1000 {
            let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))").bind(a_pid).fetch_one(&watcher).await.unwrap();
            if waiting > 0 {
                waited = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(waited, "writer B never waited on writer A");
        sqlx::query("UPDATE training_sessions SET processed_images = (SELECT COUNT(*) FROM training_jobs WHERE session_id = $1 AND status = 'completed') WHERE id = $1")
            .bind(session.id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(b.await.unwrap().applied, vec![jobs[1].id]);
        assert_eq!(c.get_session(session.id).await.unwrap().processed_images, 2, "both writers' jobs are counted");
    })
    .await
}

/// A writer whose transaction has inserted its evidence rows (their foreign key holds KEY SHARE on
/// the session row) does not block another writer's commit of the same session: with the session
/// locked FOR UPDATE, the second waited on the first's key share while the first went on to take
/// the same lock, and PostgreSQL aborted one of them as a deadlock, on every concurrent batch (the
/// chaos test found it). Fails before the fix: B waits until A ends.
#[tokio::test]
async fn a_writer_holding_its_evidence_rows_does_not_block_another_writers_commit() {
    with_postgres_schema(|c, schema| async move {
        let (session, jobs) = session_with_jobs(&c, 2).await;
        c.transition_session(session.id, SessionStatus::Running).await.unwrap();
        let a = raw_in(&schema).await;
        let mut tx = a.begin().await.unwrap();
        sqlx::query("INSERT INTO training_evidence (asset_id, session_id, model_name, model_version, created_at) VALUES ($1, $2, 'm', '1', now())")
            .bind(jobs[0].asset_id)
            .bind(session.id)
            .execute(&mut *tx)
            .await
            .unwrap();
        let b = tokio::spawn({
            let c = c.clone();
            let job = jobs[1].id;
            async move { c.record_results(&[completed(job, "b")]).await.unwrap() }
        });
        let report = tokio::time::timeout(std::time::Duration::from_secs(20), b).await.expect("writer B committed while A's transaction was open").unwrap();
        assert_eq!(report.applied, vec![jobs[1].id]);
        tx.rollback().await.unwrap();
        assert_eq!(c.get_session(session.id).await.unwrap().processed_images, 1);
    })
    .await
}

/// A pool on the schema a test catalog lives in.
async fn raw_in(schema: &str) -> sqlx::PgPool {
    let options: sqlx::postgres::PgConnectOptions = postgres_url().parse().unwrap();
    sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_with(options.options([("search_path", schema)])).await.unwrap()
}
