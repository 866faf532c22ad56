//! Group commit: one thread applies every durable write. Batches that arrive while a write (and
//! its fsync) is in progress queue up and go out together in the next write, so N concurrent
//! writers share one fsync instead of paying N. The writer also assigns stream positions and
//! persists sequence counters (`sequence`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use tokio::sync::oneshot;

use super::{
    Batch, Column, StorageError,
    engine::Engine,
    key,
    sequence::{STREAM_POSITION, Sequence, Sequences},
};

/// Most batches merged into one write; bounds the latency a group adds to its first member.
const MAX_GROUP: usize = 256;

/// What a committed batch learns: the stream positions it asked for, in order.
pub type Committed = Vec<u64>;

struct Job {
    batch: Batch,
    done: oneshot::Sender<Result<Committed, StorageError>>,
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
    pub fn start(engine: Arc<dyn Engine>, sequences: Arc<Sequences>) -> Self {
        let (queue, jobs) = mpsc::channel::<Job>();
        let stats = Arc::new(WriteStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("myelin-writer".into())
            .spawn(move || Writer::new(&*engine, &sequences, &thread_stats).run(&jobs))
            .expect("spawning the writer thread");
        Self { queue: Some(queue), thread: Some(thread), stats }
    }

    pub fn stats(&self) -> &WriteStats {
        &self.stats
    }

    /// Queues a batch and waits until it is durable.
    pub async fn commit(&self, batch: Batch) -> Result<Committed, StorageError> {
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

struct Writer<'a> {
    engine: &'a dyn Engine,
    sequences: &'a Sequences,
    stats: &'a WriteStats,
    /// The highest value of each sequence persisted so far.
    persisted: [u64; Sequence::ALL.len()],
}

impl<'a> Writer<'a> {
    fn new(engine: &'a dyn Engine, sequences: &'a Sequences, stats: &'a WriteStats) -> Self {
        Self { engine, sequences, stats, persisted: [0; Sequence::ALL.len()] }
    }

    fn run(&mut self, jobs: &mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.write(group);
        }
    }

    fn write(&mut self, group: Vec<Job>) {
        let before = self.sequences.position.load(Ordering::Acquire);
        let mut position = before;
        let mut batches = Vec::with_capacity(group.len() + 1);
        let mut waiters = Vec::with_capacity(group.len());
        for Job { mut batch, done } in group {
            let committed: Committed = std::mem::take(&mut batch.positioned)
                .into_iter()
                .map(|build| {
                    position += 1;
                    build(position, &mut batch);
                    position
                })
                .collect();
            batches.push(batch);
            waiters.push((done, committed));
        }
        batches.push(self.sequence_updates(&batches, (position > before).then_some(position)));

        let result = self.engine.write(&batches, true);
        match &result {
            Ok(()) => {
                self.sequences.position.store(position, Ordering::Release);
                for (persisted, batch_max) in
                    self.persisted.iter_mut().zip(batches.last().expect("pushed above").sequence_max)
                {
                    *persisted = (*persisted).max(batch_max);
                }
            }
            Err(e) => tracing::error!(error = %e, batches = batches.len(), "durable write failed"),
        }
        self.stats.groups.fetch_add(1, Ordering::Relaxed);
        self.stats.batches.fetch_add(waiters.len() as u64, Ordering::Relaxed);
        for (done, committed) in waiters {
            // A waiter that gave up (its request was dropped) no longer needs the answer.
            let _ = done.send(result.clone().map(|()| committed));
        }
    }

    /// A batch that persists the new high-water marks of the sequences the group used.
    fn sequence_updates(&self, batches: &[Batch], position: Option<u64>) -> Batch {
        let mut updates = Batch::new();
        for sequence in Sequence::ALL {
            let used = batches.iter().map(|b| b.sequence_max[sequence.index()]).max().unwrap_or(0);
            if used > self.persisted[sequence.index()] {
                let (key, value) = Sequences::meta_entry(sequence, used);
                updates.put(Column::Meta, key, value);
                updates.uses(sequence, used);
            }
        }
        if let Some(position) = position {
            updates.put(Column::Meta, key::meta(STREAM_POSITION), position.to_be_bytes().to_vec());
        }
        updates
    }
}
