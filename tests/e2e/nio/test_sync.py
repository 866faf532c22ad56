"""The sync loop through matrix-nio against a real Myelin: two clients in sync_forever exchange 200
messages each way; each must see all 400 through its RoomMessageText callback, once each, in the order
/messages gives. Typing and read receipts arrive through the ephemeral callbacks; a client restarted
from its sync token gets exactly what it missed, and a fresh one gets the whole history.

Every wait is bounded and says what is missing. A SyncError, a BadEvent or a nio warning (an event or
response that fails nio's schema) fails the test.
"""

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
from nio import AsyncClient, MessageDirection, RoomVisibility
from nio.events import BadEvent, ReceiptEvent, RoomMessageText, TypingNoticeEvent, UnknownBadEvent
from nio.responses import (
    JoinResponse,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomReadMarkersResponse,
    RoomSendResponse,
    RoomTypingResponse,
    SyncError,
    SyncResponse,
)

from test_rooms import expect, user

EACH = 200  # messages per side
DEADLINE = 30.0  # seconds for any one wait
# A timeline limit that holds everything this test sends: no sync is limited.
ROOMY = {"room": {"timeline": {"limit": 1000}}}

pytestmark = pytest.mark.timeout(120)


class Watch:
    """What one client's sync loop delivers for one room, with a wake-up for waiters."""

    def __init__(self, client: AsyncClient, room_id: str):
        self.client, self.room_id = client, room_id
        self.messages: list[RoomMessageText] = []
        self.bad: list = []
        self.errors: list[SyncError] = []
        self.limited: list[str] = []
        self.typing: list[list[str]] = []
        self.receipts: list = []
        self.syncs = 0
        self.changed = asyncio.Event()
        client.add_event_callback(self.on_message, RoomMessageText)
        client.add_event_callback(self.on_bad, (BadEvent, UnknownBadEvent))
        client.add_ephemeral_callback(self.on_typing, TypingNoticeEvent)
        client.add_ephemeral_callback(self.on_receipt, ReceiptEvent)
        client.add_response_callback(self.on_sync, SyncResponse)
        client.add_response_callback(self.on_error, SyncError)

    def wake(self):
        self.changed.set()

    async def on_message(self, room, event):
        if room.room_id == self.room_id:
            self.messages.append(event)
            self.wake()

    async def on_bad(self, room, event):
        self.bad.append(event)
        self.wake()

    async def on_typing(self, room, event):
        if room.room_id == self.room_id:
            self.typing.append(event.users)
            self.wake()

    async def on_receipt(self, room, event):
        if room.room_id == self.room_id:
            self.receipts.extend(event.receipts)
            self.wake()

    async def on_sync(self, response: SyncResponse):
        joined = response.rooms.join.get(self.room_id)
        if joined is not None and joined.timeline.limited and self.syncs > 0:
            self.limited.append(response.next_batch)
        self.syncs += 1
        self.wake()

    async def on_error(self, response: SyncError):
        self.errors.append(response)
        self.wake()

    async def until(self, condition: Callable[[], bool], what: Callable[[], str], deadline: float = DEADLINE):
        """Returns once condition() holds, re-checked whenever the sync loop delivers something."""
        end = time.monotonic() + deadline
        while not condition():
            assert not self.errors, f"sync failed while waiting for {what()}: {self.errors}"
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {deadline} s waiting for {what()}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass

    async def sees(self, sent: list[tuple[str, str]], who: str):
        def missing():
            ids = {e.event_id for e in self.messages}
            return [body for event_id, body in sent if event_id not in ids]

        await self.until(
            lambda: not missing(),
            lambda: f"{who} to see {len(sent)} messages; {len(missing())} missing: {missing()[:10]}",
        )

    def assert_healthy(self, who: str):
        assert self.errors == [], f"{who}: SyncError {self.errors}"
        assert self.bad == [], f"{who}: events nio could not parse: {[e.source for e in self.bad]}"
        assert self.limited == [], f"{who}: limited syncs {self.limited}"


def start(client: AsyncClient, room_id: str, **sync_args) -> tuple[Watch, asyncio.Task]:
    watch = Watch(client, room_id)
    task = asyncio.create_task(client.sync_forever(timeout=5_000, **sync_args))
    return watch, task


async def stop(task: asyncio.Task):
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def send_all(client: AsyncClient, room_id: str, prefix: str, count: int) -> list[tuple[str, str]]:
    """Sends count messages one after the other (each awaited: the send order is defined)."""
    sent = []
    for i in range(count):
        body = f"{prefix} {i}"
        content = {"msgtype": "m.text", "body": body}
        resp = expect(await client.room_send(room_id, "m.room.message", content), RoomSendResponse)
        sent.append((resp.event_id, body))
    return sent


async def history(client: AsyncClient, room_id: str, start: str = "") -> list[str]:
    """Event IDs of the room's m.room.message events before `start` (the end by default), oldest first."""
    ids = []
    for _ in range(100):
        resp = expect(
            await client.room_messages(room_id, start=start, direction=MessageDirection.back, limit=100),
            RoomMessagesResponse,
        )
        assert not [e for e in resp.chunk if isinstance(e, (BadEvent, UnknownBadEvent))], resp.chunk
        ids += [e.event_id for e in resp.chunk if isinstance(e, RoomMessageText)]
        if not resp.end or not resp.chunk:
            return ids[::-1]
        start = resp.end
    raise AssertionError("/messages did not reach the start of the room in 100 pages")


