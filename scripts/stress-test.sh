#!/usr/bin/env bash
# The test suite under CPU contention: runs the README's test command (scripts/test.sh) N times (default 5)
# while one CPU-bound process per core competes with it, started and stopped by this script. Prints a line per
# run and a closing "N passed, N failed"; exits 1 if any run failed or left a process of ours running.
# Each run's output is kept in .build/stress/run-K.log. Not part of the test command: run it before calling
# a change to the suite done.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh
runs="${1:-5}"
case "$runs" in ''|*[!0-9]*|0) echo "usage: scripts/stress-test.sh [N ≥ 1]" >&2; exit 2 ;; esac

burners=()
stop_burners() {
    for pid in "${burners[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait "${burners[@]}" 2>/dev/null || true
}
trap stop_burners EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 "$(nproc)"); do
    ( while :; do :; done ) &
    burners+=($!)
done
echo "==> $runs runs of scripts/test.sh beside ${#burners[@]} CPU-bound processes (one per core)"

# Processes of ours running: this checkout's detectq, and PostgreSQL servers of throwaway clusters (the
# ones already running before a run, another checkout's, say, are not counted against it).
ours() {
    local pid args
    detectq_build_processes
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        args=$(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline")
        case "$args" in */postgres" -D /tmp/detectq-"*) echo "$pid $args" ;; esac
    done
}

mkdir -p .build/stress
passed=0
failed=0
for run in $(seq 1 "$runs"); do
    log=".build/stress/run-$run.log"
    before=$(ours | cut -d' ' -f1)
    started=$(date +%s)
    scripts/test.sh >"$log" 2>&1
    status=$?
    took=$(( $(date +%s) - started ))
    tests=$(grep -E "Test run with [0-9]+ tests?" "$log" | sed -E 's/.*Test run with ([0-9]+) tests?.*/\1/' | awk '{ sum += $1 } END { print sum + 0 }')
    reported=$(grep -E '^leftovers: ' "$log" | tail -n 1 | cut -d' ' -f2)
    remaining=$(ours | grep -vwF -f <(echo "${before:-none}") || true)
    if [ "$status" -eq 0 ] && [ "${reported:-?}" = 0 ] && [ -z "$remaining" ]; then
        passed=$((passed + 1))
        echo "run $run: passed in ${took} s ($tests tests, browser check included; nothing left running)"
    else
        failed=$((failed + 1))
        echo "run $run: FAILED in ${took} s (exit $status, leftovers ${reported:-not reported}); see $log"
        grep -E "✘|error:|FAILED|leftover: " "$log" | head -n 15 | sed 's/^/    /'
        [ -n "$remaining" ] && echo "$remaining" | sed 's/^/    still running: /'
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
