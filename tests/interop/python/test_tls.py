"""TLS (issue 4 item 7) with third-party clients: Python `websockets` over `wss://`,
`urllib`/`http.client` over `https://` and `curl` over HTTP/2 (ALPN `h2`, issue 10), against
a certificate generated here with the `openssl` CLI and trusted by nothing but these clients."""
import asyncio
import http.client
import json
import re
import shutil
import ssl
import subprocess
import time
import urllib.request

from websockets.asyncio.client import connect as ws_connect


def make_certificate(directory):
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


# WebSockets here use websockets' asyncio client: its sync client reads in a background
# thread while the caller writes, on one OpenSSL object, which OpenSSL does not allow (seen:
# the handshake request lost, "[SSL] internal error") in about 5 % of runs.
async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def wss_chat(url, context):
    async with ws_connect(url, ssl=context) as a, ws_connect(url, ssl=context) as b:
        assert (await recv_json(a))["type"] == "welcome"
        assert (await recv_json(b))["type"] == "welcome"
        for c in (a, b):
            await c.send(json.dumps({"type": "join", "room": "secure"}))
            # Each waits for its `joined`: otherwise `a`'s chat may be handled before `b`'s
            # join (two connections, two tasks) and never reach `b`.
            while (await recv_json(c))["type"] != "joined":
                pass
        big = "x" * 200_000  # several TLS records
        await a.send(json.dumps({"type": "chat", "room": "secure", "message": big}))
        while True:
            m = await recv_json(b)
            if m["type"] == "chat":
                break
        assert m["message"] == big and m["room"] == "secure"


def test_wss_and_https_with_a_generated_certificate(switchboard, tmp_path):
    cert, key = make_certificate(tmp_path)
    server = switchboard("--tls-cert", str(cert), "--tls-key", str(key))
    context = ssl.create_default_context(cafile=str(cert))
    base = f"localhost:{server.port}"

    run(wss_chat(f"wss://{base}/ws", context))

    with urllib.request.urlopen(f"https://{base}/health", context=context, timeout=5) as resp:
        assert resp.status == 200
        assert json.loads(resp.read())["status"] == "ok"

    # The certificate is checked: a client that does not trust it is refused.
    strict = ssl.create_default_context()
    try:
        urllib.request.urlopen(f"https://{base}/health", context=strict, timeout=5)
        raise AssertionError("an untrusted certificate was accepted")
    except urllib.error.URLError as e:
        assert isinstance(e.reason, ssl.SSLCertVerificationError), e


def curl():
    """The curl CLI, with HTTP/2: a missing one fails the test (scripts/test.sh installs it)."""
    path = shutil.which("curl")
    assert path, "curl is required for the HTTP/2 tests (apt-get install curl)"
    features = subprocess.run([path, "-V"], check=True, capture_output=True, text=True).stdout
    assert re.search(r"^Features:.*\bHTTP2\b", features, re.M), f"curl without HTTP/2:\n{features}"
    return path


def wait_for(predicate, what, timeout=10):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_curl_multiplexes_sse_streams_over_one_http2_connection(switchboard, tmp_path):
    cert, key = make_certificate(tmp_path)
    server = switchboard("--tls-cert", str(cert), "--tls-key", str(key), "--api-key", "h2-key",
                         "--log-format", "json")
    base = f"https://localhost:{server.port}"
    paths = ["/events?channels=x", "/events?channels=x,y", "/events?channel=x",
             "/events?channels=y,x"]
    outputs = [tmp_path / f"stream-{i}.txt" for i in range(len(paths))]
    command = [curl(), "--http2", "--cacert", str(cert), "-v", "-sS", "-N",
               "--parallel", "--parallel-max", "4", "--max-time", "20",
               "-w", "%{http_version} %{num_connects} %{response_code}\n"]
    for path, output in zip(paths, outputs):
        command += [base + path, "-o", str(output)]
    stderr = open(tmp_path / "curl.stderr", "w+")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        read = lambda f: f.read_text() if f.exists() else ""
        wait_for(lambda: all("event: connected" in read(f) for f in outputs), "event: connected")

        # A publish over HTTP/1.1 on the same TLS port reaches every stream.
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("localhost", server.port, context=context, timeout=5)
        conn.request("POST", "/api/publish", json.dumps({"channel": "x", "data": {"n": 42}}),
                     {"Authorization": "Bearer h2-key", "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert (resp.status, resp.version) == (200, 11), (resp.status, resp.version)
        assert json.loads(resp.read())["delivered"] == len(paths)
        conn.close()
        wait_for(lambda: all('"data":{"n":42}' in read(f) for f in outputs), "the publish")

        # Shutdown ends every stream cleanly (curl exits 0, not 28 for --max-time), in time.
        started = time.time()
        assert server.stop() == 0
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, (proc.returncode, out)
        assert time.time() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr.seek(0)
    verbose = stderr.read()

    # Every response came over HTTP/2, all on ONE connection.
    lines = [l.split() for l in out.splitlines()]
    assert [l[0] for l in lines] == ["2"] * len(paths), out
    assert [l[2] for l in lines] == ["200"] * len(paths), out
    assert sum(int(l[1]) for l in lines) == 1, out
    assert verbose.count("ALPN: server accepted h2") == 1, verbose
    assert verbose.count("Re-using existing connection") == len(paths) - 1, verbose
    log = [json.loads(l) for l in server.log_path.read_text().splitlines() if l.strip()]
    stopped = [r for r in log if r.get("fields", {}).get("message") == "switchboard stopped"]
    assert stopped and stopped[0]["fields"]["clean"] is True, stopped


def test_http11_and_http2_share_the_tls_port_and_websocket_needs_http11(switchboard, tmp_path):
    cert, key = make_certificate(tmp_path)
    server = switchboard("--tls-cert", str(cert), "--tls-key", str(key), "--echo")
    base = f"https://localhost:{server.port}"

    def version_and_status(*args):
        out = subprocess.run(
            [curl(), "--cacert", str(cert), "-sS", "-o", "/dev/null",
             "-w", "%{http_version} %{response_code}", *args],
            check=True, capture_output=True, text=True, timeout=10).stdout
        return out.split()

    assert version_and_status("--http1.1", base + "/health") == ["1.1", "200"]
    assert version_and_status("--http2", base + "/health") == ["2", "200"]
    # WebSocket over HTTP/2 (RFC 8441) is not served: a clear 505, not a hang or a reset.
    ws_headers = ["-H", "Upgrade: websocket", "-H", "Connection: Upgrade",
                  "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                  "-H", "Sec-WebSocket-Version: 13", "--max-time", "5"]
    assert version_and_status("--http2", *ws_headers, base + "/ws") == ["2", "505"]

    # A WebSocket client that offers ALPN `http/1.1` (as browsers do for WebSocket) gets it.
    context = ssl.create_default_context(cafile=str(cert))
    context.set_alpn_protocols(["http/1.1"])

    async def echo():
        async with ws_connect(f"wss://localhost:{server.port}/echo", ssl=context) as ws:
            await ws.send("over tls")
            assert await asyncio.wait_for(ws.recv(), 5) == "over tls"

    run(echo())
