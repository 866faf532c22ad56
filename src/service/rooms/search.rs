//! Server-side search (`/search`, the `room_events` category): messages, names and topics in the
//! rooms the user is in, matched word by word (every word of the term must begin a word of the
//! text, as Synapse's full-text search does), newest or best first, with context.
//!
//! There is no index yet: a search reads the timelines of the searched rooms, at most
//! `MAX_EVENTS_SCANNED` events per request.

use std::collections::BTreeSet;

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::{
    Rooms,
    history::{Direction, MessagesQuery},
    read::Viewer,
};
use crate::{
    error::{Error, Result},
    service::filters::RoomEventFilter,
};

/// Results per page when the filter gives no limit.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// Events read per search at most, across all rooms.
const MAX_EVENTS_SCANNED: usize = 200_000;
/// Most context events on either side.
const MAX_CONTEXT: usize = 20;

/// The `room_events` criteria of a search.
pub struct SearchQuery {
    pub search_term: String,
    /// `content.body`, `content.name`, `content.topic`; all three by default.
    pub keys: Option<Vec<String>>,
    pub filter: RoomEventFilter,
    pub order_by_rank: bool,
    /// `(before_limit, after_limit)` when context is asked for.
    pub context: Option<(usize, usize)>,
    /// `next_batch` of a previous page.
    pub next_batch: Option<String>,
}

struct Hit {
    room_id: OwnedRoomId,
    position: u64,
    short: u64,
    rank: f64,
}

impl Rooms {
    /// One page of results, shaped as the spec's `room_events` category.
    pub fn search(&self, user: &UserId, device: Option<&ruma::DeviceId>, query: &SearchQuery) -> Result<Value> {
        let words = words(&query.search_term);
        if words.is_empty() {
            return Err(Error::bad_json("search_term must contain a word"));
        }
        let keys = query
            .keys
            .clone()
            .unwrap_or_else(|| ["content.body", "content.name", "content.topic"].map(str::to_owned).to_vec());
        if let Some(key) =
            keys.iter().find(|k| !matches!(k.as_str(), "content.body" | "content.name" | "content.topic"))
        {
            return Err(Error::invalid_param(format!("Unknown search key {key}")));
        }
        let skip = match &query.next_batch {
            None => 0,
            Some(token) => token
                .strip_prefix('r')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| Error::invalid_param("Unknown next_batch"))?,
        };
        let limit = query.filter.limit.map_or(DEFAULT_LIMIT, |l| l as usize).clamp(1, MAX_LIMIT);
        let viewer = Viewer { user, device };

        let mut hits = Vec::new();
        let mut scanned = 0;
        for room_id in self.searched_rooms(user, &query.filter)? {
            let Some(room) = self.room(&room_id)? else { continue };
            let until = self.storage.stream_position();
            for (position, short) in self.storage.timeline(room.short_id, 0, until)?.into_iter().rev() {
                scanned += 1;
                if scanned > MAX_EVENTS_SCANNED {
                    break;
                }
                let Some(pdu) = self.event(short)? else { continue };
                let kind = pdu.kind.to_string();
                let field = match kind.as_str() {
                    "m.room.message" => "content.body",
                    "m.room.name" => "content.name",
                    "m.room.topic" => "content.topic",
                    _ => continue,
                };
                if !keys.iter().any(|k| k == field)
                    || !query.filter.allows(&kind, &pdu.sender, &room_id, &Value::Object(pdu.content_map()))
                {
                    continue;
                }
                let content = pdu.content_map();
                let Some(text) = content.get(field.trim_start_matches("content.")).and_then(Value::as_str) else {
                    continue;
                };
                let Some(rank) = match_rank(&words, text) else { continue };
                if self.can_see(user, &room_id, short, &pdu, position)? {
                    hits.push(Hit { room_id: room_id.clone(), position, short, rank });
                }
            }
        }
        if query.order_by_rank {
            hits.sort_by(|a, b| b.rank.total_cmp(&a.rank).then(b.position.cmp(&a.position)));
        } else {
            hits.sort_by_key(|hit| std::cmp::Reverse(hit.position));
        }

        let count = hits.len();
        let page: Vec<&Hit> = hits.iter().skip(skip).take(limit).collect();
        let mut results = Vec::new();
        for hit in &page {
            let Some(stored) = self.storage.event(hit.short)? else { continue };
            let mut result = json!({ "rank": hit.rank, "result": self.client_event(&stored, Some(viewer))? });
            if let Some((before, after)) = query.context {
                result["context"] = self.search_context(viewer, &hit.room_id, hit.position, before, after)?;
            }
            results.push(result);
        }
        let mut category = json!({ "count": count, "results": results, "highlights": words });
        // Synapse offers a next page whenever this one is full.
        if page.len() == limit {
            category["next_batch"] = json!(format!("r{}", skip + limit));
        }
        Ok(category)
    }

    /// The rooms searched: those the user is joined to, within the filter's rooms.
    fn searched_rooms(&self, user: &UserId, filter: &RoomEventFilter) -> Result<BTreeSet<OwnedRoomId>> {
        Ok(self
            .joined_rooms(user)?
            .into_iter()
            .filter(|room| filter.rooms.as_ref().is_none_or(|rooms| rooms.contains(room)))
            .filter(|room| !filter.not_rooms.contains(room))
            .collect())
    }

    fn search_context(
        &self,
        viewer: Viewer<'_>,
        room_id: &RoomId,
        position: u64,
        before: usize,
        after: usize,
    ) -> Result<Value> {
        let room = self.room_exists(room_id)?;
        let until = self.storage.stream_position();
        let side = |dir, low, high, limit: usize| -> Result<Vec<Value>> {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let query = MessagesQuery { from: None, to: None, dir, limit: None, filter: RoomEventFilter::default() };
            let page = self.page(viewer, room_id, room.short_id, low, high, limit.min(MAX_CONTEXT), &query)?;
            page.events.into_iter().map(|(_, event)| event.into_value()).collect()
        };
        let events_before = side(Direction::Backward, 0, position.saturating_sub(1), before)?;
        let events_after = side(Direction::Forward, position, until, after)?;
        Ok(json!({
            "events_before": events_before,
            "events_after": events_after,
            "profile_info": Map::new(),
        }))
    }
}

/// The lowercase words of a text.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Whether every search word begins a word of the text; the rank grows with how many of the
/// text's words match (exact matches count double).
fn match_rank(search: &[String], text: &str) -> Option<f64> {
    let text = words(text);
    let mut rank = 0.0;
    for word in search {
        let exact = text.iter().filter(|w| *w == word).count();
        let prefix = text.iter().filter(|w| w.starts_with(word.as_str())).count();
        if prefix == 0 {
            return None;
        }
        rank += (exact + prefix) as f64;
    }
    Some(rank / (text.len() as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::{match_rank, words};

    #[test]
    fn every_word_must_begin_a_word_of_the_text() {
        let search = words("Message 4");
        assert!(match_rank(&search, "Message number 4").is_some());
        assert!(match_rank(&search, "Message number 14").is_none());
        assert!(match_rank(&search, "message number 42").is_some(), "prefixes match, whatever the case");
        assert!(match_rank(&words("hello"), "hello, world").is_some());
        assert!(match_rank(&words("world"), "hello, worldwide").is_some());
        assert!(match_rank(&words("orld"), "hello, world").is_none());
        let exact = match_rank(&words("cat"), "a cat").unwrap();
        let prefix = match_rank(&words("cat"), "a catalogue").unwrap();
        assert!(exact > prefix);
    }
}
