"""The native protocol over `GET /ws`, driven by a third-party client (Python `websockets`)
sending exactly the messages the seeds' browser clients send."""
import asyncio
import json
import os

import websockets


def url():
    return os.environ["SWITCHBOARD_URL"] + "/ws"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


class Client:
    """A seeds-style client: JSON text frames, reads `type`."""

    def __init__(self, ws, welcome):
        self.ws = ws
        self.welcome = welcome
        self.user_id = welcome["userId"]

    @classmethod
    async def connect(cls):
        ws = await websockets.connect(url())
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        assert welcome["userId"] and welcome["connectionId"]
        return cls(ws, welcome)

    async def send(self, **msg):
        await self.ws.send(json.dumps(msg))

    async def recv(self, timeout=5):
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def recv_type(self, kind, timeout=5):
        """The next message of `kind`, skipping others (e.g. presence events)."""
        while True:
            msg = await self.recv(timeout)
            if msg["type"] == kind:
                return msg

    async def nothing_for(self, seconds=0.3):
        try:
            msg = await asyncio.wait_for(self.ws.recv(), seconds)
        except asyncio.TimeoutError:
            return True
        raise AssertionError(f"unexpected message {msg}")

    async def close(self):
        await self.ws.close()


def test_chat_server_seed_flow():
    """seeds/000: join, user_joined, chat with room+message, ping/pong, leave, errors."""
    async def go():
        alice, bob = await Client.connect(), await Client.connect()
        await alice.send(type="join", room="general")
        joined = await alice.recv()
        assert joined["type"] == "joined" and joined["room"] == "general"
        assert joined["recovered"] is True and "epoch" in joined and "offset" in joined
        await bob.send(type="join", room="general")
        await bob.recv_type("joined")
        uj = await alice.recv_type("user_joined")
        # Without a display name, `user` is the user id (never missing: the seeds show it).
        assert uj == {"type": "user_joined", "userId": bob.user_id, "user": bob.user_id, "room": "general"}

        await alice.send(type="chat", room="general", message="Hello!")
        for c in (alice, bob):
            m = await c.recv_type("chat")
            assert m["message"] == "Hello!" and m["room"] == "general"
            assert m["userId"] == alice.user_id
            assert isinstance(m["timestamp"], int) and m["offset"] == 1 and m["id"]

        await bob.send(type="ping")
        assert (await bob.recv())["type"] == "pong"

        await bob.ws.send("{not json")
        assert await bob.recv() == {"type": "error", "code": "invalid_json", "message": "Invalid JSON"}
        await bob.send(type="chat", room="elsewhere", message="x")
        err = await bob.recv()
        assert err["type"] == "error" and err["message"] == "Not in room"

        lone = await Client.connect()
        await lone.send(type="dance")
        err = await lone.recv()
        assert err["type"] == "error" and err["message"] == "Unknown message type"

        await bob.send(type="leave", room="general")
        assert await bob.recv_type("left") == {"type": "left", "room": "general"}
        ul = await alice.recv_type("user_left")
        assert ul["userId"] == bob.user_id

        # Disconnect cleans membership up and tells the others.
        await bob.send(type="join", room="general")
        await bob.recv_type("joined")
        await alice.recv_type("user_joined")
        await bob.close()
        assert (await alice.recv_type("user_left"))["userId"] == bob.user_id
        for c in (alice, lone):
            await c.close()
    run(go())


def test_subscribe_alias_and_room_less_chat_after_join():
    """seeds/000 `subscribe {channel}`; seeds/001 `chat {text}` without a room after `join`."""
    async def go():
        a, b = await Client.connect(), await Client.connect()
        await a.send(type="subscribe", channel="orders")
        assert (await a.recv_type("joined"))["room"] == "orders"
        await b.send(type="join", room="orders", user="jane_dev")
        await b.recv_type("joined")
        await b.send(type="chat", user="jane_dev", text="hi there")
        m = await a.recv_type("chat")
        assert m["text"] == "hi there" and m["user"] == "jane_dev" and m["room"] == "orders"
        await a.close(), await b.close()
    run(go())


