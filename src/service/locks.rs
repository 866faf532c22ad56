//! One async lock per key (per room), created on demand and dropped when nobody holds or waits for
//! it, so the table only holds what is in use.

use std::{collections::HashMap, hash::Hash, sync::Arc};

use tokio::sync::{Mutex, OwnedMutexGuard};

pub struct KeyedLocks<K: Eq + Hash + Clone> {
    locks: std::sync::Mutex<HashMap<K, Arc<Mutex<()>>>>,
}

impl<K: Eq + Hash + Clone> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self { locks: std::sync::Mutex::new(HashMap::new()) }
    }
}

pub struct KeyedGuard<'a, K: Eq + Hash + Clone> {
    locks: &'a KeyedLocks<K>,
    key: K,
    mutex: Arc<Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    pub async fn lock(&self, key: &K) -> KeyedGuard<'_, K> {
        let mutex = self.locks.lock().expect("lock table").entry(key.clone()).or_default().clone();
        let guard = mutex.clone().lock_owned().await;
        KeyedGuard { locks: self, key: key.clone(), mutex, guard: Some(guard) }
    }
}

impl<K: Eq + Hash + Clone> Drop for KeyedGuard<'_, K> {
    fn drop(&mut self) {
        self.guard.take();
        let mut table = self.locks.locks.lock().expect("lock table");
        // Only the table and this guard hold it: nobody waits, so the entry can go. Anyone else
        // would have to take it from the table, which we hold locked.
        if Arc::strong_count(&self.mutex) == 2 {
            table.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::KeyedLocks;

    #[tokio::test]
    async fn one_key_at_a_time_and_the_table_empties() {
        let locks = Arc::new(KeyedLocks::<u32>::default());
        let counter = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (locks, counter) = (locks.clone(), counter.clone());
                tokio::spawn(async move {
                    let _guard = locks.lock(&1).await;
                    let seen = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), seen + 1, "held alone");
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let _other = locks.lock(&2).await;
        assert_eq!(locks.locks.lock().unwrap().len(), 1);
    }
}
