"""MessagePack as a second wire format (SPEC §1.5), with the third-party `msgpack` library:
chosen by subprotocol or query, meeting JSON clients in the same rooms."""
import asyncio
import json
import os

import msgpack
import websockets

from test_native_protocol import Client


def url(query=""):
    return os.environ["SWITCHBOARD_URL"] + "/ws" + query


class MsgpackClient:
    def __init__(self, ws):
        self.ws = ws

    @classmethod
    async def connect(cls, by="subprotocol"):
        if by == "subprotocol":
            ws = await websockets.connect(url(), subprotocols=["switchboard.msgpack"])
            assert ws.subprotocol == "switchboard.msgpack"
        else:
            ws = await websockets.connect(url("?format=msgpack"))
        c = cls(ws)
        c.welcome = await c.recv()
        assert c.welcome["type"] == "welcome", c.welcome
        return c

    async def send(self, **msg):
        await self.ws.send(msgpack.packb(msg))

    async def recv(self, timeout=5):
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, bytes), f"a text frame on a MessagePack connection: {frame!r}"
        return msgpack.unpackb(frame)

    async def recv_type(self, kind):
        while True:
            m = await self.recv()
            if m["type"] == kind:
                return m


def test_msgpack_and_json_clients_share_a_room():
    async def go():
        mp = await MsgpackClient.connect()
        by_query = await MsgpackClient.connect(by="query")
        js = await Client.connect()
        for c in (mp, by_query):
            await c.send(type="join", room="mixed", user="packer")
            joined = await c.recv_type("joined")
            assert joined["room"] == "mixed" and joined["recovered"] is True
        await js.send(type="join", room="mixed")
        await js.recv_type("joined")

        # MessagePack in, JSON and MessagePack out: the same message, every field kept.
        await mp.send(type="chat", text="hé", n=[1, 2.5, None], nested={"a": True}, id="m1")
        assert (await mp.recv_type("ack")) == {"type": "ack", "id": "m1", "offset": 1}
        assert (await mp.recv_type("chat"))["text"] == "hé", "the sender is a member too"
        got_js = await js.recv_type("chat")
        got_mp = await by_query.recv_type("chat")
        assert got_js == got_mp
        assert got_mp["text"] == "hé" and got_mp["n"] == [1, 2.5, None] and got_mp["nested"] == {"a": True}
        assert got_mp["user"] == "packer" and got_mp["userId"] == mp.welcome["userId"]

        # JSON in, MessagePack out.
        await js.send(type="chat", text="from json")
        assert (await mp.recv_type("chat"))["text"] == "from json"

        await mp.send(type="history", room="mixed")
        hist = await mp.recv_type("history")
        assert [m["text"] for m in hist["messages"]] == ["hé", "from json"] and hist["more"] is False

        # Bad MessagePack gets an error in MessagePack; the connection stays usable.
        await mp.ws.send(b"\xc1")
        err = await mp.recv()
        assert err == {"type": "error", "code": "invalid_msgpack", "message": "Invalid MessagePack"}
        await mp.ws.send(msgpack.packb([1, 2]))
        assert (await mp.recv())["code"] == "invalid_format"
        # JSON text is still understood on a MessagePack connection (answered in MessagePack).
        await mp.ws.send(json.dumps({"type": "ping"}))
        assert await mp.recv() == {"type": "pong"}
        for c in (mp, by_query, js):
            await c.ws.close()
    asyncio.run(asyncio.wait_for(go(), 20))


def test_unknown_subprotocols_fall_back_to_json():
    async def go():
        ws = await websockets.connect(url(), subprotocols=["graphql-ws", "switchboard.json"])
        assert ws.subprotocol == "switchboard.json"
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.close()
    asyncio.run(asyncio.wait_for(go(), 10))
