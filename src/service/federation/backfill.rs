//! Backfill: `/messages` on a room whose stored history runs out asks the other servers in the
//! room for older events (`/backfill` from the events whose prev events we lack), checks them as
//! received PDUs (signatures, auth chain, the state before the oldest fetched with `/state_ids`),
//! stores them outside the timeline and indexes them in the room's older history.

use ruma::{OwnedServerName, RoomId, UInt, api::federation::backfill::get_backfill};

use crate::{
    error::Result,
    service::{
        Services,
        rooms::{
            history::{Direction, Messages, MessagesQuery},
            read::Viewer,
            remote::StateBefore,
        },
    },
};

/// Events asked for per `/backfill`.
const BACKFILL_LIMIT: u32 = 100;
/// Events named in `v`.
const MAX_FROM: usize = 5;

impl Services {
    /// `/messages`: the timeline, then backward into backfilled history (`from` a `b{number}`
    /// token continues there), fetching older events from other servers when stored history
    /// runs out.
    pub async fn room_messages(
        &self,
        viewer: Viewer<'_>,
        room_id: &RoomId,
        query: &MessagesQuery,
        backfilled_from: Option<u64>,
    ) -> Result<Messages> {
        let limit = query.limit.unwrap_or(10).clamp(1, 1000);
        let (mut body, after) = match backfilled_from {
            Some(number) if query.dir == Direction::Backward => {
                self.rooms.check_history_readable(viewer.user, room_id)?;
                let start = format!("b{number}");
                (Messages { chunk: Vec::new(), start, end: None, state: Vec::new() }, number)
            }
            // Forward from older history: the timeline from its start.
            Some(_) => {
                let query = MessagesQuery { from: None, ..query.clone() };
                return self.rooms.messages(viewer, room_id, &query);
            }
            None => {
                let body = self.rooms.messages(viewer, room_id, query)?;
                if query.dir != Direction::Backward || query.to.is_some() || body.end.is_some() {
                    return Ok(body);
                }
                (body, 0)
            }
        };
        let wanted = limit.saturating_sub(body.chunk.len());
        let mut page = self.rooms.backfilled_page(viewer, room_id, after, wanted, &query.filter)?;
        if !page.more && page.events.len() < wanted && page.fetchable {
            if let Err(e) = self.backfill_room(room_id).await {
                tracing::info!(room = %room_id, error = %e, "backfill failed");
            }
            page = self.rooms.backfilled_page(viewer, room_id, after, wanted, &query.filter)?;
        }
        body.chunk.extend(page.events);
        if page.more || page.fetchable {
            body.end = Some(format!("b{}", page.last));
        }
        Ok(body)
    }

    /// Asks the other servers in the room, one after another, for the events before those whose
    /// prev events we lack, and stores what comes back.
    pub async fn backfill_room(&self, room_id: &RoomId) -> Result<()> {
        let Some(room) = self.rooms.room(room_id)? else { return Ok(()) };
        if room.backfill_from.is_empty() {
            return Ok(());
        }
        let from: Vec<_> = room.backfill_from.iter().take(MAX_FROM).cloned().collect();
        let servers: Vec<OwnedServerName> = self.rooms.remote_servers_in_room(room_id)?;
        for server in &servers {
            let request = get_backfill::v1::Request::new(room_id.to_owned(), from.clone(), UInt::from(BACKFILL_LIMIT));
            let response = match self.federation.client.send(server, request).await {
                Ok(response) => response,
                Err(e) => {
                    tracing::info!(%server, room = %room_id, error = %e, "backfill request failed");
                    continue;
                }
            };
            let mut events = self.checked_events(room_id, &room.version, response.pdus.iter().map(|r| &**r)).await;
            events.sort_by_key(|built| built.pdu.depth);
            let mut stored = Vec::new();
            for built in events {
                let event_id = built.pdu.event_id.clone();
                if self.rooms.event_status(&event_id)?.is_some_and(|s| s != crate::storage::EventStatus::Outlier) {
                    continue;
                }
                let outcome = async {
                    self.fetch_auth_chain(server, &room.version, &built.pdu).await?;
                    let before = if self.rooms.prev_events_without_state(&built.pdu)?.is_empty() {
                        StateBefore::PrevEvents
                    } else {
                        StateBefore::Given(self.fetch_state_before(server, &room.version, &built.pdu).await?)
                    };
                    self.rooms.accept_backfilled(built, before).await
                }
                .await;
                match outcome {
                    Ok(Some(placed)) => stored.push(placed),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::info!(%server, event = %event_id, error = %e, "a backfilled event was not stored")
                    }
                }
            }
            let count = stored.len();
            self.rooms.index_backfilled(room_id, stored).await?;
            tracing::info!(%server, room = %room_id, count, "backfilled");
            if count > 0 {
                return Ok(());
            }
        }
        Ok(())
    }
}
