//! Sending to other servers: a queue per destination, delivered in transactions.
//!
//! **Queues.** PDUs and the EDUs that must not be lost (receipts, to-device messages, device-list
//! updates) wait in RocksDB (`OutboundPdus`, `OutboundEdus`), written in the same atomic batch as
//! the change they carry: an event a client was told about is queued for every server in its room,
//! or was never stored. Typing and presence are ephemeral: they wait in memory, newer updates
//! replacing older ones, and a restart forgets them.
//!
//! **Transactions.** One task per destination with something to send, spawned when something is
//! queued and ended when its queue is empty. It takes the oldest PDUs (at most [`MAX_PDUS`]) and
//! EDUs (at most [`MAX_EDUS`], in-memory ones first) into a transaction with a new ID and sends it
//! (`PUT /_matrix/federation/v1/send/{txnId}`); one transaction is in flight per destination, so
//! events arrive in the order they were stored. Queue entries are deleted once the destination
//! answered 200; the per-PDU errors of that answer are logged, never retried.
//!
//! **Retries.** A failed transaction is sent again, unchanged (same ID, same content, so that a
//! receiver which did process it sees a duplicate), after `retry_min_ms`, doubling up to
//! `retry_max_secs`; a success resets the wait. A request from the destination
//! ([`Sender::destination_alive`], called by the X-Matrix extractor) ends the wait at once.
//!
//! **Servers down for long.** A destination that has failed for `catch_up_after_secs` (an hour by
//! default) has its queues trimmed at each further failure, so
//! that a server gone for days does not grow them without bound: of its PDUs only the latest of
//! each room stays (as Synapse's "catch-up" mode: the receiver fetches what it lacks before that
//! event with `/get_missing_events`, and older history with `/backfill`), and of its EDUs only the
//! newest [`MAX_EDUS_KEPT`] (receipts are superseded by later ones, device lists are refetched by
//! a receiver that sees a gap; older to-device messages are lost, as they would be to a device
//! that stays offline). In-memory typing and presence for it are dropped. Between two trims a
//! queue grows by at most what the room traffic of one backoff interval (`retry_max_secs`) adds.
//!
//! **Restarts.** Nothing is polled: tasks wait on a `Notify` or a timer. At start,
//! [`Sender::resume`] wakes every destination with something queued. At shutdown,
//! [`Sender::shutdown`] stops the tasks (a transaction in flight is abandoned and sent again after
//! the restart, which receivers deduplicate by event ID) and waits for them to let go of the
//! database.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedTransactionId, OwnedUserId,
    ServerName, UInt,
    api::federation::transactions::{
        edu::{Edu, PresenceContent, PresenceUpdate, TypingContent},
        send_transaction_message,
    },
    serde::Raw,
};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::{sync::Notify, task::JoinSet};

use super::{client::FederationClient, discovery::BoxFuture};
use crate::{
    error::{Error, Result},
    service::now_ms,
    storage::{Batch, QueuedPdu, Sequence, Storage},
};

/// Most PDUs in one transaction (the spec's limit).
pub const MAX_PDUS: usize = 50;
/// Most EDUs in one transaction (the spec's limit).
pub const MAX_EDUS: usize = 100;

/// EDUs a trim keeps for a destination (the newest).
pub const MAX_EDUS_KEPT: usize = 1_000;

/// A transaction for one destination. Its ID and content stay the same across retries.
#[derive(Debug)]
pub struct Transaction {
    pub id: OwnedTransactionId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub pdus: Vec<Box<RawValue>>,
    pub edus: Vec<Raw<Edu>>,
    /// Queue entries it carries, deleted once it is delivered.
    pdu_numbers: Vec<u64>,
    edu_numbers: Vec<u64>,
}

/// The destination's verdict on each PDU of a transaction.
pub type PduResults = BTreeMap<OwnedEventId, std::result::Result<(), String>>;

