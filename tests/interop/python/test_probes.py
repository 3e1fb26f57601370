"""What probing the server the way an attacker (or a careless backend) would found (issue 9):
each test failed before its fix. Third-party clients only: raw sockets, `websockets`, urllib."""
import asyncio
import json
import re
import socket
import time
import urllib.request

import websockets

from conftest import API_KEY
from test_http_api import call
from wsframes import encode_frame, handshake_request

MiB = 1024 * 1024


def api(sb, method, path, body=None):
    """An API call against the test's own server `sb`."""
    return call(method, path, body, key=API_KEY, base=sb.http, timeout=30)


def pipelined_requests(port, request, total, batch=500):
    """Send `total` copies of `request` on keep-alive connections, `batch` at a time, and
    read every response; returns the status lines seen."""
    statuses = {}
    sent = 0
    while sent < total:
        with socket.create_connection(("127.0.0.1", port)) as s:
            for _ in range(20):  # batches per connection
                n = min(batch, total - sent)
                if n == 0:
                    break
                s.sendall(request * n)
                sent += n
                buf, seen = b"", 0
                while seen < n:
                    chunk = s.recv(1 << 20)
                    assert chunk, "server closed the connection"
                    buf += chunk
                    # Each response ends with its (short, fixed) body; count status lines.
                    seen = buf.count(b"HTTP/1.1 ")
                for status in re.findall(rb"HTTP/1\.1 (\d{3})", buf):
                    statuses[status] = statuses.get(status, 0) + 1
    return statuses


def test_refused_requests_leave_memory_flat(switchboard):
    """100 000 plain `GET /ws` (no upgrade) and 100 000 bad handshakes: before the fix each
    registered a session in the hub before the request was validated (~24 MB per 100 000,
    never freed)."""
    sb = switchboard()
    plain = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"
    bad_key = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n")
    # Warm up (allocator pools, hyper buffers), then measure.
    pipelined_requests(sb.port, plain, 10_000)
    pipelined_requests(sb.port, bad_key, 10_000)
    before = sb.rss_bytes()
    assert pipelined_requests(sb.port, plain, 100_000) == {b"400": 100_000}
    assert pipelined_requests(sb.port, bad_key, 100_000) == {b"400": 100_000}
    after = sb.rss_bytes()
    growth = after - before
    print(f"RSS {before / MiB:.1f} MiB -> {after / MiB:.1f} MiB after 200 000 refused requests")
    assert growth < 4 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"
    with urllib.request.urlopen(sb.http + "/health", timeout=5) as r:
        assert json.loads(r.read())["connections"] == 0


def test_broadcast_with_a_numeric_id_publishes_to_every_channel():
    """A numeric id used to be deduplicated across the channels of one broadcast: `b` and `c`
    answered `duplicate: true` and were lost."""
    status, res = call("POST", "/api/broadcast",
                       {"channels": ["num-a", "num-b", "num-c"], "id": 7, "data": "x"})
    assert status == 200, res
    assert [r.get("duplicate", False) for r in res["results"]] == [False, False, False], res
    for ch in ("num-a", "num-b", "num-c"):
        _, hist = call("GET", f"/api/history?channel={ch}")
        assert [m["id"] for m in hist["messages"]] == [7], hist
    # The repeat is a duplicate in every channel, with each channel's own offset.
    _, again = call("POST", "/api/broadcast",
                    {"channels": ["num-a", "num-b", "num-c"], "id": 7, "data": "x"})
    assert [r["duplicate"] for r in again["results"]] == [True, True, True]
    assert [r["offset"] for r in again["results"]] == [r["offset"] for r in res["results"]]


def test_lookups_create_no_rooms(switchboard):
    """50 `history` lookups of rooms that do not exist used to create 50 rooms."""
    sb = switchboard("--api-key", API_KEY, "--rate-limit", "off")

    def count():
        return len(api(sb, "GET", "/api/channels")[1]["channels"])

    async def go():
        before = count()
        ws = await websockets.connect(sb.url + "/ws")
        await ws.recv()
        for i in range(50):
            await ws.send(json.dumps({"type": "history", "room": f"ghost-{i}"}))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "history" and reply["messages"] == [] and reply["offset"] == 0
            await ws.send(json.dumps({"type": "presence", "room": f"ghost-{i}"}))
            assert json.loads(await ws.recv())["members"] == []
            status, _ = api(sb, "GET", f"/api/history?channel=ghost-api-{i}")
            assert status == 200
            status, _ = api(sb, "GET", f"/api/presence?channel=ghost-api-{i}")
            assert status == 200
        await ws.close()
        assert count() == before
    asyncio.run(asyncio.wait_for(go(), 30))


