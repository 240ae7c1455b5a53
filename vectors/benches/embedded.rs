//! The embedded store at 100k points of 512-d (ViT-B-32's size): upsert points/s in batches of 1,000
//! (each batch durable before the next), the time to build the HNSW index, search latency p50/p99
//! for top-50, unfiltered and with a date range + category filter, and what a one-shot process (the
//! CLI's `search`) pays: opening the store again and its first search.
//!   cargo bench -p vectors --bench embedded [-- POINTS [DIM]]

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use vectors::*;

/// A small deterministic generator, so every run measures the same data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit_vector(&mut self, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| (self.next() % 2000) as f32 / 1000.0 - 1.0).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let numbers: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (points, dim) = (numbers.first().copied().unwrap_or(100_000), numbers.get(1).copied().unwrap_or(512));
    let dir = tempfile::tempdir().unwrap();
    let store = VectorStore::embedded(dir.path()).unwrap();
    let name = "bench";
    store.ensure_collection(&CollectionSpec { name: name.into(), dim, model_version: "bench".into() }).await.unwrap();
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let start = Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap();

    let t = Instant::now();
    for batch in 0..points.div_ceil(1000) {
        let pts: Vec<AssetPoint> = (batch * 1000..((batch + 1) * 1000).min(points))
            .map(|i| AssetPoint {
                asset_id: i as i64 + 1,
                vector: rng.unit_vector(dim),
                path: format!("/photos/dir{:03}/img{i}.jpg", rng.next() % 100),
                created_at: start + chrono::Duration::minutes((rng.next() % (2 * 365 * 24 * 60)) as i64),
                category_id: Some((rng.next() % 10) as i64),
                model_version: "bench".into(),
            })
            .collect();
        store.upsert(name, pts).await.unwrap();
    }
    let upsert_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    store.optimize(name).await.unwrap();
    let optimize_s = t.elapsed().as_secs_f64();

    let filter = PointFilter {
        from: Some(Utc.with_ymd_and_hms(2023, 6, 1, 0, 0, 0).unwrap()),
        to: Some(Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap()),
        category_id: Some(3),
        path_prefix: None,
    };
    let mut report = Vec::new();
    for (label, f) in [("unfiltered", PointFilter::default()), ("date range + category", filter)] {
        let mut times = Vec::new();
        for _ in 0..500 {
            let q = rng.unit_vector(dim);
            let t = Instant::now();
            let hits = store.search(name, &q, &f, 50, 0).await.unwrap();
            times.push(t.elapsed());
            assert_eq!(hits.len(), 50);
        }
        times.sort();
        report.push(format!("search top-50, {label:22} p50 {:.2} ms  p99 {:.2} ms", percentile(&times, 0.5), percentile(&times, 0.99)));
    }
    // a fresh process's cost: the shard opened again (after this one let go of it), one search
    drop(store);
    let t = Instant::now();
    let store = VectorStore::embedded(dir.path()).unwrap();
    let hits = store.search(name, &rng.unit_vector(dim), &PointFilter::default(), 50, 0).await.unwrap();
    let reopen_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(hits.len(), 50);
    report.push(format!("open the store again + first search: {reopen_ms:.0} ms"));
    println!("embedded vector store, {points} points of {dim}-d");
    println!("upsert (batches of 1000, durable): {:.0} points/s ({upsert_s:.1} s)", points as f64 / upsert_s);
    println!("build HNSW index (optimize):        {optimize_s:.1} s");
    for line in report {
        println!("{line}");
    }
}