/// How transactions reach a destination: the federation client, or a fake in tests.
pub trait Transport: Send + Sync + 'static {
    fn send_transaction<'a>(
        &'a self,
        destination: &'a ServerName,
        transaction: &'a Transaction,
    ) -> BoxFuture<'a, Result<PduResults>>;
}

impl Transport for FederationClient {
    fn send_transaction<'a>(
        &'a self,
        destination: &'a ServerName,
        transaction: &'a Transaction,
    ) -> BoxFuture<'a, Result<PduResults>> {
        Box::pin(async move {
            let mut request = send_transaction_message::v1::Request::new(
                transaction.id.clone(),
                self.server_name().to_owned(),
                transaction.origin_server_ts,
            );
            request.pdus = transaction.pdus.clone();
            request.edus = transaction.edus.clone();
            Ok(self.send(destination, request).await?.pdus)
        })
    }
}

/// The wait before retrying: `min` after the first failure, doubling, at most `max`; and how long
/// a destination fails before its queues are trimmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    pub catch_up_after: Duration,
}

impl Backoff {
    /// The backoff of outbound deliveries other than federation's (application services, push
    /// gateways): the federation settings, without catch-up.
    pub fn outbound(config: &crate::config::Config) -> Self {
        Self {
            min: Duration::from_millis(config.federation.retry_min_ms),
            max: Duration::from_secs(config.federation.retry_max_secs),
            catch_up_after: Duration::MAX,
        }
    }

    /// The wait after `failures` failures in a row (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.min.saturating_mul(factor).min(self.max)
    }
}

/// Typing and presence waiting for a destination: the latest of each only.
#[derive(Default)]
struct Ephemeral {
    typing: BTreeMap<(OwnedRoomId, OwnedUserId), bool>,
    presence: BTreeMap<OwnedUserId, PresenceUpdate>,
}

impl Ephemeral {
    /// Takes up to `limit` EDUs: typing notifications, then one `m.presence` with every update.
    fn take(&mut self, limit: usize) -> Vec<Raw<Edu>> {
        let mut edus = Vec::new();
        while edus.len() < limit {
            let Some(((room_id, user_id), typing)) = self.typing.pop_first() else { break };
            edus.extend(raw_edu(&Edu::Typing(TypingContent::new(room_id, user_id, typing))));
        }
        if edus.len() < limit && !self.presence.is_empty() {
            let push = std::mem::take(&mut self.presence).into_values().collect();
            edus.extend(raw_edu(&Edu::Presence(PresenceContent::new(push))));
        }
        edus
    }
}

fn raw_edu(edu: &Edu) -> Option<Raw<Edu>> {
    Raw::new(edu).map_err(|e| tracing::error!(error = %e, "an EDU does not serialize")).ok()
}

/// Where a destination's scans of one queue start: above what was delivered, so that they do not
/// step over the tombstones of deleted entries (which RocksDB keeps until a compaction drops them,
/// and which a busy queue piles up by the hundred thousand).
///
/// Numbers are allocated before their batch commits, so an entry may become visible below where
/// the last scan reached; its `wake` (after the commit) lowers the start again. A scan resets
/// `woken`; after a delivery the start moves past the delivered entries, but never above a number
/// woken meanwhile.
#[derive(Default)]
struct Floor {
    start: u64,
    /// The lowest number woken since the last scan.
    woken: Option<u64>,
}

impl Floor {
    fn woken(&mut self, number: u64) {
        self.start = self.start.min(number);
        self.woken = Some(self.woken.map_or(number, |w| w.min(number)));
    }

    /// Where the next scan starts.
    fn scan(&mut self) -> u64 {
        self.woken = None;
        self.start
    }

    /// The entries of the last scan up to `last` were delivered.
    fn delivered(&mut self, last: Option<u64>) {
        if let Some(last) = last {
            self.start = last.saturating_add(1).min(self.woken.unwrap_or(u64::MAX));
        }
    }
}

/// What the sender knows of a destination it sent to since the start.
#[derive(Default)]
struct DestinationState {
    /// Its task runs.
    running: bool,
    /// Something was queued since the task last read the queue.
    dirty: bool,
    /// The task waits to retry; `destination_alive` cuts the wait short through `retry_now`.
    backing_off: bool,
    retry_now: Arc<Notify>,
    ephemeral: Ephemeral,
    pdus: Floor,
    edus: Floor,
}

