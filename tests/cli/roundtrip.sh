#!/usr/bin/env bash
# The CLI's subscribe/publish round trip with the release binary: `subscribe` prints what
# `publish` sends, as JSON lines; `--since` replays what was stored before it started; a
# server restart in the middle is survived (subscribe reconnects and resumes); a refused
# publish exits non-zero with the server's message.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${SWITCHBOARD_BIN:-target/release/switchboard}
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
server_pid=
sub_pid=
cleanup() {
  [[ -n $sub_pid ]] && kill "$sub_pid" 2>/dev/null || true
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

start_server() {
  "$bin" serve --listen "127.0.0.1:$port" --api-key k --history 'cli:*=100/3600' >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  fail "the server did not start: $(cat "$work/server.log")"
}
export SWITCHBOARD_API_KEY=k
pub() { "$bin" publish --url "http://127.0.0.1:$port" "$@"; }

start_server
# Stored before anyone listens: replayed with --since 0.
pub --channel cli:a --data '{"n":1}' >"$work/p1.json"
grep -q '"offset":1' "$work/p1.json" || fail "publish answer: $(cat "$work/p1.json")"

timeout 60 "$bin" subscribe --url "ws://127.0.0.1:$port/ws" --channel cli:a --since 0 --count 4 --quiet >"$work/out.jsonl" &
sub_pid=$!
# Wait until the subscriber has the replayed message, then publish live.
for _ in $(seq 200); do [[ -s $work/out.jsonl ]] && break; sleep 0.05; done
pub --channel cli:a --data '{"n":2}' --id two >/dev/null
pub --channel cli:a --data '{"n":2}' --id two >"$work/dup.json"
grep -q '"duplicate":true' "$work/dup.json" || fail "a repeated id was stored again: $(cat "$work/dup.json")"
pub --channel cli:a --type note --data hello >/dev/null
pub --channel cli:a --data '{"n":4}' >/dev/null
wait "$sub_pid" || fail "subscribe exited with $?"
sub_pid=
lines=$(wc -l <"$work/out.jsonl")
[[ $lines -eq 4 ]] || fail "expected 4 lines, got $lines: $(cat "$work/out.jsonl")"
python3 - "$work/out.jsonl" <<'PY' || fail "unexpected output: $(cat "$work/out.jsonl")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert [m["offset"] for m in lines] == [1, 2, 3, 4], lines
assert [m.get("data") for m in lines] == [{"n": 1}, {"n": 2}, "hello", {"n": 4}], lines
assert lines[2]["type"] == "note" and all(m["room"] == "cli:a" for m in lines), lines
PY

# A refused publish: wrong key → exit 1 with the server's message.
if SWITCHBOARD_API_KEY=wrong "$bin" publish --url "http://127.0.0.1:$port" --channel cli:a --data 1 2>"$work/err.txt"; then
  fail "a wrong key was accepted"
fi
grep -q "401" "$work/err.txt" || fail "no status in: $(cat "$work/err.txt")"

# A server restart while subscribed: the subscriber reconnects by itself and keeps printing.
timeout 60 "$bin" subscribe --url "ws://127.0.0.1:$port/ws" --channel cli:b --count 2 --quiet >"$work/restart.jsonl" &
sub_pid=$!
sleep 1
pub --channel cli:b --data '"before"' >/dev/null
for _ in $(seq 200); do [[ -s $work/restart.jsonl ]] && break; sleep 0.05; done
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
start_server
sleep 2.5 # the client's backoff (1 s base) brings it back
pub --channel cli:b --data '"after"' >/dev/null
wait "$sub_pid" || fail "subscribe after a restart exited with $?"
sub_pid=
grep -q '"after"' "$work/restart.jsonl" || fail "nothing after the restart: $(cat "$work/restart.jsonl")"

# bench: both loads, short, against this server (with --echo for the echo endpoint).
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
"$bin" serve --listen "127.0.0.1:$port" --api-key k --echo --rate-limit off >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
"$bin" bench echo --url "ws://127.0.0.1:$port/echo" --connections 4 --duration 1 --warmup 0.2 \
  >"$work/bench-echo.md" 2>"$work/bench-echo.err" || fail "bench echo: $(cat "$work/bench-echo.err")"
grep -Eq '^\| round trips/s \| [1-9][0-9 ]* \|$' "$work/bench-echo.md" || fail "bench echo table: $(cat "$work/bench-echo.md")"
grep -q '^\| errors | 0 |$' "$work/bench-echo.md" || fail "bench echo errors: $(cat "$work/bench-echo.md")"
grep -q 'round trips/s, p50' "$work/bench-echo.err" || fail "no progress lines: $(cat "$work/bench-echo.err")"
"$bin" bench fanout --url "ws://127.0.0.1:$port/ws" --compare "ws://127.0.0.1:$port/ws" --subscribers 20 \
  --rate 50 --duration 1 --warmup 0.2 --api-key k >"$work/bench-fanout.md" 2>"$work/bench-fanout.err" \
  || fail "bench fanout: $(cat "$work/bench-fanout.err")"
grep -Eq '^\| deliveries/s \| [1-9][0-9 ]* \| [1-9][0-9 ]* \| [0-9.]+× \|$' "$work/bench-fanout.md" \
  || fail "bench fanout table: $(cat "$work/bench-fanout.md")"
echo "cli round trip: ok"
