"""Rooms through matrix-nio's AsyncClient against a real Myelin: create, join by alias, talk, leave.

No sync() (Myelin has no /sync yet): events are read back by ID with room_get_event.
"""

import time

from nio import AsyncClient, RoomVisibility
from nio.events import RedactedEvent, RoomMessageNotice, RoomMessageText
from nio.responses import (
    ErrorResponse,
    JoinedMembersResponse,
    JoinedRoomsResponse,
    JoinResponse,
    ProfileSetDisplayNameResponse,
    RegisterResponse,
    RoomBanResponse,
    RoomCreateResponse,
    RoomForgetResponse,
    RoomGetEventResponse,
    RoomGetStateEventResponse,
    RoomInviteResponse,
    RoomKickResponse,
    RoomLeaveResponse,
    RoomPutStateResponse,
    RoomRedactResponse,
    RoomResolveAliasResponse,
    RoomSendResponse,
    RoomUnbanResponse,
)

from conftest import PASSWORD, SERVER_NAME, fresh


def expect(resp, cls):
    """resp, asserted to be the success type cls (nio returns error types instead of raising)."""
    assert isinstance(resp, cls), resp
    return resp


def refused(resp, http_status: int, errcode: str) -> None:
    assert isinstance(resp, ErrorResponse), resp
    assert (resp.transport_response.status, resp.status_code) == (http_status, errcode), resp


async def user(new_client, display_name: str) -> AsyncClient:
    """A registered, logged-in client with a display name (so it shows in membership events)."""
    localpart = fresh()
    client = new_client(localpart)
    expect(await client.register(localpart, PASSWORD), RegisterResponse)
    expect(await client.set_displayname(display_name), ProfileSetDisplayNameResponse)
    return client


async def joined_names(client: AsyncClient, room_id: str) -> dict[str, str]:
    resp = expect(await client.joined_members(room_id), JoinedMembersResponse)
    return {m.user_id: m.display_name for m in resp.members}


async def state(client: AsyncClient, room_id: str, event_type: str, state_key: str = "") -> dict:
    resp = expect(await client.room_get_state_event(room_id, event_type, state_key), RoomGetStateEventResponse)
    return resp.content


async def test_create_join_by_alias_talk_and_leave(new_client):
    alice, bob = await user(new_client, "Alice"), await user(new_client, "Bob")
    alias_name = fresh()
    alias = f"#{alias_name}:{SERVER_NAME}"

    created = await alice.room_create(
        visibility=RoomVisibility.public, alias=alias_name, name="Tea room", topic="Earl Grey"
    )
    room_id = expect(created, RoomCreateResponse).room_id
    assert room_id.startswith("!")
    resolved = expect(await bob.room_resolve_alias(alias), RoomResolveAliasResponse)
    assert (resolved.room_alias, resolved.room_id, resolved.servers) == (alias, room_id, [SERVER_NAME])

    assert expect(await bob.join(alias), JoinResponse).room_id == room_id
    assert expect(await bob.joined_rooms(), JoinedRoomsResponse).rooms == [room_id]
    assert await joined_names(alice, room_id) == {alice.user_id: "Alice", bob.user_id: "Bob"}
    assert await state(bob, room_id, "m.room.name") == {"name": "Tea room"}
    assert (await state(bob, room_id, "m.room.topic"))["topic"] == "Earl Grey"

    # Alice writes, Bob reads it by event ID.
    sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "Hello Bob"})
    hello_id = expect(sent, RoomSendResponse).event_id
    assert hello_id.startswith("$")
    event = expect(await bob.room_get_event(room_id, hello_id), RoomGetEventResponse).event
    assert isinstance(event, RoomMessageText), event
    assert (event.event_id, event.sender, event.body) == (hello_id, alice.user_id, "Hello Bob")
    assert isinstance(event.server_timestamp, int)
    assert abs(time.time() * 1000 - event.server_timestamp) < 60_000, event.server_timestamp

    # Bob answers, Alice reads the answer.
    sent = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.notice", "body": "Hi Alice"})
    reply_id = expect(sent, RoomSendResponse).event_id
    event = expect(await alice.room_get_event(room_id, reply_id), RoomGetEventResponse).event
    assert isinstance(event, RoomMessageNotice), event
    assert (event.event_id, event.sender, event.body) == (reply_id, bob.user_id, "Hi Alice")

    # Alice changes the topic; Bob sees the new one.
    expect(await alice.room_put_state(room_id, "m.room.topic", {"topic": "Darjeeling"}), RoomPutStateResponse)
    assert await state(bob, room_id, "m.room.topic") == {"topic": "Darjeeling"}

    # Alice redacts her message: Bob gets it back stripped, with who redacted it and why.
    redaction = expect(await alice.room_redact(room_id, hello_id, reason="typo"), RoomRedactResponse)
    event = expect(await bob.room_get_event(room_id, hello_id), RoomGetEventResponse).event
    assert isinstance(event, RedactedEvent), event
    assert (event.event_id, event.type, event.redacter, event.reason) == (hello_id, "m.room.message", alice.user_id, "typo")
    assert event.source["content"] == {}
    assert event.source["unsigned"]["redacted_because"]["event_id"] == redaction.event_id

    # Bob leaves and forgets the room; Alice stays alone.
    expect(await bob.room_leave(room_id), RoomLeaveResponse)
    assert expect(await bob.joined_rooms(), JoinedRoomsResponse).rooms == []
    assert await joined_names(alice, room_id) == {alice.user_id: "Alice"}
    refused(await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "?"}), 403, "M_FORBIDDEN")
    expect(await bob.room_forget(room_id), RoomForgetResponse)
    assert expect(await bob.joined_rooms(), JoinedRoomsResponse).rooms == []


