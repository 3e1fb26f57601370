#!/usr/bin/env bash
# Fuzz every target in fuzz/fuzz_targets/ (the switchboard-ws-proto parsers) for a while each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      default 20; e.g. `scripts/fuzz.sh 600` for a long run
#   scripts/fuzz.sh 30 frame_decoder inflate   only the named targets
#
# Exits non-zero, naming the target and the crash file, if any target finds a crash (panic,
# failed invariant, ASan report, hang over FUZZ_TIMEOUT seconds for one input, or a single
# allocation over FUZZ_MALLOC_LIMIT_MB). Reproduce a crash with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<crash-file>
# and print a structured input with `cargo fuzz fmt <target> <file>`.
#
# Toolchain: stable Rust only. cargo-fuzz passes nightly-only flags (-Zsanitizer=address,
# -Cpasses=sancov-module, ...); RUSTC_BOOTSTRAP=1 makes stable rustc accept them. The stable
# toolchain ships the ASan runtime (lib/rustlib/<host>/lib/librustc-stable_rt.asan.a), so the
# default `-s address` works; FUZZ_SANITIZER=none builds without it (4-7x the execs/s here,
# but no detection of memory errors in the unsafe code of dependencies such as zlib-rs).
# No -Zbuild-std (needs the rust-src component): std itself is not instrumented.
#
# Environment:
#   FUZZ_SANITIZER       address (default) | none
#   FUZZ_FEATURES        cargo features of the fuzz crate, e.g. `strict` (see fuzz/Cargo.toml)
#   FUZZ_CORPUS_ROOT     working corpus root (default fuzz/corpus, where the committed seed-*
#                        files live; another dir gets the seeds copied in first)
#   FUZZ_TIMEOUT         seconds one input may take before it counts as a hang (default 10)
#   FUZZ_MALLOC_LIMIT_MB largest single allocation allowed (default 256)
#   CARGO_BUILD_JOBS     build parallelism (default 2: this runs beside other builds)

set -euo pipefail

SECONDS_PER_TARGET=${1:-20}
shift || true
if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]] || [ "$SECONDS_PER_TARGET" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
SANITIZER=${FUZZ_SANITIZER:-address}
CORPUS_ROOT=${FUZZ_CORPUS_ROOT:-$ROOT/fuzz/corpus}
TIMEOUT=${FUZZ_TIMEOUT:-10}
MALLOC_LIMIT_MB=${FUZZ_MALLOC_LIMIT_MB:-256}
LOG_DIR=$ROOT/fuzz/target/fuzz-logs
ARTIFACTS=$ROOT/fuzz/artifacts

BUILD_ARGS=(--sanitizer "$SANITIZER")
if [ -n "${FUZZ_FEATURES:-}" ]; then
    BUILD_ARGS+=(--features "$FUZZ_FEATURES")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    start=$(date +%s)
    cargo install cargo-fuzz --locked
    echo "fuzz: cargo-fuzz installed in $(($(date +%s) - start)) s"
fi

if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo fuzz list)
fi
if [ ${#TARGETS[@]} -eq 0 ]; then
    echo "fuzz: no fuzz targets found" >&2
    exit 1
fi

echo "fuzz: building the fuzz targets (sanitizer: $SANITIZER)"
start=$(date +%s)
if ! cargo fuzz build "${BUILD_ARGS[@]}"; then
    echo "fuzz: BUILD FAILED" >&2
    echo "fuzz: 0 passed, ${#TARGETS[@]} failed"
    exit 1
fi
echo "fuzz: built in $(($(date +%s) - start)) s"

mkdir -p "$LOG_DIR"
passed=0
failed=0
failures=()
for target in "${TARGETS[@]}"; do
    corpus=$CORPUS_ROOT/$target
    mkdir -p "$corpus" "$ARTIFACTS/$target"
    # The committed seeds start every run (they are already there with the default root).
    if [ "$(cd "$corpus" && pwd)" != "$ROOT/fuzz/corpus/$target" ] \
        && compgen -G "$ROOT/fuzz/corpus/$target/seed-*" >/dev/null; then
        cp "$ROOT/fuzz/corpus/$target"/seed-* "$corpus"/
    fi
    log=$LOG_DIR/$target.log
    marker=$LOG_DIR/$target.start
    touch "$marker"
    echo "fuzz: running $target for ${SECONDS_PER_TARGET} s ($(find "$corpus" -type f | wc -l) inputs in corpus)"
    status=0
    cargo fuzz run "${BUILD_ARGS[@]}" "$target" "$corpus" -- \
        -max_total_time="$SECONDS_PER_TARGET" \
        -timeout="$TIMEOUT" \
        -malloc_limit_mb="$MALLOC_LIMIT_MB" \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        >"$log" 2>&1 || status=$?

    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$({ grep -oE 'cov: [0-9]+' "$log" || true; } | tail -1 | cut -d' ' -f2)
    if [ "$status" -eq 0 ]; then
        passed=$((passed + 1))
        echo "fuzz: $target ok: ${runs:-?} runs, ${rate:-?} exec/s, coverage ${cov:-?}, corpus $(find "$corpus" -type f | wc -l)"
    else
        failed=$((failed + 1))
        artifact=$(find "$ARTIFACTS/$target" -type f -newer "$marker" 2>/dev/null | head -1)
        failures+=("$target: ${artifact:-no artifact (see $log)}")
        {
            echo "fuzz: FAILED: $target (exit $status), log: $log"
            grep -E -m1 -A12 "panicked at|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)" "$log" \
                || tail -30 "$log"
            if [ -n "$artifact" ]; then
                echo "fuzz: crash artifact: $artifact"
                echo "fuzz: input (hex, first 512 bytes): $(head -c 512 "$artifact" | od -An -v -tx1 | tr -d ' \n')"
                echo "fuzz: reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run ${BUILD_ARGS[*]} $target $artifact"
            fi
        } >&2
    fi
    rm -f "$marker"
done

if [ "$failed" -gt 0 ]; then
    echo "fuzz: crashes found:" >&2
    printf 'fuzz:   %s\n' "${failures[@]}" >&2
fi
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
