"""Interoperability with Python `websockets` (a third-party client) against `switchboard serve --echo`.

The server binary is started by conftest.py; SWITCHBOARD_URL points at it.
"""
import asyncio
import os

import pytest
import websockets
from websockets.exceptions import ConnectionClosedError



def base():
    """Set by conftest.py once the server is up."""
    return os.environ["SWITCHBOARD_URL"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_echo_with_permessage_deflate():
    async def go():
        async with websockets.connect(base() + "/echo", max_size=None) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            assert ext.startswith("permessage-deflate"), ext
            for msg in ["hello", "κόσμε " * 1000, b"\x00\x01\x02", b"z" * 300_000]:
                await ws.send(msg)
                assert await ws.recv() == msg
    run(go())


def test_echo_without_compression_and_many_in_flight():
    async def go():
        async with websockets.connect(base() + "/echo", compression=None) as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            msgs = [f"message {i}" for i in range(500)]
            for m in msgs:
                await ws.send(m)
            got = [await ws.recv() for _ in msgs]
            assert got == msgs
    run(go())


def test_fragmented_message_is_reassembled():
    async def go():
        async with websockets.connect(base() + "/echo") as ws:
            await ws.send(iter(["frag", "mented ", "text"]))
            assert await ws.recv() == "fragmented text"
    run(go())


def test_client_ping_gets_pong():
    async def go():
        async with websockets.connect(base() + "/echo") as ws:
            pong_waiter = await ws.ping(b"are you there")
            latency = await asyncio.wait_for(pong_waiter, 5)
            assert latency >= 0
    run(go())


def test_clean_close_echoes_the_code():
    async def go():
        ws = await websockets.connect(base() + "/echo")
        await ws.close(code=4321, reason="bye")
        assert ws.close_code == 4321
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4321
    run(go())


def test_oversized_message_is_closed_with_1009():
    async def go():
        async with websockets.connect(base() + "/echo", max_size=None, compression=None) as ws:
            await ws.send(b"x" * (1024 * 1024 + 1))
            with pytest.raises(ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1009
    run(go())


def test_wrong_version_is_refused_with_426():
    async def go():
        reader, writer = await asyncio.open_connection("127.0.0.1", int(base().rsplit(":", 1)[1]))
        writer.write(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 7\r\n\r\n"
        )
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        assert head.startswith(b"HTTP/1.1 426")
        assert b"sec-websocket-version: 13" in head.lower()
    run(go())
