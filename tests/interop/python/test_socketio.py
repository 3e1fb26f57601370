"""Engine.IO / Socket.IO on the wire, byte for byte, with Python's `websockets` and plain
HTTP: heartbeats (server pings, pong deadline, parked connections answering in place),
the upgrade's corner cases, `maxPayload`, the connect timeout, and refused input in a loop
with memory flat."""
import json
import threading
import time
import urllib.error
import urllib.request

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from test_operations import http_get, metric, wait_for_metric


def request(sb, query, method="GET", body=None, path="/socket.io/", headers=None):
    req = urllib.request.Request(f"{sb.http}{path}?{query}", data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def polling_open(sb, path="/socket.io/"):
    status, body = request(sb, "EIO=4&transport=polling", path=path)
    assert status == 200 and body.startswith("0{"), body
    return json.loads(body[1:])


def ws_open(sb, query="EIO=4&transport=websocket", path="/socket.io/"):
    ws = connect(f"{sb.url}{path}?{query}", compression=None, open_timeout=5)
    return ws


def test_websocket_heartbeat_ping_after_the_interval_and_close_without_pong(switchboard):
    sb = switchboard("--socketio-ping-interval", "300ms", "--socketio-ping-timeout", "200ms")
    ws = ws_open(sb)
    t0 = time.time()
    open_packet = json.loads(ws.recv(timeout=5)[1:])
    assert (open_packet["pingInterval"], open_packet["pingTimeout"]) == (300, 200)
    ws.send("40")
    assert ws.recv(timeout=5).startswith("40{")
    # The first ping one interval after the handshake, not at once; a pong keeps it open.
    for _ in range(3):
        assert ws.recv(timeout=2) == "2"
        ws.send("3")
    elapsed = time.time() - t0
    assert elapsed >= 0.85, f"three pings came after {elapsed:.2f} s"
    # No pong (and nothing else: any packet counts as a sign of life, as in the reference
    # server): the session ends one pingTimeout after the ping.
    assert ws.recv(timeout=2) == "2"
    t1 = time.time()
    try:
        while True:
            assert ws.recv(timeout=2) != "2", "no second ping before the timeout"
    except ConnectionClosed:
        pass
    waited = time.time() - t1
    assert 0.15 <= waited < 1.5, f"closed {waited:.2f} s after the unanswered ping"


def test_polling_heartbeat_answers_the_held_get_with_a_ping(switchboard):
    sb = switchboard("--socketio-ping-interval", "300ms", "--socketio-ping-timeout", "300ms")
    sid = polling_open(sb)["sid"]
    t0 = time.time()
    assert request(sb, f"EIO=4&transport=polling&sid={sid}") == (200, "2")
    assert 0.25 <= time.time() - t0 < 1.5
    assert request(sb, f"EIO=4&transport=polling&sid={sid}", "POST", b"3") == (200, "ok")
    assert request(sb, f"EIO=4&transport=polling&sid={sid}") == (200, "2")
    # No pong: the session is gone after the timeout, and its sid unknown.
    time.sleep(0.9)
    status, body = request(sb, f"EIO=4&transport=polling&sid={sid}")
    assert status == 400 and '"code":1' in body, (status, body)


def test_parked_socketio_connections_ping_and_take_pongs_in_place(switchboard):
    sb = switchboard("--socketio-ping-interval", "300ms", "--socketio-ping-timeout", "1s",
                     "--park-idle-after", "100ms", "--api-key", "k")
    ws = ws_open(sb)
    ws.recv(timeout=5)
    ws.send("40")
    assert ws.recv(timeout=5).startswith("40{")
    ws.send('421["join_room","parked"]')
    assert ws.recv(timeout=5) == '431[{"room":"parked","status":"ok"}]'
    wait_for_metric(sb, "switchboard_parked_connections", 1, timeout=5)
    _, text = http_get(sb, "/metrics")
    # Pings keep coming from the parking lot and our pongs are taken there: still parked.
    for _ in range(4):
        assert ws.recv(timeout=2) == "2"
        ws.send("3")
        time.sleep(0.05)
        _, text = http_get(sb, "/metrics")
        assert metric(text, "switchboard_parked_connections") == 1, "stays parked across heartbeats"
    # A delivery wakes it.
    req = urllib.request.Request(f"{sb.http}/api/publish", method="POST",
                                 data=json.dumps({"room": "parked", "data": 1}).encode(),
                                 headers={"authorization": "Bearer k",
                                          "content-type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()
    while True:
        msg = ws.recv(timeout=2)
        if msg == "2":
            ws.send("3")
            continue
        assert msg.startswith('42["message",{'), msg
        assert json.loads(msg[2:])[1]["data"] == 1
        break
    ws.close()


def test_upgrade_corner_cases(switchboard):
    sb = switchboard()
    sid = polling_open(sb)["sid"]
    # A GET held while the upgrade starts is answered with a noop once probed.
    held = {}
    t = threading.Thread(target=lambda: held.update(
        r=request(sb, f"EIO=4&transport=polling&sid={sid}")))
    t.start()
    time.sleep(0.1)
    ws = ws_open(sb, f"EIO=4&transport=websocket&sid={sid}")
    ws.send("2probe")
    assert ws.recv(timeout=5) == "3probe"
    t.join(5)
    assert held["r"] == (200, "6")
    # Polls during the upgrade get a noop at once.
    assert request(sb, f"EIO=4&transport=polling&sid={sid}") == (200, "6")
    ws.send("5")
    ws.send("40")
    assert ws.recv(timeout=5).startswith("40{")
    # After the upgrade: a GET, and a second WebSocket with the same sid, are refused...
    status, body = request(sb, f"EIO=4&transport=polling&sid={sid}")
    assert status == 400 and '"code":3' in body
    try:
        other = ws_open(sb, f"EIO=4&transport=websocket&sid={sid}")
        other.recv(timeout=2)
        raise AssertionError("a second WebSocket for the session was accepted")
    except Exception as e:  # noqa: BLE001 - refused at the handshake
        assert "400" in str(e) or isinstance(e, ConnectionClosed), e
    # ... while the first keeps working.
    ws.send('421["join_room","up"]')
    assert ws.recv(timeout=5) == '431[{"room":"up","status":"ok"}]'
    ws.close()


def test_max_payload_closes_the_session(switchboard):
    sb = switchboard("--socketio-max-payload", "1000")
    ws = ws_open(sb)
    ws.recv(timeout=5)
    ws.send("4" + "x" * 2000)
    try:
        ws.recv(timeout=5)
        raise AssertionError("a message over maxPayload was accepted")
    except ConnectionClosed:
        pass
    sid = polling_open(sb)["sid"]
    status, _ = request(sb, f"EIO=4&transport=polling&sid={sid}", "POST", b"4" + b"x" * 5000)
    assert status == 413
    assert request(sb, f"EIO=4&transport=polling&sid={sid}")[0] == 400


def test_connect_timeout_closes_a_connection_that_never_connects(switchboard):
    sb = switchboard("--socketio-connect-timeout", "300ms")
    ws = ws_open(sb)
    ws.recv(timeout=5)
    t0 = time.time()
    try:
        while True:
            ws.recv(timeout=3)
    except ConnectionClosed:
        pass
    assert 0.2 <= time.time() - t0 < 2


def test_invalid_packets_close_only_their_connection(switchboard):
    sb = switchboard()
    good = ws_open(sb)
    good.recv(timeout=5)
    good.send("40")
    good.recv(timeout=5)
    for bad in ["9", "4", "42[", '42{"a":1}', "41/nope,", "4" + "[" * 10000, "45-[]", "40/x,{]"]:
        ws = ws_open(sb)
        ws.recv(timeout=5)
        if not bad.startswith("40/x"):
            ws.send("40")
            ws.recv(timeout=5)
        ws.send(bad)
        closed = False
        try:
            for _ in range(3):
                msg = ws.recv(timeout=3)
                assert not msg.startswith("43"), (bad, msg)
        except ConnectionClosed:
            closed = True
        except TimeoutError:
            pass
        if bad != "41/nope,":
            assert closed, f"{bad[:20]!r} did not close the connection"
        ws.close()
    good.send('421["join_room","still"]')
    assert good.recv(timeout=5) == '431[{"room":"still","status":"ok"}]'


def test_refused_and_malformed_requests_in_a_loop_leave_memory_flat(switchboard):
    sb = switchboard()

    def burst(n):
        for i in range(n):
            request(sb, "EIO=3&transport=polling")
            request(sb, f"EIO=4&transport=polling&sid=nope{i}")
            request(sb, "EIO=4&transport=polling", "POST", b"x")
            sid = polling_open(sb)["sid"]
            request(sb, f"EIO=4&transport=polling&sid={sid}", "POST", b"4" + b"{" * 3000 + b"\x1e9")
            request(sb, f"EIO=4&transport=polling&sid={sid}")

    burst(200)
    before = sb.rss_bytes()
    burst(600)
    grown = sb.rss_bytes() - before
    assert grown < 3 * 1024 * 1024, f"RSS grew {grown} bytes over 600 rounds"
    _, text = http_get(sb, "/metrics")
    assert metric(text, 'switchboard_connections{transport="socketio"}') == 0


def test_invalid_msgpack_packets_close_only_their_connection(switchboard):
    """The MessagePack parser: the first packet decides the codec (binary → MessagePack);
    malformed MessagePack, deep nesting, lying lengths, unknown types and a text packet on a
    MessagePack connection close that connection and nothing else."""
    import msgpack

    sb = switchboard()

    def packed_connection():
        ws = ws_open(sb)
        ws.recv(timeout=5)
        ws.send(msgpack.packb({"type": 0, "nsp": "/", "data": {}}))
        reply = msgpack.unpackb(ws.recv(timeout=5))
        assert reply["type"] == 0 and isinstance(reply["data"]["sid"], str), reply
        return ws

    good = packed_connection()
    bads = [
        b"\xc1",                                      # never-used byte
        b"\x91" * 10000 + b"\x00",                    # nested arrays far past the depth limit
        b"\xdd\xff\xff\xff\xff",                      # array32 claiming 4 G elements, no data
        msgpack.packb({"type": 9, "nsp": "/", "data": []}),
        msgpack.packb({"type": 2, "nsp": "/", "data": "not an array"}),
        msgpack.packb({"type": 2, "nsp": 7, "data": ["x"]}),
        msgpack.packb({"type": 2, "nsp": "/", "data": ["x"], "id": "1"}),
        msgpack.packb({"type": 2, "nsp": "/", "data": ["x"]}) + b"\x00",  # trailing byte
        '42["message"]',                              # text on a MessagePack connection
    ]
    for bad in bads:
        ws = packed_connection()
        ws.send(bad)
        closed = False
        try:
            for _ in range(3):
                ws.recv(timeout=3)
        except ConnectionClosed:
            closed = True
        except TimeoutError:
            pass
        assert closed, f"{bad[:20]!r} did not close the connection"
    good.send(msgpack.packb({"type": 2, "nsp": "/", "data": ["join_room", "still"], "id": 1}))
    reply = msgpack.unpackb(good.recv(timeout=5))
    assert reply == {"type": 3, "nsp": "/", "data": [{"room": "still", "status": "ok"}], "id": 1}, reply
