"""Start `switchboard serve --echo` on a free port for the interop tests."""
import os
import signal
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


def wait_for_port(port, proc, timeout=10):
    """Wait until 127.0.0.1:`port` accepts connections (the process must stay alive)."""
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("switchboard did not start")
            time.sleep(0.05)


class SwitchboardProcess:
    """One `switchboard serve` process on its own free port (see the `switchboard` fixture)."""

    def __init__(self, flags, log_path):
        self.port = free_port()
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [BINARY, "serve", "--listen", f"127.0.0.1:{self.port}", *flags],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        wait_for_port(self.port, self.proc)
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http = f"http://127.0.0.1:{self.port}"

    def rss_bytes(self):
        """Resident set size from /proc/PID/status (VmRSS), in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def sigterm(self):
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout=15):
        """SIGTERM (unless it already exited) and return the exit code."""
        if self.proc.poll() is None:
            self.sigterm()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self.log.close()

    def log_tail(self, n=4000):
        with open(self.log_path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")


@pytest.fixture
def switchboard(tmp_path):
    """Factory: `switchboard(*flags)` starts a server of the test's own on a free port; on
    teardown it gets SIGTERM and must exit 0 within 15 s."""
    started = []

    def start(*flags):
        sb = SwitchboardProcess(list(flags), tmp_path / f"switchboard-{len(started)}.log")
        started.append(sb)
        return sb

    yield start
    for sb in started:
        code = sb.stop()
        assert code == 0, f"switchboard exited with {code} after SIGTERM; log tail:\n{sb.log_tail()}"


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