def test_history_replies_fit_the_client_limit_and_replay_never_claims_a_gap_it_did_not_fill(switchboard):
    """100 stored messages of 900 KB used to come back as one 90 MB frame (clients refuse
    frames over 1 MiB: `websockets` does by default), and a replay that overflowed the outbound
    budget was dropped while `joined` said `recovered: true`."""
    sb = switchboard("--api-key", API_KEY, "--rate-limit", "off")
    blob = "x" * 900_000
    for i in range(100):
        status, res = api(sb, "POST", "/api/publish", {"channel": "big", "data": {"n": i, "blob": blob}})
        assert status == 200, res
    epoch = res["epoch"]

    async def go():
        ws = await websockets.connect(sb.url + "/ws")  # max_size: 1 MiB
        await ws.recv()
        got, since = [], 0
        while True:
            await ws.send(json.dumps({"type": "history", "room": "big", "since": since}))
            reply = json.loads(await ws.recv())
            got += [m["data"]["n"] for m in reply["messages"]]
            assert all(len(m["data"]["blob"]) == 900_000 for m in reply["messages"])
            if not reply["more"]:
                break
            since = reply["messages"][-1]["offset"]
        assert got == list(range(100))

        # 90 MB missed: more than the outbound budget (1 MiB). Not recovered, nothing sent.
        await ws.send(json.dumps({"type": "join", "room": "big", "since": {"offset": 0, "epoch": epoch}}))
        joined = json.loads(await ws.recv())
        assert joined["type"] == "joined" and joined["recovered"] is False, joined
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv())["type"] == "pong", "no partial replay before the pong"
        await ws.send(json.dumps({"type": "leave", "room": "big"}))
        await ws.recv()
        # One missed message fits: recovered, and it follows `joined`.
        await ws.send(json.dumps({"type": "join", "room": "big", "since": {"offset": 99, "epoch": epoch}}))
        joined = json.loads(await ws.recv())
        assert joined["recovered"] is True
        assert json.loads(await ws.recv())["data"]["n"] == 99
        await ws.close()
    asyncio.run(asyncio.wait_for(go(), 60))


