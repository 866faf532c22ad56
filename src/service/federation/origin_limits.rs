//! A cap on concurrent inbound federation work per origin, as Synapse's `rc_federation`: a few
//! requests of one server run at once, more wait their turn, and beyond a queue the rest are
//! refused with `429 M_LIMIT_EXCEEDED`, so one busy or hostile server cannot take every worker.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{OwnedServerName, ServerName};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, ErrorKind, Result};

/// How long a refused server is told to wait.
const RETRY_AFTER_MS: u64 = 1_000;

struct Slot {
    running: Arc<Semaphore>,
    /// Requests running or waiting; the entry goes when it drops to zero.
    holders: usize,
}

pub struct OriginLimits {
    concurrent: usize,
    queued: usize,
    slots: Arc<Mutex<HashMap<OwnedServerName, Slot>>>,
}

/// Held while a request of `origin` runs; the next waiting one starts when it drops.
pub struct OriginPermit {
    _permit: OwnedSemaphorePermit,
    _holder: Holder,
}

/// Counts a request in its origin's slot until dropped (waiting or running).
struct Holder {
    slots: Arc<Mutex<HashMap<OwnedServerName, Slot>>>,
    origin: OwnedServerName,
}

impl Drop for Holder {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().expect("origin limits");
        if let Some(slot) = slots.get_mut(&self.origin) {
            slot.holders -= 1;
            if slot.holders == 0 {
                slots.remove(&self.origin);
            }
        }
    }
}

impl OriginLimits {
    pub fn new(concurrent: usize, queued: usize) -> Self {
        Self { concurrent: concurrent.max(1), queued, slots: Arc::default() }
    }

    /// Waits for a turn of `origin`, or refuses at once when its queue is full.
    pub async fn acquire(&self, origin: &ServerName) -> Result<OriginPermit> {
        let (running, holder) = {
            let mut slots = self.slots.lock().expect("origin limits");
            let slot = slots
                .entry(origin.to_owned())
                .or_insert_with(|| Slot { running: Arc::new(Semaphore::new(self.concurrent)), holders: 0 });
            if slot.holders >= self.concurrent + self.queued {
                return Err(Error::new(
                    ErrorKind::LimitExceeded { retry_after_ms: RETRY_AFTER_MS },
                    format!("Too many concurrent requests from {origin}"),
                ));
            }
            slot.holders += 1;
            (slot.running.clone(), Holder { slots: self.slots.clone(), origin: origin.to_owned() })
        };
        let permit = running.acquire_owned().await.expect("the semaphore is never closed");
        Ok(OriginPermit { _permit: permit, _holder: holder })
    }

    /// Origins with requests running or waiting (for tests).
    pub fn origins(&self) -> usize {
        self.slots.lock().expect("origin limits").len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ruma::server_name;

    use super::*;

    #[tokio::test]
    async fn a_few_run_more_wait_the_rest_are_refused() {
        let limits = OriginLimits::new(2, 1);
        let origin = server_name!("busy.test");
        let first = limits.acquire(origin).await.unwrap();
        let _second = limits.acquire(origin).await.unwrap();
        // The third waits for a turn...
        let waiting = tokio::time::timeout(Duration::from_millis(50), limits.acquire(origin)).await;
        assert!(waiting.is_err(), "a third request must wait while two run");
        let queued = limits.acquire(origin);
        tokio::pin!(queued);
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut queued).await.is_err());
        // ...and with the queue full, a fourth is refused.
        let Err(refused) = limits.acquire(origin).await else { panic!("not refused") };
        assert!(matches!(refused.kind(), Some(ErrorKind::LimitExceeded { retry_after_ms: 1_000 })));
        // Another server is not affected.
        let _other = limits.acquire(server_name!("quiet.test")).await.unwrap();
        drop(first);
        let _third = tokio::time::timeout(Duration::from_secs(1), queued).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_table_empties() {
        let limits = OriginLimits::new(1, 0);
        let permit = limits.acquire(server_name!("a.test")).await.unwrap();
        assert_eq!(limits.origins(), 1);
        drop(permit);
        assert_eq!(limits.origins(), 0);
        // A waiter cancelled before its turn gives its place back too.
        let permit = limits.acquire(server_name!("a.test")).await.unwrap();
        let limits2 = &limits;
        let _ = tokio::time::timeout(Duration::from_millis(10), limits2.acquire(server_name!("a.test"))).await;
        drop(permit);
        assert_eq!(limits.origins(), 0);
    }
}
