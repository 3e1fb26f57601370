"""Authentication with tokens minted by an independent implementation (PyJWT with
`cryptography`): every algorithm over WebSocket, SSE, polling and the HTTP API; every
rejection with its exact close code or HTTP status; a JWKS served over loopback HTTP with a
key rotation; origins; one-time tickets; expiry. The server reads its `[auth]` table from a
configuration file."""

import base64
import hashlib
import hmac
import http.client
import http.server
import json
import threading
import time

import jwt
import pytest
import websockets.sync.client as ws_client
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import API_KEY

SECRET = "interop-secret-of-enough-length-0123456789"


def pem_public(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def keys():
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "ed": ed25519.Ed25519PrivateKey.generate(),
    }


def toml_list(items):
    return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"


def start_with_auth(switchboard, tmp_path, jwt_lines, extra="", flags=()):
    """A server whose config file has `[auth]` + `[auth.jwt]` (`jwt_lines`) + `extra`."""
    path = tmp_path / f"auth-{time.monotonic_ns()}.toml"
    path.write_text(f"""
[auth]
allowed_origins = ["https://app.example.com"]
{extra}
[auth.jwt]
leeway = 0
{jwt_lines}
""")
    return switchboard("--config", str(path), "--api-key", API_KEY, *flags)


def token(key, alg, sub="alice", ttl=60, headers=None, **claims):
    now = int(time.time())
    payload = {"sub": sub, "iat": now, "exp": now + ttl, **claims}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def ws_welcome(sb, path, **kw):
    with ws_client.connect(f"{sb.url}{path}", open_timeout=5, **kw) as ws:
        return json.loads(ws.recv(timeout=5))


def ws_close(sb, path, **kw):
    """The close code and reason a connection ends with (after the upgrade succeeded)."""
    with ws_client.connect(f"{sb.url}{path}", open_timeout=5, **kw) as ws:
        try:
            while True:
                ws.recv(timeout=5)
        except ConnectionClosed as e:
            return e.rcvd.code, e.rcvd.reason


