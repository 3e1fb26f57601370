"""Server-Sent Events probed the way an attacker would: malformed requests get a JSON 400 and
leave memory flat; a reader that never reads holds bounded memory."""

import json
import socket
import time
import urllib.error
import urllib.request

from conftest import API_KEY
from test_probes import api, pipelined_requests

MiB = 1024 * 1024


def get(sb, path, headers=None):
    req = urllib.request.Request(sb.http + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read(200)
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_malformed_stream_requests_get_a_json_400(switchboard):
    sb = switchboard("--api-key", API_KEY)
    cases = [
        ("/events", {}),
        ("/events?channels=,,", {}),
        ("/events?channels=" + "x" * 5000, {}),
        ("/events?channels=" + ",".join(f"r{i}" for i in range(101)), {}),
        ("/events?channels=a,b", {"Last-Event-ID": "garbage!"}),
        ("/events?channels=a,b", {"Last-Event-ID": "1-0000"}),
        ("/events?channels=a&lastEventId=1-zzzzz", {}),
        ("/events?channels=a&lastEventId=" + "1-0000." * 2000, {}),
    ]
    for path, headers in cases:
        status, body = get(sb, path, headers)
        assert status == 400, (path[:80], headers, status, body)
        assert "error" in json.loads(body), body
    # Nothing was admitted or created by the refusals.
    with urllib.request.urlopen(sb.http + "/health", timeout=5) as r:
        assert json.loads(r.read())["connections"] == 0
    assert api(sb, "GET", "/api/channels")[1]["channels"] == []


def test_refused_stream_requests_leave_memory_flat(switchboard):
    sb = switchboard()
    bad = b"GET /events?channels=a,b HTTP/1.1\r\nHost: x\r\nLast-Event-ID: zz\r\n\r\n"
    pipelined_requests(sb.port, bad, 2_000)  # warm-up
    before = sb.rss_bytes()
    assert pipelined_requests(sb.port, bad, 10_000) == {b"400": 10_000}
    growth = sb.rss_bytes() - before
    print(f"RSS grew {growth / MiB:.2f} MiB over 10 000 refused /events requests")
    assert growth < 2 * MiB


def test_a_stalled_sse_reader_holds_bounded_memory(switchboard):
    sb = switchboard("--api-key", API_KEY)
    s = socket.create_connection(("127.0.0.1", sb.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /events?channels=firehose HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)  # joined; from now on the client reads nothing
    before = sb.rss_bytes()
    payload = "x" * 10_000
    for i in range(2000):  # 20 MB for a reader that never reads
        status, _ = api(sb, "POST", "/api/publish", {"channel": "firehose", "type": "t", "text": payload, "n": i})
        assert status == 200
    growth = sb.rss_bytes() - before
    print(f"RSS grew {growth / MiB:.2f} MiB while 20 MB were published to a stalled SSE reader")
    assert growth < 8 * MiB, "the outbox budget (1 MiB) and the socket buffers bound it"
    with urllib.request.urlopen(sb.http + "/health", timeout=5) as r:
        assert json.loads(r.read())["connections"] == 1
    s.close()


def read_until(sock, marker, timeout=5.0):
    """Bytes from `sock` up to and including the first `marker`."""
    sock.settimeout(timeout)
    buf = b""
    while marker not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r}; got {buf[-300:]!r}"
        buf += chunk
    return buf


def test_a_fresh_stream_connection_is_served_off_hyper_and_parks_when_idle(switchboard):
    """A connection whose first request is a stream is served by our own driver: a
    close-delimited body (no chunking), parked without a task while idle; heartbeats go out
    from the parking lot, a delivery resumes it, the client leaving is noticed. A stream
    requested after another request on a kept-alive connection is hyper's (chunked) and
    works the same."""
    from test_operations import http_get, metric, wait_for_metric

    sb = switchboard("--api-key", API_KEY, "--park-idle-after", "200ms", "--heartbeat-interval", "1s")
    s = socket.create_connection(("127.0.0.1", sb.port))
    s.sendall(b"GET /events?channels=p HTTP/1.1\r\nHost: x\r\n\r\n")
    head = read_until(s, b"event: connected")
    status, _, rest = head.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200 OK"), status
    assert b"content-type: text/event-stream" in status.lower()
    assert b"connection: close" in status.lower()
    assert b"transfer-encoding" not in status.lower(), "close-delimited, not chunked"
    assert rest.startswith(b"retry: 2000\n\n"), rest

    wait_for_metric(sb, "switchboard_parked_connections", 1.0)
    # Heartbeats are written while it stays parked.
    read_until(s, b":heartbeat\n\n", timeout=3)
    read_until(s, b":heartbeat\n\n", timeout=3)
    _, text = http_get(sb, "/metrics")
    assert metric(text, "switchboard_parked_connections") == 1.0, text

    # A delivery resumes it; it parks again afterwards.
    status, _ = api(sb, "POST", "/api/publish", {"channel": "p", "type": "note", "text": "to the parked"})
    assert status == 200
    event = read_until(s, b"to the parked").decode()
    assert "event: note\n" in event and "id: 1-" in event, event
    wait_for_metric(sb, "switchboard_parked_connections", 1.0)

    # The same stream after another request on a kept-alive connection: hyper's, chunked.
    k = socket.create_connection(("127.0.0.1", sb.port))
    k.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    read_until(k, b"}")
    k.sendall(b"GET /events?channels=p HTTP/1.1\r\nHost: x\r\n\r\n")
    head = read_until(k, b"event: connected")
    assert b"transfer-encoding: chunked" in head.lower(), head
    status, _ = api(sb, "POST", "/api/publish", {"channel": "p", "type": "note", "text": "to both"})
    assert status == 200
    read_until(s, b"to both")
    read_until(k, b"to both")

    # The clients leave (one while parked): both streams end, their rooms are freed.
    wait_for_metric(sb, "switchboard_parked_connections", 1.0)
    s.close()
    k.close()
    deadline = time.time() + 5
    while time.time() < deadline:
        with urllib.request.urlopen(sb.http + "/health", timeout=5) as r:
            if json.loads(r.read())["connections"] == 0:
                break
        time.sleep(0.05)
    else:
        raise AssertionError("the streams were not ended after their clients left")
    _, text = http_get(sb, "/metrics")
    assert metric(text, "switchboard_parked_connections") == 0.0, text


def test_stream_request_heads_read_by_our_front_are_bounded(switchboard):
    """The front that reads a fresh connection's `GET /events` head itself: a head over
    16 KiB gets 431, a malformed one 400, one that never finishes is dropped at the header
    timeout (counted), and none of it leaves memory behind."""
    from test_operations import http_get, metric

    sb = switchboard("--handshake-timeout", "1s")

    def exchange(data, wait=5):
        s = socket.create_connection(("127.0.0.1", sb.port))
        s.settimeout(wait)
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        s.close()
        return out

    huge = b"GET /events?channels=a HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 20_000 + b"\r\n\r\n"
    assert exchange(huge).startswith(b"HTTP/1.1 431"), "oversized head"
    assert exchange(b"GET /events?channels=a HTTP/1.1\r\nBad Header\r\n\r\n").startswith(b"HTTP/1.1 400")
    started = time.time()
    assert exchange(b"GET /events?channels=a HTTP/1.1\r\nHost: x\r\n") == b"", "a head that never ends"
    assert time.time() - started < 3, "dropped at the 1 s header timeout"
    _, text = http_get(sb, "/metrics")
    assert metric(text, "switchboard_handshake_timeouts_total") >= 1, text

    before = sb.rss_bytes()
    for _ in range(300):
        exchange(huge, wait=2)
    growth = sb.rss_bytes() - before
    print(f"RSS grew {growth / MiB:.2f} MiB over 300 oversized stream heads")
    assert growth < 2 * MiB
    with urllib.request.urlopen(sb.http + "/health", timeout=5) as r:
        assert json.loads(r.read())["connections"] == 0