def test_envelope_messages_are_acked_and_deduplicated():
    """seeds/002 envelope {type, payload, id}: payload kept, ack {id, offset}, retry not redelivered."""
    async def go():
        a, b = await Client.connect(), await Client.connect()
        for c in (a, b):
            await c.send(type="join", room="doc-1")
            await c.recv_type("joined")
        await a.recv_type("user_joined")
        envelope = {"type": "chat.message", "payload": {"room": "doc-1", "text": "hello"}, "id": "m-42"}
        await a.ws.send(json.dumps(envelope))
        got = await b.recv_type("chat.message")
        assert got["payload"] == {"room": "doc-1", "text": "hello"} and got["id"] == "m-42"
        ack = await a.recv_type("ack")
        assert ack == {"type": "ack", "id": "m-42", "offset": got["offset"]}
        await a.ws.send(json.dumps(envelope))  # a retry after a lost ack
        assert await a.recv_type("ack") == ack
        assert await b.nothing_for(0.3)
        await a.close(), await b.close()
    run(go())


def test_history_and_gap_free_replay_after_reconnect():
    async def go():
        pub = await Client.connect()
        await pub.send(type="join", room="feed")
        j = await pub.recv_type("joined")
        epoch = j["epoch"]
        for i in range(1, 6):
            await pub.send(type="update", room="feed", value=i)
        seen = [await pub.recv_type("update") for _ in range(5)]
        assert [m["offset"] for m in seen] == [1, 2, 3, 4, 5]

        h = await Client.connect()
        await h.send(type="history", room="feed", since=3)
        hist = await h.recv_type("history")
        assert [m["value"] for m in hist["messages"]] == [4, 5]
        assert hist["offset"] == 5 and hist["epoch"] == epoch

        late = await Client.connect()
        await late.send(type="join", room="feed", since={"offset": 2, "epoch": epoch})
        joined = await late.recv()
        assert joined["type"] == "joined" and joined["recovered"] is True
        await pub.send(type="update", room="feed", value=6)
        values = [(await late.recv_type("update"))["value"] for _ in range(4)]
        assert values == [3, 4, 5, 6], values

        stale = await Client.connect()
        await stale.send(type="join", room="feed", since={"offset": 2, "epoch": "not-the-epoch"})
        assert (await stale.recv_type("joined"))["recovered"] is False
        for c in (pub, h, late, stale):
            await c.close()
    run(go())


def test_presence_lists_users_with_connection_counts():
    async def go():
        a1, a2, b = await Client.connect(), await Client.connect(), await Client.connect()
        for c in (a1, a2, b):
            await c.send(type="join", room="lobby")
            await c.recv_type("joined")
        await b.send(type="presence", room="lobby")
        p = await b.recv_type("presence")
        members = {m["userId"]: m["connections"] for m in p["members"]}
        # Anonymous connections are distinct users.
        assert members == {a1.user_id: 1, a2.user_id: 1, b.user_id: 1}
        for c in (a1, a2, b):
            await c.close()
    run(go())


def test_flooding_client_is_warned_then_closed_with_4002():
    """SPEC §6: 100 msgs / 10 s, burst 20 → error "Rate limit exceeded", then close 4002."""
    async def go():
        c = await Client.connect()
        for _ in range(100):
            await c.send(type="ping")
        pongs, error, code = 0, None, None
        try:
            while True:
                msg = await c.recv()
                if msg["type"] == "pong":
                    pongs += 1
                elif msg["type"] == "error":
                    error = msg
        except websockets.exceptions.ConnectionClosedError as e:
            code = e.rcvd.code
        assert pongs == 20, pongs
        assert error == {"type": "error", "code": "rate_limited", "message": "Rate limit exceeded"}
        assert code == 4002
    run(go())


def test_history_limits_follow_the_room_pattern():
    """`--history short:*=2/600` (set by conftest): rooms matching keep 2 messages, others 100."""
    async def go():
        c = await Client.connect()
        for room in ("short:x", "long:x"):
            await c.send(type="join", room=room)
            await c.recv_type("joined")
            for i in range(5):
                await c.send(type="tick", room=room, n=i)
            for _ in range(5):
                await c.recv_type("tick")
            await c.send(type="history", room=room)
            hist = await c.recv_type("history")
            expected = [3, 4] if room == "short:x" else [0, 1, 2, 3, 4]
            assert [m["n"] for m in hist["messages"]] == expected, (room, hist)
        await c.close()
    run(go())