def http_get(sb, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        if r.status == 200 and path.startswith("/events"):
            # A stream: up to its `connected` event.
            body = b""
            while b"event: connected" not in body:
                chunk = r.read1(4096)
                assert chunk, body
                body += chunk
            return r.status, body
        return r.status, r.read()
    finally:
        conn.close()


def test_pyjwt_tokens_of_every_algorithm_open_connections(switchboard, tmp_path, keys):
    files = {}
    for name, key in keys.items():
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(pem_public(key))
    sb = start_with_auth(switchboard, tmp_path, f"""
secrets = ["{SECRET}"]
public_key_files = {toml_list(files.values())}
""")
    cases = [
        (SECRET, "HS256"), (SECRET, "HS384"), (SECRET, "HS512"),
        (keys["rsa"], "RS256"), (keys["rsa"], "RS384"), (keys["rsa"], "RS512"),
        (keys["rsa"], "PS256"), (keys["rsa"], "PS512"),
        (keys["p256"], "ES256"), (keys["p384"], "ES384"), (keys["ed"], "EdDSA"),
    ]
    for key, alg in cases:
        t = token(key, alg, sub=f"user-{alg}")
        welcome = ws_welcome(sb, f"/ws?token={t}")
        assert welcome["userId"] == f"user-{alg}", (alg, welcome)
        # The same token as a header on the stream and as a user of the API.
        status, body = http_get(sb, "/events?channels=news", {"Authorization": f"Bearer {t}"})
        assert status == 200 and f'"userId":"user-{alg}"' in body.decode(), (alg, status, body)
        status, body = http_get(sb, "/api/presence?channel=news", {"Authorization": f"Bearer {t}"})
        assert status == 200, (alg, status, body)


def forged_hs_with_public_key(pem, sub="mallory"):
    """Algorithm confusion: an HS256 token whose HMAC key is the server's public RSA PEM
    (PyJWT refuses to sign this, so it is built by hand)."""
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(time.time())
    payload = b64(json.dumps({"sub": sub, "exp": now + 60}).encode())
    signature = b64(hmac.new(pem, header + b"." + payload, hashlib.sha256).digest())
    return (header + b"." + payload + b"." + signature).decode()


def test_every_rejection_has_its_close_code_and_status(switchboard, tmp_path, keys):
    rsa_file = tmp_path / "rsa.pem"
    rsa_file.write_bytes(pem_public(keys["rsa"]))
    sb = start_with_auth(switchboard, tmp_path, f"""
public_key_files = ["{rsa_file}"]
issuer = "https://idp.example.com"
audience = "switchboard"
""", flags=("--auth-timeout", "1s"))
    good = dict(iss="https://idp.example.com", aud="switchboard")
    ok = token(keys["rsa"], "RS256", **good)
    assert ws_welcome(sb, f"/ws?token={ok}")["userId"] == "alice"
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    bad = {
        "expired": (token(keys["rsa"], "RS256", ttl=-120, **good), "Token expired"),
        "not yet valid": (token(keys["rsa"], "RS256", nbf=now + 600, **good), "Invalid token"),
        "wrong issuer": (token(keys["rsa"], "RS256", iss="https://evil", aud="switchboard"), "Invalid token"),
        "wrong audience": (token(keys["rsa"], "RS256", iss=good["iss"], aud="other"), "Invalid token"),
        "bad signature": (token(other_rsa, "RS256", **good), "Invalid token"),
        "alg none": (jwt.encode({"sub": "alice", "exp": now + 60, **good}, None, algorithm="none"), "Invalid token"),
        "HS with the public key": (forged_hs_with_public_key(pem_public(keys["rsa"])), "Invalid token"),
        "garbage": ("garbage", "Invalid token"),
    }
    for name, (t, reason) in bad.items():
        assert ws_close(sb, f"/ws?token={t}") == (4001, reason), name
        status, body = http_get(sb, "/events?channels=news", {"Authorization": f"Bearer {t}"})
        assert status == 401 and json.loads(body)["error"] == reason, (name, status, body)
        status, body = http_get(sb, f"/poll?channels=news&token={t}")
        assert status == 401, (name, status, body)
    # No credentials at all while anonymous access is off (keys are configured): a WebSocket
    # gets `auth_timeout` for the first-message `auth`, a stream is refused at once.
    assert ws_close(sb, "/ws") == (4000, "Authentication timeout")
    assert http_get(sb, "/events?channels=news")[0] == 401
    # Refused tokens never reach a log line (query credentials are redacted).
    assert ok not in sb.log_tail(1 << 20)


class Jwks:
    """A JWKS document served over loopback HTTP, replaceable (a key rotation)."""

    def __init__(self):
        self.document = {"keys": []}
        self.fetches = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.fetches += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def publish(self, *pairs):
        """Serve these (kid, private key) pairs' public keys."""
        keys = []
        for kid, key in pairs:
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            jwk.update(kid=kid, use="sig", alg="ES256")
            keys.append(jwk)
        self.document = {"keys": keys}

    def close(self):
        self.httpd.shutdown()


def test_a_jwks_over_http_follows_a_key_rotation(switchboard, tmp_path):
    jwks = Jwks()
    try:
        k1, k2 = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        jwks.publish(("k1", k1))
        sb = start_with_auth(switchboard, tmp_path, f"""
jwks_url = "{jwks.url}"
jwks_refetch_interval = "1s"
""")
        t1 = token(k1, "ES256", headers={"kid": "k1"})
        assert ws_welcome(sb, f"/ws?token={t1}")["userId"] == "alice"
        # Rotation: k2 replaces k1. A token with the new kid makes the server refetch.
        jwks.publish(("k2", k2))
        time.sleep(1.1)  # the refetch interval since the first fetch
        t2 = token(k2, "ES256", sub="bob", headers={"kid": "k2"})
        assert ws_welcome(sb, f"/ws?token={t2}")["userId"] == "bob"
        # The retired key is gone.
        assert ws_close(sb, f"/ws?token={t1}") == (4001, "Invalid token")
        # Unknown kids do not make the server fetch on every attempt.
        before = jwks.fetches
        for i in range(20):
            t = token(k2, "ES256", headers={"kid": f"unknown-{i}"})
            assert http_get(sb, "/events?channels=news", {"Authorization": f"Bearer {t}"})[0] == 401
        assert jwks.fetches - before <= 2, jwks.fetches - before
    finally:
        jwks.close()


def test_origins_cookies_tickets_and_channel_permissions(switchboard, tmp_path):
    sb = start_with_auth(switchboard, tmp_path, f'secrets = ["{SECRET}"]', extra="""
[[auth.permissions]]
rooms = "user:*"
allow = { match = "user:{sub}" }
[[auth.permissions]]
rooms = "vip:*"
allow = "channels"
""")
    t = token(SECRET, "HS256", channels=["vip:gold"])
    # Origin allowlist at the handshake: 403 for others, listed ones pass.
    with pytest.raises(InvalidStatus) as refused:
        ws_welcome(sb, f"/ws?token={t}", origin="https://evil.example.net")
    assert refused.value.response.status_code == 403
    assert ws_welcome(sb, f"/ws?token={t}", origin="https://app.example.com")["userId"] == "alice"
    # The seeds' cookie pattern: the browser sends the `session` cookie with the upgrade.
    assert ws_welcome(sb, "/ws", additional_headers={"Cookie": f"session={t}"})["userId"] == "alice"
    # Channel permissions on streams: personal rooms, the `channels` claim.
    auth = {"Authorization": f"Bearer {t}"}
    assert http_get(sb, "/events?channels=user:alice,vip:gold", auth)[0] == 200
    assert http_get(sb, "/events?channels=user:bob", auth)[0] == 403
    assert http_get(sb, "/events?channels=vip:silver", auth)[0] == 403
    # A one-time ticket, asked for with the user's token, opens one connection.
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=10)
    conn.request("POST", "/api/ticket", headers=auth)
    r = conn.getresponse()
    ticket = json.loads(r.read())["ticket"]
    assert r.status == 200
    assert ws_welcome(sb, f"/ws?ticket={ticket}")["userId"] == "alice"
    assert ws_close(sb, f"/ws?ticket={ticket}") == (4001, "Invalid token")
    assert ticket not in sb.log_tail(1 << 20)


