//! Walking a session's open jobs while writers finish some of them (a resume during a run): every
//! job that was open when the walk began is seen once, none skipped.

use catalog::{Catalog, JobOutcome, JobResult, JobStatus, NewAsset, NewEvidence, NewSession};
use coordinator::JobPages;

#[tokio::test]
async fn jobs_finishing_during_a_walk_make_it_skip_none() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect_sqlite(&dir.path().join("catalog.sqlite")).await.unwrap();
    let session = catalog.create_session(NewSession { name: "s".into(), root_path: "/p".into(), category_id: None }).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..2500 {
        let asset = NewAsset { path: format!("/p/{i:04}.jpg"), content_hash: Some(i.to_string()), ..Default::default() };
        ids.push(catalog.upsert_asset(asset).await.unwrap().0.id);
    }
    catalog.create_jobs(session.id, &ids).await.unwrap();

    let mut pages = JobPages::new(&session, &[JobStatus::Pending], 1000);
    let first = pages.next(&catalog).await.unwrap().unwrap();
    assert_eq!(first.len(), 1000);
    // writers finish half of the first page meanwhile
    let finished: Vec<JobResult> =
        first[..500].iter().map(|j| JobResult { job_id: j.job_id, outcome: JobOutcome::Completed, processing_time_ms: Some(1), evidence: NewEvidence::default() }).collect();
    catalog.record_results(&finished).await.unwrap();
    let mut seen: Vec<i64> = first.iter().map(|j| j.job_id).collect();
    while let Some(page) = pages.next(&catalog).await.unwrap() {
        seen.extend(page.iter().map(|j| j.job_id));
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 2500, "every job open when the walk began is seen (offsets skipped 500)");
}
