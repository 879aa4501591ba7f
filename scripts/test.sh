#!/usr/bin/env bash
# Every test `cargo test --release` runs (unit, integration and doc tests), with the
# integration test binaries in two lanes at once instead of one after another.
#
# Why: on a 2-core machine a test binary keeps the cores busy about two thirds of its
# time (model loads, HTTP round trips, PostgreSQL, single-threaded statistics), so two
# binaries side by side finish the suite in much less wall time than in a row.
#
# The binaries that use PostgreSQL all run in the first lane, one at a time, so nothing
# else touches the server while tests/worker_crash.rs restarts it; the second lane only
# gets binaries that never connect to it. The other binaries are shared out by their
# usual cost (longest first, onto the lane that frees up first).
#
# Usage: scripts/test.sh [extra arguments for every test binary, e.g. --nocapture]
# PROVENANCE_TEST_LANES=1 runs the binaries one after another, as `cargo test` does;
# PROVENANCE_TEST_PLAN=1 only prints which binary runs in which lane.
set -euo pipefail
cd "$(dirname "$0")/.."

lanes="${PROVENANCE_TEST_LANES:-2}"
case "$lanes" in 1 | 2) ;; *) echo "FAIL: PROVENANCE_TEST_LANES must be 1 or 2" >&2; exit 1 ;; esac
work="$(mktemp -d)"
llama_pid=""
trap '[ -z "$llama_pid" ] || kill -- -"$llama_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

# llama.cpp (tests/llama_cpp.rs serves and re-quantizes with it) builds beside the tests'
# build, in its own session so that an early exit stops the whole build: the crate's own
# compile leaves a core idle for minutes, and on a fresh machine the test binary would
# otherwise build llama.cpp inside its lane. A no-op once built; a build already under way
# (`.ci/run` starts one) is waited for through the script's lock.
if command -v c++ >/dev/null && command -v setsid >/dev/null && [ "${PROVENANCE_TEST_PLAN:-0}" != 1 ]; then
  setsid nice -n 10 bash scripts/build-llama-cpp.sh >"$work/llama-cpp-build.log" 2>&1 &
  llama_pid=$!
fi

echo "== building the tests ($(date +%T))"
cargo test --release --no-run --message-format=json-render-diagnostics >"$work/build.json"

# Test executables, as `name<TAB>kind<TAB>path` (kind: lib, bin, test or bench).
python3 - "$work/build.json" >"$work/binaries.tsv" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") != "compiler-artifact" or not msg.get("profile", {}).get("test"):
        continue
    exe = msg.get("executable")
    if exe:
        print(f"{msg['target']['name']}\t{msg['target']['kind'][0]}\t{exe}")
PY

# Rough seconds per binary in a lane beside another on the 2-core CI machine (a clean
# clone's .ci/run of 6 Dec with the built-in controls and forms already made, as they are
# on the machine CI runs on), so the long ones start first and the lanes end together; a
# binary not listed took under a minute and counts 15. Only the order depends on them: a
# binary using PostgreSQL stays in lane 0 whatever they say.
cost() {
  case "$1" in
    zoo) echo 1060 ;; scan_real) echo 530 ;; sampled_copy) echo 530 ;;
    llama_cpp) echo 335 ;; service_scan) echo 335 ;; worker_crash) echo 300 ;;
    identify) echo 140 ;; suite) echo 90 ;; ui_browser) echo 75 ;; secrets) echo 75 ;;
    reference_logprobs) echo 60 ;; worker_throughput) echo 55 ;; *) echo 15 ;;
  esac
}
uses_db() {
  local source
  case "$2" in
    test) source="tests/$1.rs" ;;
    bench) source="benches/$1.rs" ;;
    *) return 1 ;;
  esac
  grep -qE "TestDb|sqlx::" "$source" 2>/dev/null
}

# Lane 0: PostgreSQL binaries (worker_crash first, while the other lane has only
# binaries without a database), then whatever balancing gives it.
declare -a lane_items=("" "")
declare -a lane_load=(0 0)
db_first="" db_rest="" others=""
while IFS=$'\t' read -r name kind exe; do
  item="$name:$kind:$exe"
  if uses_db "$name" "$kind"; then
    if [ "$name" = worker_crash ]; then db_first="$item"; else db_rest="$db_rest $item"; fi
    lane_load[0]=$((lane_load[0] + $(cost "$name")))
  else
    others="$others $(cost "$name"):$item"
  fi
