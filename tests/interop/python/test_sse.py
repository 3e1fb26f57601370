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
