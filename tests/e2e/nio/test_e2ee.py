"""End-to-end encryption through matrix-nio (with its `e2e` extra: vodozemac) against a real Myelin.

Two clients with encryption on register (nio uploads device and one-time keys), share a room with
m.room.encryption, and each sends a message the other decrypts: nio queries the other's device
keys, claims a one-time key, sends the Megolm room key in an Olm to-device message and encrypts
the event; the server only ever holds ciphertext. Along the way the sync's device_lists and
one-time key counts drive nio's key bookkeeping as they would in a real client.

Every wait is bounded and says what is missing.
"""

import time

import pytest
from nio import AsyncClient, AsyncClientConfig
from nio.events import MegolmEvent, RoomMessageText
from nio.responses import (
    JoinResponse,
    KeysClaimResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomGetEventResponse,
    RoomSendResponse,
    SyncResponse,
)
from nio.store import SqliteMemoryStore

from conftest import PASSWORD, fresh
from test_rooms import expect

DEADLINE = 30.0  # seconds for any one wait

pytestmark = pytest.mark.timeout(120)


class Party:
    """An encrypting client and what its syncs told it."""

    def __init__(self, client: AsyncClient):
        self.client = client
        self.changed: set[str] = set()
        self.otk_counts: list[int | None] = []

    @property
    def user_id(self) -> str:
        return self.client.user_id

    async def sync_until(self, condition, what: str):
        """Syncs (doing nio's key duties in between, as sync_forever does) until condition(response)
        returns something truthy; returns it."""
        client, deadline = self.client, time.monotonic() + DEADLINE
        while True:
            resp = await client.sync(timeout=500)
            assert isinstance(resp, SyncResponse), resp
            self.changed.update(resp.device_list.changed)
            self.otk_counts.append(resp.device_key_count.signed_curve25519)
            if client.should_upload_keys:
                expect(await client.keys_upload(), KeysUploadResponse)
            if client.should_query_keys:
                expect(await client.keys_query(), KeysQueryResponse)
            if client.should_claim_keys:
                expect(await client.keys_claim(client.get_users_for_key_claiming()), KeysClaimResponse)
            found = condition(resp)
            if found:
                return found
            assert time.monotonic() < deadline, f"{self.user_id}: timed out waiting for {what}"

    async def receive(self, room_id: str, event_id: str):
        """Syncs until the event arrives; it must arrive decrypted."""

        def arrived(resp: SyncResponse):
            room = resp.rooms.join.get(room_id)
            for event in room.timeline.events if room else []:
                if event.event_id == event_id:
                    assert not isinstance(event, MegolmEvent), f"{self.user_id} could not decrypt {event}"
                    return event
            return None

        return await self.sync_until(arrived, f"event {event_id}")


@pytest.fixture
async def party(server_url):
    """party() -> a registered Party whose client has encryption on (keys in memory)."""
    clients = []

    async def make() -> Party:
        config = AsyncClientConfig(
            max_timeouts=2, request_timeout=10, encryption_enabled=True, store=SqliteMemoryStore
        )
        localpart = fresh()
        client = AsyncClient(server_url, localpart, config=config)
        clients.append(client)
        expect(await client.register(localpart, PASSWORD), RegisterResponse)
        assert client.olm is not None, "nio's encryption is not available (matrix-nio[e2e])"
        assert client.should_upload_keys
        uploaded = expect(await client.keys_upload(), KeysUploadResponse)
        assert uploaded.signed_curve25519_count > 0, uploaded
        return Party(client)

    yield make
    for client in clients:
        await client.close()


async def test_two_clients_exchange_encrypted_messages_and_each_decrypts_the_other(party):
    alice, bob = await party(), await party()
    encryption = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
    created = await alice.client.room_create(invite=[bob.user_id], initial_state=[encryption])
    room_id = expect(created, RoomCreateResponse).room_id
    await alice.sync_until(lambda r: room_id in r.rooms.join, "the new room")

    await bob.sync_until(lambda r: room_id in r.rooms.invite, "the invite")
    expect(await bob.client.join(room_id), JoinResponse)
    await bob.sync_until(lambda r: room_id in r.rooms.join, "the joined room")
    assert bob.client.rooms[room_id].encrypted
    await alice.sync_until(lambda r: bob.user_id in alice.client.rooms[room_id].users, "bob's join")
    # Bob joining told alice to track his devices (nio queried them on the way).
    assert bob.user_id in alice.changed, alice.changed
    assert bob.client.device_id in alice.client.device_store[bob.user_id]

    # Alice to bob: nio claims one of bob's one-time keys and shares the room key with his device.
    sent = await alice.client.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bob"}, ignore_unverified_devices=True
    )
    first = expect(sent, RoomSendResponse).event_id
    # The server holds ciphertext only.
    stored = expect(await bob.client.room_get_event(room_id, first), RoomGetEventResponse)
    assert isinstance(stored.event, MegolmEvent), stored.event
    assert "hello bob" not in str(stored.event.source)
    received = await bob.receive(room_id, first)
    assert isinstance(received, RoomMessageText) and received.body == "hello bob", received
    assert received.sender == alice.user_id

    # Bob to alice, in a Megolm session of his own.
    sent = await bob.client.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": "hello alice"}, ignore_unverified_devices=True
    )
    second = expect(sent, RoomSendResponse).event_id
    received = await alice.receive(room_id, second)
    assert isinstance(received, RoomMessageText) and received.body == "hello alice", received

    # And again both ways, in the sessions now established.
    for sender, receiver, body in [(alice, bob, "still secret"), (bob, alice, "indeed")]:
        sent = await sender.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": body}, ignore_unverified_devices=True
        )
        received = await receiver.receive(room_id, expect(sent, RoomSendResponse).event_id)
        assert isinstance(received, RoomMessageText) and received.body == body, received

    # A one-time key of each was claimed; the syncs said so, and nio topped its keys up.
    assert any(count is not None for count in bob.otk_counts), bob.otk_counts
