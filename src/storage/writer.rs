//! Group commit: one thread applies every durable write. Batches that arrive while a write (and
//! its fsync) is in progress queue up and go out together in the next write, so N concurrent
//! writers share one fsync instead of paying N.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use tokio::sync::oneshot;

use super::{Batch, StorageError, engine::Engine};

/// Most batches merged into one write; bounds the latency a group adds to its first member.
const MAX_GROUP: usize = 256;

struct Job {
    batch: Batch,
    done: oneshot::Sender<Result<(), StorageError>>,
}

pub(super) struct GroupCommit {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<WriteStats>,
}

/// Counts of what the writer did, for benchmarks and diagnostics.
#[derive(Default, Debug)]
pub struct WriteStats {
    /// Durable writes (each one fsync) so far.
    pub groups: AtomicU64,
    /// Batches they carried.
    pub batches: AtomicU64,
}

impl GroupCommit {
    pub fn start(engine: Arc<dyn Engine>) -> Self {
        let (queue, jobs) = mpsc::channel::<Job>();
        let stats = Arc::new(WriteStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("myelin-writer".into())
            .spawn(move || write_loop(&*engine, &jobs, &thread_stats))
            .expect("spawning the writer thread");
        Self { queue: Some(queue), thread: Some(thread), stats }
    }

    pub fn stats(&self) -> &WriteStats {
        &self.stats
    }

    /// Queues a batch and waits until it is durable.
    pub async fn commit(&self, batch: Batch) -> Result<(), StorageError> {
        let (done, result) = oneshot::channel();
        self.queue.as_ref().ok_or(StorageError::Closed)?.send(Job { batch, done }).map_err(|_| StorageError::Closed)?;
        result.await.map_err(|_| StorageError::Closed)?
    }

    /// Stops accepting batches, writes those already queued, and waits for the thread to end.
    pub fn close(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_loop(engine: &dyn Engine, jobs: &mpsc::Receiver<Job>, stats: &WriteStats) {
    while let Ok(first) = jobs.recv() {
        let mut batches = vec![first.batch];
        let mut waiters = vec![first.done];
        while batches.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => {
                    batches.push(job.batch);
                    waiters.push(job.done);
                }
                Err(_) => break,
            }
        }
        let result = engine.write(&batches, true);
        stats.groups.fetch_add(1, Ordering::Relaxed);
        stats.batches.fetch_add(batches.len() as u64, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, batches = batches.len(), "durable write failed");
        }
        for waiter in waiters {
            // A waiter that gave up (its request was dropped) no longer needs the answer.
            let _ = waiter.send(result.clone());
        }
    }
}