def test_streams_end_when_their_token_expires(switchboard, tmp_path):
    sb = start_with_auth(switchboard, tmp_path, f'secrets = ["{SECRET}"]')
    t = token(SECRET, "HS256", ttl=2)
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=10)
    conn.request("GET", f"/events?channels=news&token={t}")
    r = conn.getresponse()
    assert r.status == 200
    started = time.time()
    text = b""
    while b"Token expired" not in text:
        chunk = r.read1(4096)
        assert chunk, text
        text += chunk
    assert b'"code":4001' in text
    assert time.time() - started < 4


def test_refused_credentials_and_ticket_probes_leave_memory_flat(switchboard, tmp_path):
    """Attacker-style: floods of bad tokens on every transport and malformed ticket requests
    get their 4xx, and memory stays flat."""
    from test_probes import pipelined_requests

    sb = start_with_auth(switchboard, tmp_path, f'secrets = ["{SECRET}"]')
    forged = token("wrong-secret-of-enough-length-00000000000", "HS256")
    requests = [
        f"GET /events?channels=a&token={forged} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        f"GET /poll?channels=a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {forged}\r\n\r\n".encode(),
        f"GET /api/history?channel=a HTTP/1.1\r\nHost: x\r\nCookie: session={forged}\r\n\r\n".encode(),
        b"POST /api/ticket HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ]
    for r in requests:
        pipelined_requests(sb.port, r, 1_000)  # warm-up
    before = sb.rss_bytes()
    for r in requests:
        assert pipelined_requests(sb.port, r, 5_000) == {b"401": 5_000}, r[:40]
    growth = sb.rss_bytes() - before
    print(f"RSS grew {growth / 2**20:.2f} MiB over 20 000 refused authenticated requests")
    assert growth < 3 * 2**20

    # Malformed ticket requests from a backend: clear 400s.
    good = token(SECRET, "HS256")
    for body in [b"", b"[]", b'{"sub": 7}', b'{"sub": ""}', b'{"sub": "a", "claims": 3}',
                 b'{"sub": "' + b"x" * 300 + b'"}', b'{"sub": "a", "ttl": 60}', b"{" * 10_000]:
        conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=10)
        conn.request("POST", "/api/ticket", body=body, headers={"Authorization": f"Bearer {API_KEY}"})
        r = conn.getresponse()
        assert r.status == 400 and "error" in json.loads(r.read()), (body[:30], r.status)
    # WebSocket: a flood of bad tokens is closed 4001 each time and leaves no session.
    for _ in range(50):
        assert ws_close(sb, f"/ws?token={forged}") == (4001, "Invalid token")
    assert ws_welcome(sb, f"/ws?token={good}")["userId"] == "alice"
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=10)
    conn.request("GET", "/health")
    assert json.loads(conn.getresponse().read())["connections"] == 0


