"""Start `switchboard serve --echo` on a free port for the interop tests."""
import os
import socket
import subprocess
import time

import pytest

API_KEY = "test-api-key"

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BINARY = os.environ.get("SWITCHBOARD_BIN", os.path.join(ROOT, "target", "release", "switchboard"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def server():
    if not os.path.exists(BINARY):
        raise RuntimeError(f"{BINARY} missing: build it first (cargo build --release -p switchboard)")
    port = free_port()
    proc = subprocess.Popen([BINARY, "serve", "--echo", "--listen", f"127.0.0.1:{port}", "--api-key", API_KEY, "--history", "short:*=2/600"])
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("switchboard did not start")
            time.sleep(0.05)
    os.environ["SWITCHBOARD_URL"] = f"ws://127.0.0.1:{port}"
    os.environ["SWITCHBOARD_HTTP"] = f"http://127.0.0.1:{port}"
    os.environ["SWITCHBOARD_API_KEY"] = API_KEY
    yield
    proc.terminate()
    assert proc.wait(timeout=15) == 0, "server did not exit cleanly on SIGTERM"
