"""The backend HTTP API (SPEC §5) with a plain HTTP client, and its deliveries to WebSocket clients."""
import asyncio
import json
import os
import urllib.error
import urllib.request

from test_native_protocol import Client, run


def call(method, path, body=None, key="default", base=None, timeout=5):
    """One API call against `base` (default: the shared test server); (status, JSON body)."""
    key = os.environ["SWITCHBOARD_API_KEY"] if key == "default" else key
    data = None if body is None else json.dumps(body).encode()
    base = base or os.environ["SWITCHBOARD_HTTP"]
    req = urllib.request.Request(base + path, data=data, method=method)
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_requires_the_key():
    status, body = call("GET", "/api/channels", key=None)
    assert status == 401 and "Authorization" in body["error"]
    status, body = call("GET", "/api/channels", key="wrong")
    assert status == 401 and body["error"] == "invalid API key"


def test_bad_requests_get_json_errors():
    assert call("POST", "/api/publish", {"data": 1})[0] == 400
    status, body = call("POST", "/api/publish", {"channel": "", "data": 1})
    assert status == 400 and "channel" in body["error"]
    req = urllib.request.Request(os.environ["SWITCHBOARD_HTTP"] + "/api/publish", data=b"{oops", method="POST")
    req.add_header("Authorization", "Bearer " + os.environ["SWITCHBOARD_API_KEY"])
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("expected 400")
    except urllib.error.HTTPError as e:
        assert e.code == 400 and "invalid JSON" in json.loads(e.read())["error"]
    assert call("POST", "/api/broadcast", {"channels": "nope"})[0] == 400


def test_publish_reaches_members_and_history_presence_channels_disconnect():
    async def go():
        sub = await Client.connect()
        await sub.send(type="join", room="orders")
        await sub.recv_type("joined")

        loop = asyncio.get_running_loop()
        status, res = await loop.run_in_executor(
            None, lambda: call("POST", "/api/publish", {"channel": "orders", "type": "order.created", "data": {"id": 7}, "id": "o-7"}))
        assert status == 200 and res["offset"] == 1 and res["epoch"]
        msg = await sub.recv_type("order.created")
        assert msg["data"] == {"id": 7} and msg["room"] == "orders" and msg["offset"] == 1 and msg["userId"] == "api"

        # Same id again: acknowledged with the same offset, not delivered twice.
        status, again = await loop.run_in_executor(
            None, lambda: call("POST", "/api/publish", {"channel": "orders", "type": "order.created", "data": {"id": 7}, "id": "o-7"}))
        assert status == 200 and again["offset"] == 1 and again.get("duplicate") is True
        assert await sub.nothing_for(0.3)

        status, res = await loop.run_in_executor(
            None, lambda: call("POST", "/api/broadcast", {"channels": ["orders", "audit"], "data": "hello"}))
        assert status == 200 and [r["channel"] for r in res["results"]] == ["orders", "audit"]
        assert (await sub.recv_type("publish"))["data"] == "hello"

        status, hist = await loop.run_in_executor(None, lambda: call("GET", "/api/history?channel=orders"))
        assert status == 200 and [m["offset"] for m in hist["messages"]] == [1, 2] and hist["offset"] == 2

        status, pres = await loop.run_in_executor(None, lambda: call("GET", "/api/presence?channel=orders"))
        assert pres["members"] == [{"userId": sub.user_id, "connections": 1}]

        status, chans = await loop.run_in_executor(None, lambda: call("GET", "/api/channels"))
        listed = {c["channel"]: c["members"] for c in chans["channels"]}
        assert listed["orders"] == 1 and listed["audit"] == 0

        status, res = await loop.run_in_executor(None, lambda: call("POST", "/api/disconnect", {"userId": sub.user_id}))
        assert status == 200 and res["disconnected"] == 1
        try:
            while True:
                await sub.recv(timeout=5)
        except Exception as e:  # the connection closes with 1008
            assert getattr(e, "rcvd", None) is not None and e.rcvd.code == 1008, repr(e)
    run(go())
