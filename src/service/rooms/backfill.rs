//! History older than a room's timeline: events fetched from other servers with `/backfill`
//! (rooms joined through another server start at the join), read back by `/messages` after the
//! timeline runs out. Tokens into this history are `b{number}` (see the `backfill` column).

use ruma::RoomId;
use serde_json::Value;

use super::{ClientEvent, Rooms, read::Viewer};
use crate::{error::Result, service::filters::RoomEventFilter};

/// A page of backfilled history.
pub struct BackfilledPage {
    pub events: Vec<ClientEvent>,
    /// The number of the last event read (the next page starts after it).
    pub last: u64,
    /// More is stored past the page.
    pub more: bool,
    /// Older history may be fetched from other servers.
    pub fetchable: bool,
}

impl Rooms {
    /// Backfilled events after number `after`, older and older, that the user may see and the
    /// filter lets through, at most `limit`.
    pub fn backfilled_page(
        &self,
        viewer: Viewer<'_>,
        room_id: &RoomId,
        after: u64,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<BackfilledPage> {
        self.check_history_readable(viewer.user, room_id)?;
        let room = self.room_exists(room_id)?;
        let mut events = Vec::new();
        let mut last = after;
        loop {
            let chunk = self.storage.backfill(room.short_id, last, 64)?;
            if chunk.is_empty() {
                return Ok(BackfilledPage { events, last, more: false, fetchable: !room.backfill_from.is_empty() });
            }
            for (number, short) in chunk {
                let (Some(stored), Some(pdu)) = (self.storage.event(short)?, self.event(short)?) else { continue };
                let content: Value = serde_json::from_str(pdu.content.get()).unwrap_or_default();
                if !filter.allows(&pdu.kind.to_string(), &pdu.sender, room_id, &content)
                    || !self.can_see(viewer.user, room_id, short, &pdu, 0)?
                {
                    last = number;
                    continue;
                }
                if events.len() == limit {
                    return Ok(BackfilledPage { events, last, more: true, fetchable: !room.backfill_from.is_empty() });
                }
                events.push(self.timeline_event(&stored, viewer)?);
                last = number;
            }
        }
    }
}