/// What `queue_pdu` and `queue_edu` staged, for [`Sender::wake`] once the batch is committed.
#[derive(Debug, Default)]
#[must_use = "wake the destinations once the batch is committed"]
pub struct Queued {
    pdus: Vec<(OwnedServerName, u64)>,
    edus: Vec<(OwnedServerName, u64)>,
}

impl Queued {
    pub fn is_empty(&self) -> bool {
        self.pdus.is_empty() && self.edus.is_empty()
    }

    /// Adds what another call queued (in the same batch).
    pub fn extend(&mut self, other: Queued) {
        self.pdus.extend(other.pdus);
        self.edus.extend(other.edus);
    }

    /// The destinations something was queued for (with repeats).
    pub fn destinations(&self) -> impl Iterator<Item = &ServerName> {
        self.pdus.iter().chain(&self.edus).map(|(destination, _)| &**destination)
    }
}

struct Inner {
    storage: Arc<Storage>,
    transport: Arc<dyn Transport>,
    server_name: OwnedServerName,
    backoff: Backoff,
    /// Every destination queued for since the start (a few numbers each).
    destinations: Mutex<HashMap<OwnedServerName, DestinationState>>,
    tasks: Mutex<JoinSet<()>>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Transaction IDs are `{start}.{n}`: unique across restarts, since each start has its own.
    txn_prefix: u64,
    txn_counter: AtomicU64,
}

/// The outbound queues and their delivery (see the module's documentation).
pub struct Sender {
    inner: Arc<Inner>,
}

