"""Long polling (`GET /poll`) from the outside: one session across polls (presence does not
flap), nothing lost between polls or in a lost answer, resets for stale cursors, the same
offsets as WebSocket and SSE clients in the same room, refusals, shutdown, and thousands of
waiting polls that cost no CPU."""

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import websockets

from conftest import API_KEY
from test_probes import api, pipelined_requests

MiB = 1024 * 1024


def poll(sb, channels, cursor=None, timeout=10):
    """One poll; returns (status, decoded JSON body, seconds it took)."""
    query = {"channels": channels}
    if cursor is not None:
        query["cursor"] = cursor
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"{sb.http}/poll?{urllib.parse.urlencode(query)}", timeout=timeout) as r:
            assert r.headers["Content-Type"] == "application/json"
            assert r.headers["Cache-Control"] == "no-store"
            return r.status, json.loads(r.read()), time.monotonic() - start
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), time.monotonic() - start


def publish(sb, channel, **data):
    status, body = api(sb, "POST", "/api/publish", {"channel": channel, "type": "note", "data": data})
    assert status == 200, body
    return body["offset"]


def metric(sb, name):
    text = urllib.request.urlopen(sb.http + "/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def first_poll(sb, channels):
    status, body, took = poll(sb, channels)
    assert status == 200, body
    assert took < 2, "a new session answers at once (its cursor)"
    (connected,) = body["messages"]
    assert connected["type"] == "connected"
    assert connected["channels"] == channels.split(",")
    return connected, body["cursor"]


def test_a_poller_gets_what_was_published_between_polls_and_waits_for_the_next(switchboard):
    sb = switchboard("--api-key", API_KEY, "--poll-timeout", "2s")
    _, cursor = first_poll(sb, "a,b")
    offsets = [publish(sb, "a", n=i) for i in range(3)] + [publish(sb, "b", n=9)]
    sent_before = metric(sb, "switchboard_messages_sent_total")
    status, body, took = poll(sb, "a,b", cursor)
    assert metric(sb, "switchboard_messages_sent_total") - sent_before == 4, "counted as sent"
    assert status == 200 and took < 1
    assert [(m["room"], m["offset"], m["data"]["n"]) for m in body["messages"]] == [
        ("a", offsets[0], 0), ("a", offsets[1], 1), ("a", offsets[2], 2), ("b", offsets[3], 9)]
    cursor = body["cursor"]
    # Held until a message comes (not answered empty at once)...
    timer = threading.Timer(0.5, publish, (sb, "b"), {"n": 10})
    timer.start()
    status, body, took = poll(sb, "a,b", cursor)
    timer.join()
    assert 0.4 < took < 1.9, took
    assert [m["data"]["n"] for m in body["messages"]] == [10]
    # ... or until poll_timeout, then empty with a cursor.
    status, body, took = poll(sb, "a,b", body["cursor"])
    assert status == 200 and body["messages"] == [] and 1.9 < took < 3.5, (body, took)
    assert body["cursor"]


def test_a_lost_answer_is_sent_again_and_a_confirmed_one_is_not(switchboard):
    sb = switchboard("--api-key", API_KEY, "--poll-timeout", "1s")
    _, cursor = first_poll(sb, "r")
    publish(sb, "r", n=1)
    _, answer, _ = poll(sb, "r", cursor)
    assert [m["data"]["n"] for m in answer["messages"]] == [1]
    publish(sb, "r", n=2)
    # The client never got `answer`: it polls with the cursor before it again.
    _, again, _ = poll(sb, "r", cursor)
    assert [m["data"]["n"] for m in again["messages"]] == [1, 2]
    # Confirmed by polling with the newest cursor: nothing is repeated.
    publish(sb, "r", n=3)
    _, nxt, _ = poll(sb, "r", again["cursor"])
    assert [m["data"]["n"] for m in nxt["messages"]] == [3]


def test_presence_does_not_flap_across_polls_and_the_session_ends_when_polling_stops(switchboard):
    sb = switchboard("--api-key", API_KEY, "--poll-timeout", "1s", "--poll-grace", "1s")

    async def scenario():
        async with websockets.connect(f"{sb.url}/ws") as ws:
            assert json.loads(await ws.recv())["type"] == "welcome"
            await ws.send(json.dumps({"type": "join", "room": "lobby"}))
            assert json.loads(await ws.recv())["type"] == "joined"
            connected, cursor = await asyncio.to_thread(first_poll, sb, "lobby")
            for _ in range(3):  # three full poll cycles (each held ~1 s)
                _, body, _ = await asyncio.to_thread(poll, sb, "lobby", cursor)
                cursor = body["cursor"]
            seen = []
            try:
                while True:
                    seen.append(json.loads(await asyncio.wait_for(ws.recv(), 0.2)))
            except asyncio.TimeoutError:
                pass
            assert [(m["type"], m["userId"]) for m in seen] == [("user_joined", connected["userId"])]
            status, presence = api(sb, "GET", "/api/presence?channel=lobby")
            assert connected["userId"] in json.dumps(presence)
            # The poller stops: its session ends after poll_timeout + grace (+ a sweep).
            left = json.loads(await asyncio.wait_for(ws.recv(), 6))
            assert (left["type"], left["userId"]) == ("user_left", connected["userId"])

    asyncio.run(scenario())
    metrics = urllib.request.urlopen(sb.http + "/metrics", timeout=5).read().decode()
    assert 'switchboard_connections{transport="poll"} 0' in metrics
    assert 'switchboard_disconnects_total{transport="poll",code="1006",reason="Stopped polling"} 1' in metrics


def test_a_session_that_expired_replays_from_the_cursor_or_says_reset(switchboard):
    sb = switchboard("--api-key", API_KEY, "--poll-timeout", "1s", "--poll-grace", "0s",
                     "--history", "short:*=2/600")
    publish(sb, "kept", n=0)
    publish(sb, "short:x", n=0)
    _, cursor = first_poll(sb, "kept,short:x")
    time.sleep(2.5)  # the session expires
    kept = [publish(sb, "kept", n=i) for i in range(1, 4)]
    for i in range(1, 4):  # 3 messages where history keeps 2: the gap is not covered
        publish(sb, "short:x", n=i)
    status, body, _ = poll(sb, "kept,short:x", cursor)
    assert status == 200
    types = [m["type"] for m in body["messages"]]
    assert types[0] == "connected", "a new session"
    assert [m["offset"] for m in body["messages"] if m.get("room") == "kept"] == kept
    (reset,) = [m for m in body["messages"] if m["type"] == "reset"]
    assert reset["channels"] == ["short:x"]
    # From the reset on, the room goes on from its current offset.
    publish(sb, "short:x", n=4)
    _, nxt, _ = poll(sb, "kept,short:x", body["cursor"])
    assert [(m["room"], m["data"]["n"]) for m in nxt["messages"]] == [("short:x", 4)]


def test_websocket_sse_and_poll_clients_see_the_same_messages_with_the_same_offsets(switchboard):
    sb = switchboard("--api-key", API_KEY, "--poll-timeout", "1s")
    sse = socket.create_connection(("127.0.0.1", sb.port))
    sse.sendall(b"GET /events?channels=mix HTTP/1.1\r\nHost: x\r\n\r\n")
    sse.settimeout(5)
    buf = b""
    while b"event: connected" not in buf:  # joined before the poller (no user_joined for it)
        buf += sse.recv(65536)
    _, cursor = first_poll(sb, "mix")

    async def ws_side():
        async with websockets.connect(f"{sb.url}/ws") as ws:
            assert json.loads(await ws.recv())["type"] == "welcome"
            await ws.send(json.dumps({"type": "join", "room": "mix"}))
            assert json.loads(await ws.recv())["type"] == "joined"
            await asyncio.to_thread(publish, sb, "mix", n=1)
            await ws.send(json.dumps({"type": "chat", "room": "mix", "text": "from ws"}))
            await asyncio.to_thread(publish, sb, "mix", n=3)
            got = []
            while len(got) < 3:
                m = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if "offset" in m:
                    got.append((m["type"], m["offset"]))
            return got

    ws_got = asyncio.run(ws_side())
    polled = []
    while len(polled) < 3:
        _, body, _ = poll(sb, "mix", cursor)
        cursor = body["cursor"]
        polled += [(m["type"], m["offset"]) for m in body["messages"] if "offset" in m]
    while buf.count(b"\"offset\"") < 3:
        buf += sse.recv(65536)
    sse.close()
    sse_got = []
    for event in buf.split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in event.split(b"\n") if b": " in line)
        if b"data" in lines and b"offset" in lines[b"data"]:
            data = json.loads(lines[b"data"])
            sse_got.append((data["type"], data["offset"]))
    assert ws_got == polled == sse_got, (ws_got, polled, sse_got)
    assert [t for t, _ in ws_got] == ["note", "chat", "note"]
    assert [o for _, o in ws_got] == sorted(o for _, o in ws_got)


