"""Operations (SPEC §8, issue 4): tokens never reach the logs, half-open connections are
dropped within heartbeat interval + timeout with everything they held freed, and /metrics and
/health follow. Each test runs its own server (the `switchboard` fixture in conftest.py)."""
import json
import socket
import time
import urllib.request

from wsframes import encode_frame, handshake_request

import websockets.sync.client as ws_client

SECRET = "SUPERSECRET-7f3a9c"
API_KEY = "ops-key"


def http_get(server, path, headers=None):
    req = urllib.request.Request(server.http + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text, prefix):
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def raw_ws_connect(port, path="/ws"):
    """A WebSocket handshake over a plain socket; returns the socket and the bytes after the
    response head."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(handshake_request(port, path))
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        assert chunk, "EOF during the handshake"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s, rest


def test_tokens_in_urls_are_redacted_in_every_log_line(switchboard):
    server = switchboard("--log-level", "debug", "--log-format", "json", "--echo")
    with ws_client.connect(f"{server.url}/ws?token={SECRET}&room=lobby") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
    with ws_client.connect(f"{server.url}/echo?access_token={SECRET}") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    status, _ = http_get(server, f"/health?token={SECRET}")
    assert status == 200
    time.sleep(0.3)
    assert server.stop() == 0
    log = open(server.log_path, encoding="utf-8").read()
    lines = [l for l in log.splitlines() if l.strip()]
    records = [json.loads(l) for l in lines]  # every line is structured JSON
    assert SECRET not in log
    targets = [r["fields"].get("target", "") for r in records if "fields" in r]
    assert any("token=[redacted]&room=lobby" in t for t in targets), targets
    assert any("access_token=[redacted]" in t for t in targets), targets
    # WebSocket events carry the connection id (the welcome's connectionId) in their span.
    upgrades = [r for r in records if r.get("fields", {}).get("message") == "websocket upgrade"]
    assert upgrades and all("conn" in r.get("span", {}) for r in upgrades), upgrades
    assert any("[redacted]" in r["fields"].get("path", "") for r in upgrades), upgrades


def seconds_until_closed(sock, since):
    """Read and discard (never answering) until the server closes the TCP connection; close
    the socket and return the seconds from `since`."""
    sock.settimeout(10)
    while True:
        try:
            if not sock.recv(65536):
                break
        except ConnectionResetError:
            break
    sock.close()
    return time.time() - since


def test_half_open_connection_is_dropped_and_its_resources_freed(switchboard):
    interval, timeout = 1.0, 1.0
    server = switchboard("--heartbeat-interval", "1s", "--heartbeat-timeout", "1s",
                         "--api-key", API_KEY)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    # A healthy member, whose library answers pings, stays throughout.
    with ws_client.connect(f"{server.url}/ws") as healthy:
        assert json.loads(healthy.recv(timeout=5))["type"] == "welcome"
        healthy.send(json.dumps({"type": "join", "room": "r"}))
        # The half-open client: joins, then never reads or answers again (its peer vanished
        # without a FIN, as when a laptop sleeps or a NAT forgets the flow).
        sock, _ = raw_ws_connect(server.port)
        sock.sendall(encode_frame(0x1, json.dumps({"type": "join", "room": "r"}).encode()))
        deadline = time.time() + 5
        while True:
            _, text = http_get(server, "/api/presence?channel=r", auth)
            if len(json.loads(text)["members"]) == 2:
                break
            assert time.time() < deadline, text
            time.sleep(0.05)
        silent_since = time.time()
        # Discard whatever arrives (welcome, joined, pings) without answering.
        dropped_after = seconds_until_closed(sock, silent_since)
        # Dropped within interval + timeout (+ scheduling margin), and not before a ping had
        # its full timeout.
        assert timeout <= dropped_after <= interval + timeout + 1.0, dropped_after
        _, text = http_get(server, "/api/presence?channel=r", auth)
        members = json.loads(text)["members"]
        assert len(members) == 1, members  # membership and presence freed
        _, health = http_get(server, "/health")
        assert json.loads(health)["connections"] == 1
        _, metrics = http_get(server, "/metrics")
        assert metric(metrics, 'switchboard_disconnects_total{transport="websocket",code="1006",'
                               'reason="heartbeat_timeout"}') == 1.0, metrics
        # The healthy member saw the other one leave and is still served.
        healthy.send(json.dumps({"type": "ping"}))
        seen = []
        while "pong" not in seen:
            seen.append(json.loads(healthy.recv(timeout=5))["type"])
        assert "user_left" in seen, seen


def wait_for_metric(server, name, value, timeout=5):
    deadline = time.time() + timeout
    while True:
        _, text = http_get(server, "/metrics")
        if metric(text, name) == value:
            return
        assert time.time() < deadline, f"{name} is {metric(text, name)}, expected {value}"
        time.sleep(0.05)


def test_parked_connections_keep_heartbeats_deliveries_and_the_half_open_rule(switchboard):
    """Idle connections are parked without a task (`park_idle_after`); with a third-party
    client nothing about them changes: heartbeats are answered (and the connection stays
    parked meanwhile), room messages reach them, a half-open one is still dropped within
    interval + timeout, a Ping from the client is answered."""
    interval, timeout = 1.0, 1.0
    server = switchboard("--park-idle-after", "200ms", "--heartbeat-interval", "1s",
                         "--heartbeat-timeout", "1s", "--api-key", API_KEY)
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    with ws_client.connect(f"{server.url}/ws") as member:
        assert json.loads(member.recv(timeout=5))["type"] == "welcome"
        member.send(json.dumps({"type": "join", "room": "r"}))
        assert json.loads(member.recv(timeout=5))["type"] == "joined"
        sock, _ = raw_ws_connect(server.port)
        sock.sendall(encode_frame(0x1, json.dumps({"type": "join", "room": "r"}).encode()))
        silent_since = time.time()
        wait_for_metric(server, "switchboard_parked_connections", 2.0)

        # The half-open one never answers: dropped within interval + timeout (+ margin).
        dropped_after = seconds_until_closed(sock, silent_since)
        assert timeout <= dropped_after <= interval + timeout + 1.0, dropped_after

        # The member's library answers the heartbeat Pings: several intervals later it is
        # still connected, and it stayed parked (the Pongs were consumed by the lot).
        _, before = http_get(server, "/metrics")
        time.sleep(3 * interval)
        _, after = http_get(server, "/metrics")
        assert metric(after, "switchboard_parked_connections") == 1.0, after
        # Pings went out (2 bytes each) while nothing else did.
        assert metric(after, "switchboard_sent_bytes_total") > metric(before, "switchboard_sent_bytes_total")
        assert metric(after, "switchboard_messages_sent_total") == metric(before, "switchboard_messages_sent_total")

        # A room message resumes it.
        body = json.dumps({"channel": "r", "data": {"text": "hello parked"}}).encode()
        req = urllib.request.Request(server.http + "/api/publish", data=body, headers=auth, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
        while True:
            m = json.loads(member.recv(timeout=5))
            if m["type"] not in ("user_joined", "user_left"):
                break
        assert "hello parked" in json.dumps(m), m

        # Protocol Pings from the client (parked again by now) get their Pongs, in place: the
        # connection stays parked.
        wait_for_metric(server, "switchboard_parked_connections", 1.0)
        for _ in range(3):
            assert member.ping(b"still there?").wait(timeout=5), "no Pong"
        _, text = http_get(server, "/metrics")
        assert metric(text, "switchboard_parked_connections") == 1.0, text