async def test_kick_ban_unban(new_client):
    alice, bob = await user(new_client, "Alice"), await user(new_client, "Bob")
    room_id = expect(await alice.room_create(visibility=RoomVisibility.public), RoomCreateResponse).room_id
    expect(await bob.join(room_id), JoinResponse)

    expect(await alice.room_kick(room_id, bob.user_id, reason="cool off"), RoomKickResponse)
    assert await joined_names(alice, room_id) == {alice.user_id: "Alice"}
    assert expect(await bob.joined_rooms(), JoinedRoomsResponse).rooms == []
    kicked = await state(alice, room_id, "m.room.member", bob.user_id)
    assert (kicked["membership"], kicked["reason"]) == ("leave", "cool off")

    # A kicked user may come back to a public room; a banned one may not, until unbanned.
    expect(await bob.join(room_id), JoinResponse)
    expect(await alice.room_ban(room_id, bob.user_id, reason="spam"), RoomBanResponse)
    assert await joined_names(alice, room_id) == {alice.user_id: "Alice"}
    banned = await state(alice, room_id, "m.room.member", bob.user_id)
    assert (banned["membership"], banned["reason"]) == ("ban", "spam")
    # A banned user's join: 403 M_BAD_STATE, as Synapse answers.
    refused(await bob.join(room_id), 403, "M_BAD_STATE")

    expect(await alice.room_unban(room_id, bob.user_id), RoomUnbanResponse)
    assert (await state(alice, room_id, "m.room.member", bob.user_id))["membership"] == "leave"
    expect(await bob.join(room_id), JoinResponse)
    assert await joined_names(alice, room_id) == {alice.user_id: "Alice", bob.user_id: "Bob"}


async def test_private_room_needs_an_invite(new_client):
    alice, bob = await user(new_client, "Alice"), await user(new_client, "Bob")
    # RoomVisibility.private without a preset: the server picks private_chat (join rule "invite").
    room_id = expect(await alice.room_create(name="Back office"), RoomCreateResponse).room_id
    assert await state(alice, room_id, "m.room.join_rules") == {"join_rule": "invite"}
    refused(await bob.join(room_id), 403, "M_FORBIDDEN")

    expect(await alice.room_invite(room_id, bob.user_id), RoomInviteResponse)
    assert (await state(alice, room_id, "m.room.member", bob.user_id))["membership"] == "invite"
    assert expect(await bob.join(room_id), JoinResponse).room_id == room_id
    assert await joined_names(bob, room_id) == {alice.user_id: "Alice", bob.user_id: "Bob"}
    assert await state(bob, room_id, "m.room.name") == {"name": "Back office"}