def assert_timeline(messages: list[RoomMessageText], by_sender: dict, reference: list[str], who: str):
    ids = [e.event_id for e in messages]
    assert len(set(ids)) == len(ids), f"{who}: a message came twice"
    for sender, sent in by_sender.items():
        got = [e.body for e in messages if e.sender == sender]
        assert got == [body for _, body in sent], f"{who}: {sender}'s messages out of order"
    assert ids == reference, f"{who}: order differs from /messages"


async def test_two_sync_loops_exchange_200_messages_each_way(new_client, server_url, caplog):
    caplog.set_level(logging.WARNING, logger="nio")
    alice, bob = await user(new_client, "Alice"), await user(new_client, "Bob")
    created = await alice.room_create(visibility=RoomVisibility.public, name="Sync room")
    room_id = expect(created, RoomCreateResponse).room_id
    expect(await bob.join(room_id), JoinResponse)

    alice_watch, alice_task = start(alice, room_id, sync_filter=ROOMY)
    bob_watch, bob_task = start(bob, room_id, sync_filter=ROOMY)
    try:
        for client, watch in ((alice, alice_watch), (bob, bob_watch)):
            await watch.until(lambda c=client: room_id in c.rooms, lambda c=client: f"{c.user_id}'s first sync")

        started = time.monotonic()
        from_alice, from_bob = await asyncio.gather(
            send_all(alice, room_id, "alice", EACH), send_all(bob, room_id, "bob", EACH)
        )
        everything = from_alice + from_bob
        await asyncio.gather(alice_watch.sees(everything, "alice"), bob_watch.sees(everything, "bob"))
        print(f"{2 * EACH} messages sent and seen by both sync loops in {time.monotonic() - started:.1f} s")

        reference = await history(alice, room_id)
        assert sorted(reference) == sorted(event_id for event_id, _ in everything), "/messages: each message once"
        by_sender = {alice.user_id: from_alice, bob.user_id: from_bob}
        assert_timeline(alice_watch.messages, by_sender, reference, "alice")
        assert_timeline(bob_watch.messages, by_sender, reference, "bob")
        alice_ids = {event_id for event_id, _ in from_alice}
        senders = "".join("a" if event_id in alice_ids else "b" for event_id in reference)
        assert senders.count("ab") + senders.count("ba") >= 10, f"the sends barely interleaved: {senders}"

        # Typing: alice starts, bob sees her; alice stops, bob sees nobody.
        expect(await alice.room_typing(room_id, True, 30_000), RoomTypingResponse)
        await bob_watch.until(
            lambda: bob_watch.typing and bob_watch.typing[-1] == [alice.user_id], lambda: "bob to see alice typing"
        )
        assert bob.rooms[room_id].typing_users == [alice.user_id]
        expect(await alice.room_typing(room_id, False), RoomTypingResponse)
        await bob_watch.until(
            lambda: bob_watch.typing[-1] == [], lambda: f"bob to see alice stop typing: {bob_watch.typing[-3:]}"
        )

        # Receipts: bob marks alice's last message read; alice sees the receipt.
        last_of_alice = from_alice[-1][0]
        expect(await bob.room_read_markers(room_id, last_of_alice, last_of_alice), RoomReadMarkersResponse)

        def bob_read():
            return [
                r
                for r in alice_watch.receipts
                if r.user_id == bob.user_id and r.event_id == last_of_alice and r.receipt_type == "m.read"
            ]

        await alice_watch.until(bob_read, lambda: f"alice to see bob's receipt; got {alice_watch.receipts}")
        assert alice.rooms[room_id].read_receipts[bob.user_id].event_id == last_of_alice

        # Alice's sync loop stops at a token; bob writes 30 more; a new client for alice syncs on
        # from that token and gets exactly those 30 (no old one again), in order.
        await stop(alice_task)
        token = alice.next_batch
        while_away = await send_all(bob, room_id, "bob away", 30)
        await bob_watch.sees(while_away, "bob")
        full_reference = await history(bob, room_id)
        assert full_reference == reference + [event_id for event_id, _ in while_away]

        again = new_client(alice.user_id)
        again.restore_login(alice.user_id, alice.device_id, alice.access_token)
        again_watch, again_task = start(again, room_id, sync_filter=ROOMY, since=token)
        try:
            await again_watch.sees(while_away, "alice from her sync token")
            assert [e.body for e in again_watch.messages] == [body for _, body in while_away]
            again_watch.assert_healthy("alice from her sync token")
        finally:
            await stop(again_task)

        # A fresh client's first sync has the default timeline limit: limited, with a prev_batch
        # from which /messages gives the rest of the history, back to the room's creation.
        newcomer = new_client(alice.user_id)
        newcomer.restore_login(alice.user_id, alice.device_id, alice.access_token)
        first = expect(await newcomer.sync(timeout=0), SyncResponse)
        timeline = first.rooms.join[room_id].timeline
        assert timeline.limited
        latest = [e.event_id for e in timeline.events if isinstance(e, RoomMessageText)]
        assert latest and latest == full_reference[-len(latest) :], "the first sync has the latest messages"
        earlier = await history(newcomer, room_id, start=timeline.prev_batch)
        assert earlier + latest == full_reference, "prev_batch + /messages give the whole history"

        for who, watch in (("alice", alice_watch), ("bob", bob_watch)):
            watch.assert_healthy(who)
        assert bob_task.done() is False, "bob's sync_forever ended"
    finally:
        await stop(alice_task)
        await stop(bob_task)
    nio_warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert nio_warnings == [], f"nio warned (a response or event failed its schema): {nio_warnings}"
