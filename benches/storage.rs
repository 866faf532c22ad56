//! Durable storage writes: one writer against sixteen, to show group commit at work.
//!
//! `cargo bench --bench storage [-- --seconds N --dir DIR]` prints one JSON line per phase:
//! - `sequential`: one writer, each commit waits for its own fsync: the fsync-bound rate;
//! - `concurrent`: sixteen writers; commits that arrive during an fsync share the next one;
//! - `relaxed`: sixteen writers without fsync (the WAL still makes writes survive a crash of the
//!   process), for scale.
//!
//! Each write is one batch with one account-data entry, as a client's `PUT` makes.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use myelin::{
    config::DatabaseConfig,
    storage::{Batch, Storage},
};
use ruma::OwnedUserId;
use serde_json::json;

const WRITERS: usize = 16;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let seconds: f64 = flag("--seconds").and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let base = flag("--dir").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("temporary directory");
    let storage = Arc::new(
        Storage::open(&DatabaseConfig { path: dir.path().to_path_buf(), cache_mb: 64, ..DatabaseConfig::default() })
            .expect("open"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let duration = Duration::from_secs_f64(seconds);

    let phases: [(&str, usize, bool); 3] =
        [("sequential", 1, true), ("concurrent", WRITERS, true), ("relaxed", WRITERS, false)];
    for (phase, writers, durable) in phases {
        let groups_before = storage.write_stats().groups.load(Ordering::Relaxed);
        let started = Instant::now();
        let mut latencies: Vec<Duration> = runtime.block_on(async {
            let tasks: Vec<_> =
                (0..writers).map(|w| tokio::spawn(writer(storage.clone(), w, duration, durable))).collect();
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            all
        });
        let elapsed = started.elapsed().as_secs_f64();
        let fsyncs = storage.write_stats().groups.load(Ordering::Relaxed) - groups_before;
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;
        let line = json!({
            "scenario": "storage",
            "phase": phase,
            "writers": writers,
            "durable": durable,
            "seconds": elapsed,
            "writes": latencies.len(),
            "writes_per_s": latencies.len() as f64 / elapsed,
            "fsyncs": fsyncs,
            "writes_per_fsync": if fsyncs > 0 { latencies.len() as f64 / fsyncs as f64 } else { 0.0 },
            "latency_ms": { "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) },
        });
        println!("{line}");
    }
}

async fn writer(storage: Arc<Storage>, index: usize, duration: Duration, durable: bool) -> Vec<Duration> {
    let user: OwnedUserId = format!("@writer{index}:bench.local").try_into().unwrap();
    let deadline = Instant::now() + duration;
    let mut latencies = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let mut batch = Batch::new();
        batch.put_account_data(
            &user,
            None,
            &format!("org.example.bench.{}", n % 64),
            json!({ "n": n, "pad": "x".repeat(64) }),
            None,
        );
        let started = Instant::now();
        if durable {
            storage.commit(batch).await.expect("commit");
        } else {
            storage.commit_relaxed(batch).expect("commit");
            // A relaxed write never waits, so let the other writers have their turn.
            tokio::task::yield_now().await;
        }
        latencies.push(started.elapsed());
        n += 1;
    }
    latencies
}