impl Sender {
    pub fn new(
        storage: Arc<Storage>,
        transport: Arc<dyn Transport>,
        server_name: OwnedServerName,
        backoff: Backoff,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                storage,
                transport,
                server_name,
                backoff,
                destinations: Mutex::new(HashMap::new()),
                tasks: Mutex::new(JoinSet::new()),
                stop: tokio::sync::watch::channel(false).0,
                txn_prefix: now_ms(),
                txn_counter: AtomicU64::new(0),
            }),
        }
    }

    /// Stages an event (by short ID) for each destination into `batch`; once the batch is
    /// committed, pass the result to [`wake`]. Our own server is skipped. Events queued in one
    /// room are sent in the order they were queued. `Rooms::append` queues the events it writes;
    /// this is for events stored by other paths.
    ///
    /// [`wake`]: Self::wake
    pub fn queue_pdu<'a>(
        &self,
        batch: &mut Batch,
        destinations: impl IntoIterator<Item = &'a ServerName>,
        short_event: u64,
    ) -> Queued {
        let mut queued = Queued::default();
        for destination in destinations.into_iter().filter(|d| *d != self.inner.server_name) {
            let number = self.inner.storage.allocate(batch, Sequence::Outbound);
            batch.queue_outbound_pdu(destination.as_str(), QueuedPdu { number, short_event });
            queued.pdus.push((destination.to_owned(), number));
        }
        queued
    }

    /// Stages a persistent EDU (ruma's `Edu`, or JSON `{"edu_type", "content"}` for the types
    /// ruma does not carry as we send them) for each destination into `batch`; once the batch is
    /// committed, pass the result to [`wake`].
    ///
    /// [`wake`]: Self::wake
    pub fn queue_edu<'a>(
        &self,
        batch: &mut Batch,
        destinations: impl IntoIterator<Item = &'a ServerName>,
        edu: &impl Serialize,
    ) -> Result<Queued> {
        let edu = serde_json::value::to_raw_value(edu).map_err(|e| Error::internal(format!("EDU: {e}")))?;
        let mut queued = Queued::default();
        for destination in destinations.into_iter().filter(|d| *d != self.inner.server_name) {
            let number = self.inner.storage.allocate(batch, Sequence::Outbound);
            batch.queue_outbound_edu(destination.as_str(), number, &edu);
            queued.edus.push((destination.to_owned(), number));
        }
        Ok(queued)
    }

    /// Tells the destinations' tasks what was committed to their queues, starting those that
    /// are not running. Call it after the commit, never before.
    pub fn wake(&self, queued: &Queued) {
        for (destination, number) in &queued.pdus {
            self.inner.touch(destination, |state| state.pdus.woken(*number));
        }
        for (destination, number) in &queued.edus {
            self.inner.touch(destination, |state| state.edus.woken(*number));
        }
    }

    /// Sends typing notifications of a room (in memory: a restart forgets them).
    pub fn queue_typing<'a>(
        &self,
        destinations: impl IntoIterator<Item = &'a ServerName>,
        room_id: &ruma::RoomId,
        user_id: &ruma::UserId,
        typing: bool,
    ) {
        for destination in destinations {
            self.inner.touch(destination, |state| {
                state.ephemeral.typing.insert((room_id.to_owned(), user_id.to_owned()), typing);
            });
        }
    }

    /// Sends a user's presence (in memory; a newer update replaces an older one not yet sent).
    pub fn queue_presence<'a>(&self, destinations: impl IntoIterator<Item = &'a ServerName>, update: &PresenceUpdate) {
        for destination in destinations {
            self.inner.touch(destination, |state| {
                state.ephemeral.presence.insert(update.user_id.clone(), update.clone());
            });
        }
    }

    /// The destination just sent us an authenticated request: if its transactions wait to be
    /// retried, retry now.
    pub fn destination_alive(&self, destination: &ServerName) {
        let destinations = self.inner.destinations.lock().expect("sender lock");
        if let Some(state) = destinations.get(destination)
            && state.running
            && state.backing_off
        {
            tracing::debug!(%destination, "destination is back: retrying now");
            state.retry_now.notify_one();
        }
    }

    /// Starts delivering what was queued before the last shutdown. Call it once, at start.
    pub fn resume(&self) -> Result<()> {
        let destinations = self.inner.storage.outbound_destinations()?;
        if !destinations.is_empty() {
            tracing::info!(destinations = destinations.len(), "resuming outbound federation queues");
        }
        for destination in destinations {
            match OwnedServerName::try_from(destination.as_str()) {
                Ok(name) => self.inner.touch(&name, |state| {
                    state.pdus.woken(0);
                    state.edus.woken(0);
                }),
                Err(_) => tracing::error!(%destination, "a queue names an invalid server; ignored"),
            }
        }
        Ok(())
    }

    /// Stops every task and waits for them to end. What they did not deliver stays queued.
    pub async fn shutdown(&self) {
        {
            // Under the lock that spawning holds: no task starts after this.
            let _destinations = self.inner.destinations.lock().expect("sender lock");
            self.inner.stop.send_replace(true);
        }
        let mut tasks = std::mem::take(&mut *self.inner.tasks.lock().expect("sender tasks lock"));
        while tasks.join_next().await.is_some() {}
    }

    /// Destinations whose task runs now (for tests and diagnostics).
    pub fn active_destinations(&self) -> Vec<OwnedServerName> {
        let destinations = self.inner.destinations.lock().expect("sender lock");
        destinations.iter().filter(|(_, state)| state.running).map(|(name, _)| name.clone()).collect()
    }
}

impl Inner {
    /// Marks a destination as having something new (after `change`, under the lock) and starts
    /// its task if none runs.
    fn touch(self: &Arc<Self>, destination: &ServerName, change: impl FnOnce(&mut DestinationState)) {
        if destination == self.server_name {
            return;
        }
        let mut destinations = self.destinations.lock().expect("sender lock");
        if *self.stop.borrow() {
            return;
        }
        let state = destinations.entry(destination.to_owned()).or_default();
        change(state);
        state.dirty = true;
        if state.running {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(%destination, "no runtime to send to another server from");
            return;
        };
        state.running = true;
        let mut tasks = self.tasks.lock().expect("sender tasks lock");
        while tasks.try_join_next().is_some() {}
        tasks.spawn_on(self.clone().run(destination.to_owned()), &runtime);
    }

