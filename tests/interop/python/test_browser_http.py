"""What browsers do over plain HTTP besides reading feeds: anonymous publishing where the
configuration allows it (rate-limited per address, never downgrading a wrong key), and CORS
on /events, /poll and /api/publish for configured origins."""

import http.client
import json
import socket

from conftest import API_KEY
from test_poll import first_poll, poll


def request(sb, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=10)
    try:
        payload = json.dumps(body) if body is not None else None
        conn.request(method, path, body=payload, headers=headers or {})
        r = conn.getresponse()
        data = r.read() if method != "GET" or not path.startswith("/events") else r.read(200)
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def test_without_configuration_publishing_needs_the_api_key(switchboard):
    sb = switchboard("--api-key", API_KEY)
    status, _, body = request(sb, "POST", "/api/publish", {"channel": "chat:x", "data": 1})
    assert status == 401 and "API key" in json.loads(body)["error"]


def test_anonymous_clients_publish_where_allowed_and_are_rate_limited(switchboard):
    sb = switchboard("--api-key", API_KEY, "--anonymous-publish", "chat:*", "--poll-timeout", "1s",
                     "--rate-limit", "100/10/5")
    _, cursor = first_poll(sb, "chat:lobby")
    status, _, body = request(sb, "POST", "/api/publish",
                              {"channel": "chat:lobby", "type": "chat", "text": "hi from a page"},
                              {"Content-Type": "application/json"})
    assert status == 200, body
    offset = json.loads(body)["offset"]
    _, answer, _ = poll(sb, "chat:lobby", cursor)
    (message,) = answer["messages"]
    assert (message["type"], message["text"], message["userId"], message["offset"]) == \
        ("chat", "hi from a page", "anonymous", offset)
    for body, expected in [
        ({"channel": "orders", "data": 1}, 403),   # a room no pattern allows
        ({"channel": "chat:x", "data": 1, "id": "m1"}, 400),  # dedup needs a sender
        ({"channel": "chat:x"}, 400),  # nothing to deliver
        ({"channel": 7, "data": 1}, 400),
    ]:
        status, _, text = request(sb, "POST", "/api/publish", body)
        assert status == expected, (body, status, text)
        assert "error" in json.loads(text)
    # A wrong key is refused, not treated as anonymous.
    status, _, _ = request(sb, "POST", "/api/publish", {"channel": "chat:x", "data": 1},
                           {"Authorization": "Bearer wrong"})
    assert status == 401
    # The burst (5; two spent above: the first publish and the one refused for its id)
    # then 429; the backend's key is not limited.
    statuses = [request(sb, "POST", "/api/publish", {"channel": "chat:x", "data": i})[0]
                for i in range(8)]
    assert statuses[:3] == [200] * 3 and set(statuses[3:]) == {429}, statuses
    status, _, _ = request(sb, "POST", "/api/publish", {"channel": "chat:x", "data": 1},
                           {"Authorization": f"Bearer {API_KEY}"})
    assert status == 200


def test_cors_for_listed_origins_on_the_browser_endpoints_only(switchboard):
    origin = "https://app.example.com"
    sb = switchboard("--api-key", API_KEY, "--anonymous-publish", "*", "--cors-origin", origin)
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,authorization"}
    status, headers, _ = request(sb, "OPTIONS", "/api/publish", headers=preflight)
    assert status in (200, 204), status
    assert headers["access-control-allow-origin"] == origin
    assert headers["access-control-allow-credentials"] == "true"
    assert "POST" in headers["access-control-allow-methods"]
    allowed = headers["access-control-allow-headers"].lower()
    assert "content-type" in allowed and "authorization" in allowed
    assert headers["access-control-max-age"] == "600"
    # Actual requests carry the headers (and Vary: Origin for caches).
    status, headers, _ = request(sb, "POST", "/api/publish", {"channel": "a", "data": 1},
                                 {"Origin": origin, "Content-Type": "application/json"})
    assert status == 200 and headers["access-control-allow-origin"] == origin
    assert "origin" in headers.get("vary", "").lower()
    status, headers, _ = request(sb, "GET", "/poll?channels=a", headers={"Origin": origin})
    assert status == 200 and headers["access-control-allow-origin"] == origin
    s = socket.create_connection(("127.0.0.1", sb.port), timeout=5)
    s.sendall(f"GET /events?channels=a HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\r\n".encode())
    head = s.recv(4096).split(b"\r\n\r\n")[0].decode().lower()
    s.close()
    assert f"access-control-allow-origin: {origin}" in head
    # Another origin gets no CORS headers (the browser refuses the response).
    status, headers, _ = request(sb, "GET", "/poll?channels=a",
                                 headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in headers
    # The backend API and operations endpoints stay same-origin.
    status, headers, _ = request(sb, "GET", "/api/channels",
                                 headers={"Origin": origin, "Authorization": f"Bearer {API_KEY}"})
    assert status == 200 and "access-control-allow-origin" not in headers


def test_a_wildcard_origin_allows_any_page_without_credentials(switchboard):
    sb = switchboard("--cors-origin", "*")
    status, headers, _ = request(sb, "GET", "/poll?channels=a",
                                 headers={"Origin": "https://anyone.example"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in headers
