//! Relations: edits (`m.replace`), threads (`m.thread`), references (`m.reference`) and
//! annotations. Relating events are indexed by their target when stored; `/relations` and
//! `/threads` read the index, and served events carry bundled aggregations in
//! `unsigned["m.relations"]`.

use std::sync::Arc;

use ruma::{EventId, OwnedEventId, RoomId};
use serde_json::{Map, Value, json};

use super::{Pdu, Rooms, cache::Relations, read::Viewer};
use crate::{
    error::{Error, Result},
    service::sync::SyncToken,
    storage::{Batch, RelationRecord},
};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;
/// How deep `recurse` follows relations of relations (the spec's minimum is 3).
const MAX_DEPTH: usize = 3;

/// The target and type of an event's `m.relates_to`, if it names both.
pub fn relation_of(pdu: &Pdu) -> Option<(OwnedEventId, String)> {
    // Stored content is canonical JSON (no needless escapes), so most events are told apart
    // without parsing them.
    if !pdu.content.get().contains("\"m.relates_to\"") {
        return None;
    }
    let content = pdu.content_map();
    let relates_to = content.get("m.relates_to")?.as_object()?;
    let rel_type = relates_to.get("rel_type")?.as_str()?;
    let target = EventId::parse(relates_to.get("event_id")?.as_str()?).ok()?;
    Some((target, rel_type.to_owned()))
}

/// What `/relations` is asked for.
pub struct RelationsQuery {
    pub rel_type: Option<String>,
    pub event_type: Option<String>,
    pub from: Option<SyncToken>,
    pub to: Option<SyncToken>,
    pub limit: Option<usize>,
    pub forward: bool,
    pub recurse: bool,
}