def test_malformed_polls_get_a_json_400_and_refusals_leave_memory_flat(switchboard):
    sb = switchboard("--api-key", API_KEY)
    cursor = first_poll(sb, "a")[1]
    for channels, bad in [
        ("a", "garbage!"),
        ("a", "0" * 32 + ".1:_._"),
        ("a", "0" * 32 + ".x:_"),
        ("a", "é" * 16 + ".1:_"),
        ("a", ":" * 5000),
        ("a,b", cursor),  # a cursor of another room list
        ("", None),
        ("a,,bad name\x01", None),
    ]:
        status, body, _ = poll(sb, channels, bad)
        assert status == 400 and "error" in body, (channels, bad, status, body)
    health = json.loads(urllib.request.urlopen(sb.http + "/health", timeout=5).read())
    assert health["connections"] == 1, "only the first poll's session"
    request = b"GET /poll?channels=a&cursor=zz HTTP/1.1\r\nHost: x\r\n\r\n"
    pipelined_requests(sb.port, request, 2_000)  # warm-up
    before = sb.rss_bytes()
    assert pipelined_requests(sb.port, request, 10_000) == {b"400": 10_000}
    growth = sb.rss_bytes() - before
    print(f"RSS grew {growth / MiB:.2f} MiB over 10 000 refused polls")
    assert growth < 2 * MiB