done <"$work/binaries.tsv"
lane_items[0]="$db_first$db_rest"
for entry in $(tr ' ' '\n' <<<"$others" | grep . | sort -t: -k1,1 -rn); do
  weight="${entry%%:*}"
  item="${entry#*:}"
  if [ "$lanes" = 1 ] || [ "${lane_load[0]}" -lt "${lane_load[1]}" ]; then
    lane_items[0]="${lane_items[0]} $item"
    lane_load[0]=$((lane_load[0] + weight))
  else
    lane_items[1]="${lane_items[1]} $item"
    lane_load[1]=$((lane_load[1] + weight))
  fi
done

# How many tests a binary's log reports as passed (or failed), summed over its
# `test result:` lines (a doc-test run prints one per crate).
counted() {
  awk -v word="$2" '/^test result/ {
    for (i = 2; i <= NF; i++) if ($i ~ "^" word) n += $(i - 1)
  } END { print n + 0 }' "$1"
}

run_lane() {
  local lane="$1" item name kind exe started status
  shift
  for item in $1; do
    name="${item%%:*}"
    kind="${item#*:}"
    exe="${kind#*:}"
    kind="${kind%%:*}"
    started=$(date +%s)
    set +e
    "$exe" "${@:2}" >"$work/$kind-$name.log" 2>&1
    status=$?
    set -e
    if [ "$status" = 0 ]; then
      echo "  ok      $kind $name ($(($(date +%s) - started)) s, lane $lane, $(counted "$work/$kind-$name.log" passed) tests)"
    else
      echo "  FAILED  $kind $name ($(($(date +%s) - started)) s, lane $lane, exit $status)"
      echo "$kind-$name" >>"$work/failed"
    fi
  done
}

echo "== running the test binaries in $lanes lane(s) ($(date +%T))"
for lane in 0 1; do
  names=$(for item in ${lane_items[$lane]}; do printf '%s ' "${item%%:*}"; done)
  [ -z "$names" ] || echo "  lane $lane (about ${lane_load[$lane]} s): $names"
done
# PROVENANCE_TEST_PLAN=1 prints the lanes and runs nothing.
[ "${PROVENANCE_TEST_PLAN:-0}" != 1 ] || exit 0
pids=()
for lane in 0 1; do
  [ -n "${lane_items[$lane]// /}" ] || continue
  run_lane "$lane" "${lane_items[$lane]}" "$@" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

# By now the llama.cpp build has ended (its test waited for it); if it failed, that test
# failed with its output.
if [ -n "$llama_pid" ]; then
  wait "$llama_pid" || echo "  llama.cpp build failed: see the llama_cpp test's output"
  llama_pid=""
fi

echo "== doc tests ($(date +%T))"
cargo test --release --doc -- "$@" >"$work/doc.log" 2>&1 || echo "doc" >>"$work/failed"
echo "  doc tests: $(counted "$work/doc.log" passed) run"

# One closing line for the whole suite, in the plain `N passed, N failed` form, because
# the per-binary cargo lines are kept in the logs and the last of them (the doc tests,
# which this crate has none of) would otherwise read as a run of zero tests.
passed=0 failed=0
for log in "$work"/*.log; do
  passed=$((passed + $(counted "$log" passed)))
  failed=$((failed + $(counted "$log" failed)))
done
# A binary that died outside the harness reports no failed test: it counts as one.
if [ -s "$work/failed" ]; then
  while read -r name; do
    log="$work/$name.log"
    [ "$name" = doc ] && log="$work/doc.log"
    [ "$(counted "$log" failed)" -gt 0 ] || failed=$((failed + 1))
  done <"$work/failed"
fi
summary="tests: $passed passed, $failed failed"

if [ -s "$work/failed" ]; then
  while read -r name; do
    echo "==== output of $name" >&2
    if [ "$name" = doc ]; then cat "$work/doc.log" >&2; else cat "$work/$name.log" >&2; fi
  done <"$work/failed"
  echo "FAIL: $(wc -l <"$work/failed") test binaries failed: $(tr '\n' ' ' <"$work/failed")" >&2
  echo "$summary"
  exit 1
fi
echo "== every test passed ($(date +%T))"
echo "$summary"
