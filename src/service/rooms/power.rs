//! Power levels as ruma computes them, with room version 12's creators.

use ruma::{
    OwnedUserId, UserId,
    events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
};
use serde_json::Value;

use super::{Rooms, StateMap};
use crate::error::Result;

impl Rooms {
    /// The room's creators: the create event's sender, and in room version 12 its
    /// `additional_creators`.
    pub fn creators(&self, state: &StateMap) -> Result<Vec<OwnedUserId>> {
        let Some(create) = self.state_event(state, "m.room.create", "")? else { return Ok(Vec::new()) };
        let mut creators = vec![create.sender.clone()];
        if let Some(Value::Array(more)) = create.content_map().get("additional_creators") {
            creators.extend(more.iter().filter_map(Value::as_str).filter_map(|u| UserId::parse(u).ok()));
        }
        Ok(creators)
    }

    /// The power levels in force in a state.
    pub fn power_levels(&self, state: &StateMap, version: &ruma::RoomVersionId) -> Result<RoomPowerLevels> {
        let rules = super::pdu::rules_of(version)?;
        let content = self
            .state_event(state, "m.room.power_levels", "")?
            .and_then(|pdu| serde_json::from_str::<RoomPowerLevelsEventContent>(pdu.content.get()).ok());
        let source: RoomPowerLevelsSource = content.into();
        Ok(RoomPowerLevels::new(source, &rules.authorization, self.creators(state)?))
    }

    /// Whether the user may send a state event of this type.
    pub fn can_send_state(
        &self,
        state: &StateMap,
        version: &ruma::RoomVersionId,
        user: &UserId,
        kind: &str,
    ) -> Result<bool> {
        Ok(self.power_levels(state, version)?.user_can_send_state(user, kind.into()))
    }
}
