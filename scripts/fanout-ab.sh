#!/usr/bin/env bash
# A/B two switchboard binaries on Socket.IO fan-out, alternating the order in each round.
#
#   scripts/fanout-ab.sh [--profile] BIN_A BIN_B [ROUNDS] [SUBSCRIBERS]
#
# Each run: `BIN serve --rate-limit off` pinned to CPU 0, `loadgen fanout --protocol socketio`
# pinned to CPU 1 (3 s warm-up, 6 s measured). Prints deliveries/s per run and the geometric
# mean of B/A. With --profile, `perf record -e cpu-clock` samples the server for 5 s of each run
# and the script also prints samples per million deliveries, user and kernel: on a shared
# machine whose speed drifts, that is the steadier measure of a change's cost (see
# docs/perf-notes.md, "The wake-up path without its locks").
#
# Needs the bench's load generator (`cd bench && cargo build --release --bins`) and, for
# --profile, `perf` (Debian: linux-perf). Servers listen on 127.0.0.1 only and are stopped by
# PID after each run.
set -euo pipefail

profile=false
if [[ "${1:-}" == "--profile" ]]; then
  profile=true
  shift
fi
if [[ $# -lt 2 ]]; then
  sed -n '2,14p' "$0"
  exit 2
fi
bin_a=$(realpath "$1")
bin_b=$(realpath "$2")
rounds=${3:-6}
subscribers=${4:-1000}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
loadgen="$root/bench/target/release/loadgen"
[[ -x "$loadgen" ]] || { echo "missing $loadgen: cd bench && cargo build --release --bins" >&2; exit 1; }
if $profile && ! command -v perf > /dev/null; then
  echo "--profile needs perf (apt-get install -y linux-perf)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))

# One run of $1: prints "deliveries_per_s user_per_M kernel_per_M" (the last two 0 without
# --profile).
run_one() {
  local bin=$1
  port=$((port + 1))
  taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --rate-limit off > "$work/server.log" 2>&1 &
  local server=$!
  sleep 0.5
  local perf_pid=""
  if $profile; then
    (sleep 4 && perf record -q -e cpu-clock -p "$server" -o "$work/perf.data" -- sleep 5 > /dev/null 2>&1) &
    perf_pid=$!
  fi
  local result
  result=$(taskset -c 1 "$loadgen" --target "127.0.0.1:$port" --path '/socket.io/?EIO=4&transport=websocket' \
    fanout --protocol socketio --subscribers "$subscribers" --warmup 3 --duration 6 2> /dev/null \
    | grep -o '"deliveries_per_s":[0-9.]*' | cut -d: -f2)
  [[ -n "$perf_pid" ]] && wait "$perf_pid" || true
  kill "$server" 2> /dev/null || true
  wait "$server" 2> /dev/null || true
  if [[ -z "$result" ]]; then
    echo "no result from $bin (server log: $(tail -n 3 "$work/server.log"))" >&2
    exit 1
  fi
  if $profile; then
    perf report -i "$work/perf.data" --no-children --sort dso -g none -F sample,dso 2> /dev/null \
      | awk -v d="$result" '/^#/ || NF < 2 {next} {t += $1; if ($2 == "[kernel.kallsyms]") k += $1}
          END {m = d * 5 / 1e6; printf "%s %.0f %.0f\n", d, (t - k) / m, k / m}'
  else
    echo "$result 0 0"
  fi
}

results="$work/results"
for i in $(seq 1 "$rounds"); do
  if ((i % 2)); then order="a b"; else order="b a"; fi
  for which in $order; do
    if [[ $which == a ]]; then bin=$bin_a; else bin=$bin_b; fi
    echo "$i $which $(run_one "$bin")" | tee -a "$results"
  done
done
python3 - "$results" "$profile" << 'PY'
import math, statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
runs = {}
for r, which, d, user, kernel in rows:
    runs.setdefault(which, {})[r] = (float(d), float(user), float(kernel))
ratios = [runs["b"][r][0] / runs["a"][r][0] for r in runs["a"] if r in runs["b"]]
geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
for w in "ab":
    d = [v[0] for v in runs[w].values()]
    line = f"{w.upper()}: median {statistics.median(d) / 1e6:.3f} M deliveries/s"
    if sys.argv[2] == "true":
        u = statistics.median(v[1] for v in runs[w].values())
        k = statistics.median(v[2] for v in runs[w].values())
        line += f"; perf samples per M deliveries: user {u:.0f}, kernel {k:.0f}"
    print(line)
print(f"B/A deliveries/s: geometric mean {geo:.3f} (per round {min(ratios):.3f}–{max(ratios):.3f})")
PY