class ConnectProxy:
    """The application's session endpoint (the seeds' `verifySession`) on loopback HTTP:
    `good-*` cookies belong to users, `slow-*` answer too late, others are refused."""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                credential = body.get("cookie") or body.get("token") or ""
                if credential.startswith("slow-"):
                    time.sleep(2)
                if credential.startswith("good-"):
                    answer = json.dumps({"user_id": credential[5:], "channels": ["team:*"]}).encode()
                    self.send_response(200)
                else:
                    answer = b'{"error":"unknown session"}'
                    self.send_response(403)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/switchboard/connect"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_opaque_session_cookies_go_through_the_connect_proxy(switchboard, tmp_path):
    proxy = ConnectProxy()
    try:
        path = tmp_path / "proxy.toml"
        path.write_text(f"""
[auth.connect_proxy]
url = "{proxy.url}"
timeout = "500ms"
""")
        sb = switchboard("--config", str(path), "--api-key", API_KEY)
        welcome = ws_welcome(sb, "/ws", additional_headers={"Cookie": "session=good-ursula"})
        assert welcome["userId"] == "ursula", welcome
        assert proxy.requests[-1]["transport"] == "websocket"
        assert proxy.requests[-1]["cookie"] == "good-ursula"
        status, body = http_get(sb, "/events?channels=team:a", {"Cookie": "session=good-ursula"})
        assert status == 200 and b'"userId":"ursula"' in body, (status, body)
        # The application refuses: 4001 / 401.
        assert ws_close(sb, "/ws", additional_headers={"Cookie": "session=stolen"}) == (4001, "Invalid token")
        assert http_get(sb, "/events?channels=a", {"Cookie": "session=stolen"})[0] == 401
        # The application does not answer in time: 1013 / 503 (try again later).
        assert ws_close(sb, "/ws", additional_headers={"Cookie": "session=slow-x"}) == (1013, "Auth backend unavailable")
        assert http_get(sb, "/events?channels=a", {"Cookie": "session=slow-y"})[0] == 503
    finally:
        proxy.close()


def test_each_credential_source_over_each_transport(switchboard, tmp_path):
    """Header, `?token=`, cookie and one-time ticket, on WebSocket, SSE, long polling and the
    HTTP API: each names the user; a WebSocket message to a room without the right is refused
    with `error` and the connection stays open."""
    sb = start_with_auth(switchboard, tmp_path, f'secrets = ["{SECRET}"]', extra="""
[[auth.permissions]]
rooms = "user:*"
allow = { match = "user:{sub}" }
""")
    t = token(SECRET, "HS256", sub="mia")

    def ticket():
        conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=10)
        conn.request("POST", "/api/ticket", headers={"Authorization": f"Bearer {t}"})
        return json.loads(conn.getresponse().read())["ticket"]

    sources = {
        "header": lambda: ("", {"Authorization": f"Bearer {t}"}),
        "query": lambda: (f"token={t}", {}),
        "cookie": lambda: ("", {"Cookie": f"theme=dark; session={t}"}),
        "ticket": lambda: (f"ticket={ticket()}", {}),
    }
    for name, source in sources.items():
        query, headers = source()
        sep = "&" if query else ""
        with ws_client.connect(f"{sb.url}/ws?{query}", additional_headers=headers, open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["userId"] == "mia", name
            ws.send(json.dumps({"type": "join", "room": "user:mia"}))
            assert json.loads(ws.recv(timeout=5))["type"] == "joined", name
            ws.send(json.dumps({"type": "chat", "room": "user:max", "text": "hi", "id": "m1"}))
            refused = json.loads(ws.recv(timeout=5))
            assert (refused["type"], refused["code"], refused.get("id")) == ("error", "forbidden", "m1"), (name, refused)
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=5))["type"] == "pong", name
        query, headers = source()
        status, body = http_get(sb, f"/events?channels=user:mia{sep}{query}", headers)
        assert status == 200 and b'"userId":"mia"' in body, (name, status, body)
        query, headers = source()
        status, body = http_get(sb, f"/poll?channels=user:mia{sep}{query}", headers)
        assert status == 200 and json.loads(body)["messages"][0]["userId"] == "mia", (name, status, body)
        if name != "ticket":  # (a ticket opens connections, it is not an API credential)
            query, headers = source()
            conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=10)
            conn.request("POST", f"/api/publish?{query}",
                         body=json.dumps({"channel": "user:mia", "text": name}),
                         headers={**headers, "Content-Type": "application/json"})
            r = conn.getresponse()
            answer = r.read()
            assert r.status == 200, (name, r.status, answer)
