//! Redaction: an `m.room.redaction` event, and the target pruned by the room version's redaction
//! algorithm in the same write, so its content is never served again.

use ruma::{CanonicalJsonObject, EventId, RoomId, UserId, room_version_rules::RoomVersionRules};
use serde_json::{Value, json, value::RawValue};

use super::{Appended, EventDraft, Pdu, Rooms, Transaction, canonical_content, pdu};
use crate::{
    error::{Error, Result},
    storage::Batch,
};

impl Rooms {
    pub async fn redact(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &EventId,
        reason: Option<String>,
        transaction: Option<Transaction>,
    ) -> Result<Appended> {
        let (_guard, mut room) = self.lock(room_id).await?;
        if let Some(txn) = &transaction
            && let Some(event_id) = self.transaction_result(sender, txn)?
        {
            return self.appended(&event_id);
        }
        let (short_target, target_pdu) = self
            .event_by_id(target)?
            .filter(|(_, pdu)| pdu.room_id == room_id)
            .ok_or_else(|| Error::not_found("Event not found"))?;
        let power = self.power_levels(&room.state, &room.record.version)?;
        let allowed = if target_pdu.sender == sender {
            power.user_can_redact_own_event(sender)
        } else {
            power.user_can_redact_event_of_other(sender)
        };
        if !allowed {
            return Err(Error::forbidden("You may not redact this event"));
        }

        let mut content = serde_json::Map::new();
        if let Some(reason) = reason {
            content.insert("reason".into(), json!(reason));
        }
        let mut draft = EventDraft::new("m.room.redaction", canonical_content(content)?);
        draft.redacts = Some(target.to_owned());
        let rules = room.rules.clone();
        let appended = self
            .append_with(&mut room, sender, draft, transaction, |batch, redaction| {
                self.prune_redacted(batch, &rules, short_target, &target_pdu, redaction)
            })
            .await?;
        self.forget_cached(short_target, &target_pdu);
        Ok(appended)
    }

    /// Stages the pruning of a redacted event (with the room version's redaction algorithm) in the
    /// redaction's batch, with `redacted_because` for clients. The caller drops the target from
    /// the cache once committed.
    pub(super) fn prune_redacted(
        &self,
        batch: &mut Batch,
        rules: &RoomVersionRules,
        short_target: u64,
        target: &Pdu,
        redaction: &Pdu,
    ) -> Result<()> {
        let mut stored = self.storage.event(short_target)?.ok_or_else(|| Error::not_found("Event not found"))?;
        self.unstage_relation(batch, target, stored.position);
        let mut object: CanonicalJsonObject = serde_json::from_str(stored.pdu.get())
            .map_err(|e| Error::internal(format!("stored event does not parse: {e}")))?;
        pdu::redact(&mut object, rules)?;
        stored.pdu = RawValue::from_string(serde_json::to_string(&object).expect("serializable")).expect("valid");
        stored.unsigned.insert(
            "redacted_because".into(),
            json!({
                "event_id": redaction.event_id,
                "type": "m.room.redaction",
                "sender": redaction.sender,
                "origin_server_ts": redaction.origin_server_ts,
                "room_id": redaction.room_id,
                "redacts": target.event_id,
                "content": serde_json::from_str::<Value>(redaction.content.get()).unwrap_or_default(),
            }),
        );
        batch.replace_event(short_target, &stored);
        Ok(())
    }
}