def test_thousands_of_waiting_polls_cost_no_cpu_and_all_get_the_message(switchboard):
    n = 3000
    sb = switchboard("--api-key", API_KEY, "--poll-timeout", "30s", "--max-connections-per-ip", "10000",
                     "--join-leave-max-members", "0")
    _, cursor = first_poll(sb, "crowd")

    def cpu_ticks():
        with open(f"/proc/{sb.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks

    async def scenario():
        # Every poller is a session of its own (no cursor: the first answer is `connected`),
        # then polls again with its cursor and waits.
        async def one():
            reader, writer = await asyncio.open_connection("127.0.0.1", sb.port)

            async def get(cursor):
                q = "channels=crowd" + (f"&cursor={cursor}" if cursor else "")
                writer.write(f"GET /poll?{q} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                return json.loads(await reader.readexactly(length))

            first = await get(None)
            return reader, writer, get, first["cursor"]

        pollers = []
        for i in range(0, n, 500):
            pollers += await asyncio.gather(*(one() for _ in range(500)))
        waits = [asyncio.create_task(get(cursor)) for _, _, get, cursor in pollers]
        await asyncio.sleep(1.0)  # every poll is waiting now
        before = cpu_ticks()
        await asyncio.sleep(3.0)
        idle_ticks = cpu_ticks() - before
        publish(sb, "crowd", n=42)
        answers = await asyncio.wait_for(asyncio.gather(*waits), 20)
        for _, writer, _, _ in pollers:
            writer.close()
        return idle_ticks, answers

    idle_ticks, answers = asyncio.run(scenario())
    print(f"{n} waiting polls: {idle_ticks} clock ticks of server CPU in 3 s")
    assert idle_ticks <= 5, "waiting polls do no busy work (one tick is 10 ms)"
    assert all([m["data"]["n"] for m in a["messages"]] == [42] for a in answers)


def test_a_waiting_poll_is_answered_at_shutdown(switchboard):
    sb = switchboard("--api-key", API_KEY, "--poll-timeout", "30s")
    _, cursor = first_poll(sb, "a")
    result = {}

    def waiter():
        result["answer"] = poll(sb, "a", cursor, timeout=20)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)
    start = time.monotonic()
    assert sb.stop() == 0
    t.join(10)
    assert time.monotonic() - start < 5, "the drain does not wait for held polls"
    status, body, _ = result["answer"]
    assert status == 200
    assert body["messages"][-1] == {"type": "disconnect", "code": 1001, "reason": "Server shutting down"}


def test_a_newer_poll_of_the_same_session_supersedes_a_held_one(switchboard):
    sb = switchboard("--api-key", API_KEY, "--poll-timeout", "10s")
    _, cursor = first_poll(sb, "r")
    older = {}
    t = threading.Thread(target=lambda: older.update(answer=poll(sb, "r", cursor, timeout=15)))
    t.start()
    time.sleep(0.5)  # the older poll is held
    timer = threading.Timer(0.5, publish, (sb, "r"), {"n": 1})
    timer.start()
    status, newer, took = poll(sb, "r", cursor)  # the client retried with the same cursor
    timer.join()
    t.join(5)
    _, old_body, old_took = older["answer"]
    assert old_body == {"messages": [], "cursor": cursor}, "superseded: nothing, its own cursor"
    assert old_took < 2, "answered when the newer poll came, not at the timeout"
    assert status == 200 and [m["data"]["n"] for m in newer["messages"]] == [1]