impl Rooms {
    /// Stages the index entries of a new event that relates to another (called with its stream
    /// position when the writer assigns it).
    pub(super) fn stage_relation(
        &self,
        pdu: &Pdu,
        short: u64,
        short_room: u64,
    ) -> Result<Option<impl FnOnce(u64, &mut Batch) + Send + 'static>> {
        let Some((target, rel_type)) = relation_of(pdu) else { return Ok(None) };
        let record = RelationRecord {
            event: short,
            rel_type: rel_type.clone(),
            kind: pdu.kind.to_string(),
            sender: pdu.sender.clone(),
        };
        // A thread reply moves its root up the room's thread list.
        let thread = if rel_type == "m.thread" {
            let root = self.storage.short_event_id(&target)?;
            let previous = self
                .storage
                .relations(&target)?
                .into_iter()
                .filter(|(_, r)| r.rel_type == "m.thread")
                .map(|(position, _)| position)
                .max()
                .or_else(|| root.and_then(|r| self.storage.event(r).ok().flatten()).map(|e| e.position));
            root.map(|root| (root, previous))
        } else {
            None
        };
        Ok(Some(move |position: u64, batch: &mut Batch| {
            batch.put_relation(&target, position, &record);
            if let Some((root, previous)) = thread {
                batch.touch_thread(short_room, root, previous, position);
            }
        }))
    }

    /// Removes a redacted event from the relations index.
    pub(super) fn unstage_relation(&self, batch: &mut Batch, pdu: &Pdu, position: u64) {
        if let Some((target, _)) = relation_of(pdu) {
            batch.delete_relation(&target, position);
        }
    }

    /// `unsigned["m.relations"]` of an event: its latest valid edit (none once it is redacted),
    /// its thread summary, and the events that reference it.
    pub fn aggregations(&self, event: &Pdu, redacted: bool, viewer: Option<Viewer<'_>>) -> Result<Option<Value>> {
        let relations = self.relations_of(&event.event_id)?;
        if relations.is_empty() {
            return Ok(None);
        }
        let mut bundle = Map::new();
        let visible = |short: u64, position: u64| -> Result<Option<std::sync::Arc<Pdu>>> {
            let Some(pdu) = self.event(short)? else { return Ok(None) };
            match viewer {
                Some(viewer) if !self.can_see(viewer.user, &event.room_id, short, &pdu, position)? => Ok(None),
                _ => Ok(Some(pdu)),
            }
        };
        // The latest valid edit (spec: "Validity of replacement events"): by the original sender,
        // of the same type, with `m.new_content`; neither of them a state event, and the original
        // not an edit itself.
        let editable = !redacted
            && event.state_key.is_none()
            && relation_of(event).is_none_or(|(_, rel_type)| rel_type != "m.replace");
        let candidates = relations.iter().rev().filter(|(_, r)| {
            editable && r.rel_type == "m.replace" && r.sender == event.sender && r.kind == event.kind.to_string()
        });
        for (position, record) in candidates {
            if let Some(pdu) = visible(record.event, *position)?
                && pdu.state_key.is_none()
                && pdu.content_map().get("m.new_content").is_some_and(Value::is_object)
                && let Some(edit) = self.cached_event(record.event)?
            {
                bundle.insert("m.replace".into(), self.client_event_plain(&edit, viewer)?);
                break;
            }
        }
        let replies: Vec<&(u64, RelationRecord)> = relations.iter().filter(|(_, r)| r.rel_type == "m.thread").collect();
        if let Some((position, latest)) = replies.last()
            && visible(latest.event, *position)?.is_some()
            && let Some(latest_event) = self.cached_event(latest.event)?
        {
            let participated =
                viewer.is_some_and(|v| event.sender == v.user || replies.iter().any(|(_, r)| r.sender == v.user));
            bundle.insert(
                "m.thread".into(),
                json!({
                    "latest_event": self.client_event_plain(&latest_event, viewer)?,
                    "count": replies.len(),
                    "current_user_participated": participated,
                }),
            );
        }
        let mut references = Vec::new();
        for (position, record) in relations.iter().filter(|(_, r)| r.rel_type == "m.reference") {
            if let Some(pdu) = visible(record.event, *position)? {
                references.push(json!({ "event_id": pdu.event_id }));
            }
        }
        if !references.is_empty() {
            bundle.insert("m.reference".into(), json!({ "chunk": references }));
        }
        Ok((!bundle.is_empty()).then_some(Value::Object(bundle)))
    }

    /// The events relating to an event (most have none), through the cache.
    fn relations_of(&self, target: &EventId) -> Result<Relations> {
        if let Some(relations) = self.caches.relations(target) {
            return Ok(relations);
        }
        let epoch = self.caches.epoch();
        let relations = Arc::new(self.storage.relations(target)?);
        self.caches.fill_relations(epoch, target, relations.clone());
        Ok(relations)
    }

    /// `/relations/{eventId}`: the events relating to one the user may see.
    pub fn relations_page(
        &self,
        viewer: Viewer<'_>,
        room_id: &RoomId,
        event_id: &EventId,
        query: &RelationsQuery,
    ) -> Result<Value> {
        self.visible_event(viewer, room_id, event_id)?;
        // Level by level: direct relations, then (recursing) relations of those, and so on. The
        // type filters apply at every level, so an event reached only through one that does not
        // match is left out (as the spec says).
        let max_depth = if query.recurse { MAX_DEPTH } else { 1 };
        let mut found = Vec::new();
        let mut depth = 0;
        let mut targets = vec![event_id.to_owned()];
        while !targets.is_empty() && depth < max_depth {
            depth += 1;
            let mut next = Vec::new();
            for target in &targets {
                for (position, record) in self.storage.relations(target)? {
                    let wanted = query.rel_type.as_ref().is_none_or(|t| *t == record.rel_type)
                        && query.event_type.as_ref().is_none_or(|t| *t == record.kind);
                    if wanted
                        && let Some(pdu) = self.event(record.event)?
                        && pdu.room_id == room_id
                    {
                        found.push((position, record.event));
                        next.push(pdu.event_id.clone());
                    }
                }
            }
            targets = next;
        }
        found.sort_unstable();
        found.dedup();
        if !query.forward {
            found.reverse();
        }
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let in_range = |position: u64| {
            let from = query.from.map(|t| t.position);
            let to = query.to.map(|t| t.position);
            if query.forward {
                from.is_none_or(|f| position > f) && to.is_none_or(|t| position <= t)
            } else {
                from.is_none_or(|f| position <= f) && to.is_none_or(|t| position > t)
            }
        };
        let mut chunk = Vec::new();
        let mut next = None;
        for (position, short) in found.into_iter().filter(|(p, _)| in_range(*p)) {
            let (Some(stored), Some(pdu)) = (self.storage.event(short)?, self.event(short)?) else { continue };
            if !self.can_see(viewer.user, room_id, short, &pdu, position)? {
                continue;
            }
            if chunk.len() == limit {
                next = Some(if query.forward { chunk_last_position(&chunk) } else { chunk_last_position(&chunk) - 1 });
                break;
            }
            chunk.push((position, self.timeline_event(&stored, viewer)?.into_value()?));
        }
        let mut body = json!({ "chunk": chunk.into_iter().map(|(_, e)| e).collect::<Vec<_>>() });
        if let Some(next) = next {
            body["next_batch"] = json!(SyncToken::new(next, 0).to_string());
        }
        if let Some(from) = query.from {
            body["prev_batch"] = json!(from.to_string());
        }
        if query.recurse {
            body["recursion_depth"] = json!(depth);
        }
        Ok(body)
    }

    /// `/threads`: the room's thread roots, most recently active first.
    pub fn threads_page(
        &self,
        viewer: Viewer<'_>,
        room_id: &RoomId,
        participated_only: bool,
        from: Option<SyncToken>,
        limit: Option<usize>,
    ) -> Result<Value> {
        let room = self.room(room_id)?.ok_or_else(|| Error::forbidden("You are not in this room"))?;
        self.readable_state(viewer.user, room_id)?;
        let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let mut before = from.map_or(u64::MAX, |t| t.position.saturating_add(1));
        let mut chunk = Vec::new();
        let mut next = None;
        'pages: loop {
            let page = self.storage.threads(room.short_id, before, 64)?;
            let Some(&(oldest, _)) = page.last() else { break };
            for (activity, root) in page {
                let (Some(stored), Some(pdu)) = (self.storage.event(root)?, self.event(root)?) else { continue };
                if !self.can_see(viewer.user, room_id, root, &pdu, stored.position)? {
                    continue;
                }
                if participated_only {
                    let replied = self
                        .storage
                        .relations(&pdu.event_id)?
                        .iter()
                        .any(|(_, r)| r.rel_type == "m.thread" && r.sender == viewer.user);
                    if pdu.sender != viewer.user && !replied {
                        continue;
                    }
                }
                if chunk.len() == limit {
                    next = Some(activity);
                    break 'pages;
                }
                chunk.push(self.timeline_event(&stored, viewer)?.into_value()?);
            }
            before = oldest;
        }
        let mut body = json!({ "chunk": chunk });
        if let Some(next) = next {
            body["next_batch"] = json!(SyncToken::new(next, 0).to_string());
        }
        Ok(body)
    }
}

fn chunk_last_position(chunk: &[(u64, Value)]) -> u64 {
    chunk.last().map_or(0, |(position, _)| *position)
}
