"""TLS (issue 4 item 7) with third-party clients: Python `websockets` over `wss://` and
`urllib` over `https://`, against a certificate generated here with the `openssl` CLI and
trusted by nothing but these clients."""
import json
import ssl
import subprocess
import urllib.request

import websockets.sync.client as ws_client


def make_certificate(directory):
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


def test_wss_and_https_with_a_generated_certificate(switchboard, tmp_path):
    cert, key = make_certificate(tmp_path)
    server = switchboard("--tls-cert", str(cert), "--tls-key", str(key))
    context = ssl.create_default_context(cafile=str(cert))
    base = f"localhost:{server.port}"

    with ws_client.connect(f"wss://{base}/ws", ssl=context) as a, \
            ws_client.connect(f"wss://{base}/ws", ssl=context) as b:
        assert json.loads(a.recv(timeout=5))["type"] == "welcome"
        assert json.loads(b.recv(timeout=5))["type"] == "welcome"
        for c in (a, b):
            c.send(json.dumps({"type": "join", "room": "secure"}))
        big = "x" * 200_000  # several TLS records
        a.send(json.dumps({"type": "chat", "room": "secure", "message": big}))
        while True:
            m = json.loads(b.recv(timeout=5))
            if m["type"] == "chat":
                break
        assert m["message"] == big and m["room"] == "secure"

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