    /// A destination's task: sends transactions until the queue is empty or the server stops.
    async fn run(self: Arc<Self>, destination: OwnedServerName) {
        let mut stop = self.stop.subscribe();
        let mut failures = 0u32;
        let mut down_since: Option<std::time::Instant> = None;
        let mut pending: Option<Transaction> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let transaction = match pending.take() {
                Some(transaction) => transaction,
                None => match self.next_transaction(&destination) {
                    Ok(Some(transaction)) => transaction,
                    Ok(None) if self.finish(&destination) => return,
                    Ok(None) => continue,
                    Err(e) => {
                        failures += 1;
                        tracing::error!(%destination, error = %e, "reading the outbound queue failed");
                        if !self.back_off(&destination, failures, &mut stop).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let attempt = tokio::select! {
                attempt = self.transport.send_transaction(&destination, &transaction) => attempt,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            match attempt {
                Ok(results) => {
                    for (event_id, result) in results {
                        if let Err(error) = result {
                            tracing::warn!(%destination, %event_id, %error, "the destination refused an event");
                        }
                    }
                    tracing::debug!(
                        %destination,
                        txn = %transaction.id,
                        pdus = transaction.pdus.len(),
                        edus = transaction.edus.len(),
                        "transaction delivered"
                    );
                    if let Err(e) = self.delivered(&destination, &transaction) {
                        // The database is closing (or failing): what stays queued goes next time.
                        tracing::warn!(%destination, error = %e, "cannot remove delivered items from the queue");
                        return;
                    }
                    failures = 0;
                    down_since = None;
                }
                Err(e) => {
                    failures += 1;
                    tracing::info!(
                        %destination,
                        txn = %transaction.id,
                        failures,
                        retry_in = ?self.backoff.delay(failures),
                        error = %e,
                        "transaction failed"
                    );
                    let down_since = *down_since.get_or_insert_with(std::time::Instant::now);
                    if down_since.elapsed() >= self.backoff.catch_up_after {
                        // The entries it carries may go: the next one is built from what stays.
                        if let Err(e) = self.trim(&destination) {
                            tracing::warn!(%destination, error = %e, "cannot trim the outbound queues");
                        }
                    } else {
                        pending = Some(transaction);
                    }
                    if !self.back_off(&destination, failures, &mut stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// The next transaction from the destination's queues, or `None` when they are empty.
    fn next_transaction(&self, destination: &ServerName) -> Result<Option<Transaction>> {
        let (mut edus, pdus_from, edus_from) = {
            let mut destinations = self.destinations.lock().expect("sender lock");
            let state = destinations.get_mut(destination).expect("a running task has its entry");
            // Cleared before reading the queues: what is committed after this read marks it again.
            state.dirty = false;
            (state.ephemeral.take(MAX_EDUS), state.pdus.scan(), state.edus.scan())
        };
        let queued_pdus = self.storage.outbound_pdus(destination.as_str(), pdus_from, MAX_PDUS)?;
        let queued_edus = self.storage.outbound_edus(destination.as_str(), edus_from, MAX_EDUS - edus.len())?;
        if queued_pdus.is_empty() && queued_edus.is_empty() && edus.is_empty() {
            return Ok(None);
        }
        let mut pdus = Vec::with_capacity(queued_pdus.len());
        for queued in &queued_pdus {
            match self.storage.event(queued.short_event)? {
                Some(event) => pdus.push(event.pdu),
                None => tracing::error!(%destination, short = queued.short_event, "a queued event is gone; skipped"),
            }
        }
        let edu_numbers = queued_edus.iter().map(|queued| queued.number).collect();
        edus.extend(queued_edus.into_iter().map(|queued| Raw::from_json(queued.edu)));
        let n = self.txn_counter.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Transaction {
            id: format!("{}.{n}", self.txn_prefix).into(),
            origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::new_saturating(now_ms())),
            pdus,
            edus,
            pdu_numbers: queued_pdus.iter().map(|queued| queued.number).collect(),
            edu_numbers,
        }))
    }

    /// Deletes what a delivered transaction carried from the queues. Without waiting for an
    /// fsync: a deletion lost in a power cut only sends the entries again, which receivers
    /// deduplicate, and the next transaction goes sooner.
    fn delivered(&self, destination: &ServerName, transaction: &Transaction) -> Result<()> {
        let mut batch = Batch::new();
        for number in &transaction.pdu_numbers {
            batch.dequeue_outbound_pdu(destination.as_str(), *number);
        }
        for number in &transaction.edu_numbers {
            batch.dequeue_outbound_edu(destination.as_str(), *number);
        }
        self.storage.commit_relaxed(batch)?;
        let mut destinations = self.destinations.lock().expect("sender lock");
        let state = destinations.get_mut(destination).expect("a running task has its entry");
        state.pdus.delivered(transaction.pdu_numbers.last().copied());
        state.edus.delivered(transaction.edu_numbers.last().copied());
        Ok(())
    }

    /// Trims the queues of a destination that is down for long (see the module's documentation):
    /// the latest PDU of each room and the newest EDUs stay.
    fn trim(&self, destination: &ServerName) -> Result<()> {
        let pdus = self.storage.outbound_pdus(destination.as_str(), 0, usize::MAX)?;
        let mut rooms = Vec::with_capacity(pdus.len());
        let mut latest: HashMap<OwnedRoomId, u64> = HashMap::new();
        for queued in &pdus {
            let room = self.storage.event(queued.short_event)?.map(|event| event.room_id);
            if let Some(room) = &room {
                latest.insert(room.clone(), queued.number);
            }
            rooms.push(room);
        }
        let mut batch = Batch::new();
        let mut dropped_pdus = 0;
        for (queued, room) in pdus.iter().zip(rooms) {
            if room.is_none_or(|room| latest.get(&room) != Some(&queued.number)) {
                batch.dequeue_outbound_pdu(destination.as_str(), queued.number);
                dropped_pdus += 1;
            }
        }
        let edus = self.storage.outbound_edus(destination.as_str(), 0, usize::MAX)?;
        let dropped_edus = edus.len().saturating_sub(MAX_EDUS_KEPT);
        for queued in &edus[..dropped_edus] {
            batch.dequeue_outbound_edu(destination.as_str(), queued.number);
        }
        if let Some(state) = self.destinations.lock().expect("sender lock").get_mut(destination) {
            state.ephemeral = Ephemeral::default();
        }
        if dropped_pdus + dropped_edus > 0 {
            self.storage.commit_relaxed(batch)?;
            tracing::info!(%destination, dropped_pdus, dropped_edus, "down for long: trimmed its queues");
        }
        Ok(())
    }

    /// Ends the destination's task if nothing was queued since it last looked; says whether so.
    fn finish(&self, destination: &ServerName) -> bool {
        let mut destinations = self.destinations.lock().expect("sender lock");
        let state = destinations.get_mut(destination).expect("a running task has its entry");
        if state.dirty {
            return false;
        }
        state.running = false;
        true
    }

    /// Waits before a retry: the backoff, cut short by `destination_alive`. `false` when the
    /// server stops meanwhile.
    async fn back_off(
        &self,
        destination: &ServerName,
        failures: u32,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        let retry_now = {
            let mut destinations = self.destinations.lock().expect("sender lock");
            let state = destinations.get_mut(destination).expect("a running task has its entry");
            state.backing_off = true;
            state.retry_now.clone()
        };
        let go_on = tokio::select! {
            _ = tokio::time::sleep(self.backoff.delay(failures)) => true,
            _ = retry_now.notified() => true,
            _ = stop.wait_for(|stop| *stop) => false,
        };
        if let Some(state) = self.destinations.lock().expect("sender lock").get_mut(destination) {
            state.backing_off = false;
        }
        go_on
    }
}

#[cfg(test)]
mod receiver_tests;
#[cfg(test)]
mod tests;