def test_pipelined_requests_from_a_client_that_does_not_read_stay_bounded(switchboard):
    """Input was decoded while replies piled up: 300 pipelined `history` requests of ~450 KB
    replies from a client that does not read built ~135 MB of replies in the server."""
    sb = switchboard("--api-key", API_KEY, "--rate-limit", "off")
    for i in range(5):
        api(sb, "POST", "/api/publish", {"channel": "pile", "data": "y" * 90_000})
    s = socket.create_connection(("127.0.0.1", sb.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.sendall(handshake_request(sb.port))
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    before = sb.rss_bytes()
    request = json.dumps({"type": "history", "room": "pile"}).encode()
    s.sendall(b"".join(encode_frame(0x1, request) for _ in range(300)))
    time.sleep(2)
    during = sb.rss_bytes()
    print(f"RSS {before / MiB:.1f} MiB -> {during / MiB:.1f} MiB with 300 replies requested, none read")
    assert during - before < 30 * MiB, f"grew by {(during - before) / MiB:.1f} MiB"
    # Nothing was lost: every reply arrives once the client reads.
    total, deadline = 0, time.time() + 60
    s.settimeout(5)
    expected = 300 * 5 * 90_000
    while total < expected and time.time() < deadline:
        chunk = s.recv(1 << 20)
        assert chunk
        total += len(chunk)
    assert total >= expected, f"read {total} bytes"
    s.close()


def test_api_publish_keeps_every_field_and_refuses_an_empty_message():
    """`payload` (what the seeds' clients read) used to be dropped and `data: null` stored."""
    status, res = call("POST", "/api/publish",
                       {"channel": "orders-keep", "type": "order_update", "payload": {"id": 42}, "meta": [1]})
    assert status == 200, res
    _, hist = call("GET", "/api/history?channel=orders-keep")
    m = hist["messages"][-1]
    assert m["payload"] == {"id": 42} and m["meta"] == [1] and m["type"] == "order_update"
    assert "data" not in m
    status, res = call("POST", "/api/publish", {"channel": "orders-keep"})
    assert status == 400 and "nothing to deliver" in res["error"], res
    status, res = call("POST", "/api/publish", {"channel": "orders-keep", "id": {"x": 1}, "data": 1})
    assert status == 400 and "id" in res["error"]
    # Deeply nested bodies are refused with a message, not a crash.
    deep = '{"channel":"orders-keep","data":' + "[" * 10_000 + "]" * 10_000 + "}"
    req = urllib.request.Request(__import__("os").environ["SWITCHBOARD_HTTP"] + "/api/publish",
                                 data=deep.encode(), method="POST")
    req.add_header("Authorization", f"Bearer {API_KEY}")
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("expected 400")
    except urllib.error.HTTPError as e:
        assert e.code == 400 and "invalid JSON" in json.loads(e.read())["error"]


# Refused and malformed calls to every HTTP API route: (method, path, body, expected status).
# `body` is bytes sent as is, so that broken JSON can be sent too.
def _malformed_api_calls():
    j = lambda v: json.dumps(v).encode()
    deep = b'{"channel":"c","data":' + b"[" * 5000 + b"]" * 5000 + b"}"
    return [
        ("POST", "/api/publish", b"{oops", 400),
        ("POST", "/api/publish", j([1, 2]), 400),
        ("POST", "/api/publish", j({"channel": 5, "data": 1}), 400),
        ("POST", "/api/publish", j({"channel": "x" * 300, "data": 1}), 400),
        ("POST", "/api/publish", j({"channel": "c"}), 400),
        ("POST", "/api/publish", j({"channel": "c", "type": 3, "data": 1}), 400),
        ("POST", "/api/publish", j({"channel": "c", "id": {"a": 1}, "data": 1}), 400),
        ("POST", "/api/publish", deep, 400),
        ("POST", "/api/broadcast", j({"channels": "c", "data": 1}), 400),
        ("POST", "/api/broadcast", j({"channels": [1], "data": 1}), 400),
        ("POST", "/api/broadcast", j({"channels": ["a"] * 1001, "data": 1}), 400),
        ("GET", "/api/history?channel=c&since=abc", None, 400),
        ("GET", "/api/history?channel=c&limit=-1", None, 400),
        ("GET", "/api/history", None, 400),
        ("GET", "/api/presence", None, 400),
        ("POST", "/api/disconnect", j({"userId": 7}), 400),
        ("POST", "/api/disconnect", b"", 400),
    ]


def _call_raw(conn, method, path, body, key=API_KEY):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_malformed_and_refused_api_calls_get_json_4xx_and_leave_memory_flat(switchboard):
    import http.client
    sb = switchboard("--api-key", API_KEY, "--rate-limit", "off")
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=10)
    calls = _malformed_api_calls()

    def round_of_calls():
        for method, path, body, expected in calls:
            status, raw = _call_raw(conn, method, path, body)
            assert status == expected, (method, path, body[:60] if body else None, status, raw[:200])
            assert json.loads(raw)["error"], raw
        # Without the key, and with a wrong one: 401 with a message.
        for key in (None, "wrong"):
            status, raw = _call_raw(conn, "GET", "/api/channels", None, key=key)
            assert status == 401 and json.loads(raw)["error"]

    def oversized_body():
        """A body over the limit (2 MB): 413, and not kept."""
        size = 3 * 1024 * 1024
        with socket.create_connection(("127.0.0.1", sb.port), timeout=10) as s:
            try:
                s.sendall(f"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode()
                          + b"x" * size)
            except OSError:
                pass  # the server may stop reading once the limit is passed
            head = s.recv(4096)
            assert head.startswith(b"HTTP/1.1 413"), head[:200]

    for _ in range(20):  # warm-up
        round_of_calls()
    before = sb.rss_bytes()
    for _ in range(300):
        round_of_calls()
    after = sb.rss_bytes()
    conn.close()
    total = 300 * (len(calls) + 2)
    print(f"RSS {before / MiB:.1f} MiB -> {after / MiB:.1f} MiB after {total} refused API calls")
    assert after - before < 4 * MiB, f"grew by {(after - before) / MiB:.1f} MiB"
    # 300 bodies of 3 MB (900 MB sent): each is cut off at the limit. The allocator keeps
    # some freed 2 MB buffers around (RSS moves up and down by ~10 MiB), but nothing
    # accumulates per request.
    peak = after
    for _ in range(300):
        oversized_body()
        peak = max(peak, sb.rss_bytes())
    print(f"RSS peak {peak / MiB:.1f} MiB during 300 oversized bodies")
    assert peak - after < 32 * MiB, f"grew by {(peak - after) / MiB:.1f} MiB"
    # Nothing was published, and no channel was created by any of it.
    assert api(sb, "GET", "/api/channels")[1]["channels"] == []
