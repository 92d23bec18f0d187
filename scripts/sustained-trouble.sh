#!/usr/bin/env bash
# The API's trouble that lasts, measured as a new user would meet it (REFERENCE.md section 6, issue 25): real worker
# processes at their default settings against `detectq simulate`, on a throwaway PostgreSQL cluster. Not part of
# the test command: each scenario takes minutes. Prints the figures the issue's goals are stated in.
#
#   throttle  two workers, sync URL requests enqueued while the API answers every request 429 with no
#             Retry-After for THROTTLE_SECONDS (default 300): requests failed, requests sent into the throttle
#             per second after its first 15 s, and how long after the API's recovery the last one completes.
#   flaky     200 requests while 35 % of API calls fail (503, 429 with Retry-After: 1, cut connections), with
#             DETECTQ_RETRY_BASE_SECONDS=1: how many complete within 60 s of their insert, and the slowest.
#   credit    10 requests, two workers, DETECTQ_CREDIT_RECHECK_SECONDS=3, the account out of credit: how many
#             submissions meet the 402 in its first 10 s (those under way, then one probe per recheck).
#
# Usage: scripts/sustained-trouble.sh [throttle|flaky|credit|all]   (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh
which="${1:-all}"
case "$which" in throttle|flaky|credit|all) ;; *) echo "usage: scripts/sustained-trouble.sh [throttle|flaky|credit|all]" >&2; exit 2 ;; esac
throttle_seconds="${THROTTLE_SECONDS:-300}"

detectq_install_prerequisites
echo "==> building detectq"
swift build --product detectq 2>&1 | { grep -v "unhandled; explicitly declare\|swift-distributed-tracing/Sources" || true; }
detectq=.build/debug/detectq
detectq_start_run_directory
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    detectq_stop_cluster
}
trap cleanup EXIT
detectq_start_cluster
work=$(mktemp -d /tmp/detectq-trouble.XXXXXX)

sql() { PGOPTIONS='-c client_min_messages=warning' psql -qAtX "$DATABASE_URL" -c "$1"; }
stat_of() { curl -fsS "http://127.0.0.1:$1/_simulator/stats" | python3 -c "import json,sys; print(json.load(sys.stdin).get('$2', 0))"; }

# Starts the simulator with the given options; sets sim_port.
start_simulator() {
    sim_port=$(detectq_free_port)
    env -u RESEMBLE_API_TOKEN "$detectq" simulate --port "$sim_port" --latency 0.3 "$@" >"$work/simulator.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$sim_port/_simulator/stats" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "the simulator did not start" >&2; return 1
}

# Starts N workers at their default settings, with extra VAR=value settings.
start_workers() {
    local count=$1; shift
    for index in $(seq 1 "$count"); do
        env RESEMBLE_BASE_URL="http://127.0.0.1:$sim_port/api/v2" DETECTQ_HTTP_PORT="$(detectq_free_port)" \
            DETECTQ_WORKER_ID="trouble-$index" "$@" "$detectq" worker >"$work/worker-$index.log" 2>&1 &
        pids+=($!)
    done
}

stop_processes() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
}

fresh_schema() {
    sql "DROP SCHEMA IF EXISTS detectq CASCADE" >/dev/null
    "$detectq" migrate >/dev/null
}

unfinished() { sql "SELECT count(*) FROM detectq.requests WHERE state NOT IN ('completed', 'failed', 'cancelled')"; }

if [ "$which" = throttle ] || [ "$which" = all ]; then
    echo "==> throttle: ${throttle_seconds} s of 429 with no Retry-After, two workers at their defaults, sync URL requests"
    fresh_schema
    start_simulator --throttled
    start_workers 2
    started=$(date +%s.%N)
    inserted=0
    at15=""
    while :; do
        now=$(date +%s.%N)
        elapsed=$(python3 -c "print($now - $started)")
        if [ -z "$at15" ] && python3 -c "import sys; sys.exit(0 if $elapsed >= 15 else 1)"; then
            at15=$(stat_of "$sim_port" throttledRequests)
        fi
        python3 -c "import sys; sys.exit(0 if $elapsed < $throttle_seconds else 1)" || break
        # About 70 requests over the throttle, as in the issue's trial.
        if python3 -c "import sys; sys.exit(0 if $inserted < 70 * $elapsed / $throttle_seconds else 1)"; then
            sql "INSERT INTO detectq.requests (media_url, wait_mode) VALUES ('https://cdn.example.com/throttled-$inserted.wav', 'sync')"
            inserted=$((inserted + 1))
        fi
        sleep 0.5
    done
    total=$(stat_of "$sim_port" throttledRequests)
    failed_during=$(sql "SELECT count(*) FROM detectq.requests WHERE state = 'failed'")
    curl -fsS -X POST "http://127.0.0.1:$sim_port/_simulator/throttled?on=false" >/dev/null
    recovered=$(date +%s.%N)
    deadline=$(python3 -c "print($recovered + 600)")
    while [ "$(unfinished)" != 0 ] && python3 -c "import sys,time; sys.exit(0 if time.time() < $deadline else 1)"; do sleep 1; done
    last=$(sql "SELECT coalesce(extract(epoch FROM max(completed_at)), 0) FROM detectq.requests")
    echo "  requests enqueued during the throttle: $inserted"
    echo "  requests failed: $(sql "SELECT count(*) FROM detectq.requests WHERE state = 'failed'") ($failed_during while it lasted)"
    echo "  attempts spent beyond the first: $(sql "SELECT coalesce(sum(greatest(attempt - 1, 0)), 0) FROM detectq.requests")"
    echo "  requests sent into the throttle: $total in all; after its first 15 s: $(python3 -c "print(f'{($total - ${at15:-0}) / ($throttle_seconds - 15):.2f}')") a second (goal: at most 2)"
    echo "  unfinished 10 minutes after the recovery: $(unfinished)"
    echo "  the last request completed $(python3 -c "print(f'{max(0, $last - $recovered):.1f}')") s after the API recovered (goal: within 180 s)"
    stop_processes
fi

if [ "$which" = flaky ] || [ "$which" = all ]; then
    echo "==> flaky: 200 requests while 35 % of API calls fail (503, 429 with Retry-After: 1, cut connections)"
    fresh_schema
    start_simulator --error-rate 0.15 --rate-limit-rate 0.1 --retry-after 1 --drop-rate 0.1 --seed 25
    start_workers 2 DETECTQ_RETRY_BASE_SECONDS=1
    sql "INSERT INTO detectq.requests (media_url, wait_mode) SELECT 'https://cdn.example.com/flaky-' || n || '.wav', 'sync' FROM generate_series(1, 200) AS n" >/dev/null
    deadline=$(python3 -c "import time; print(time.time() + 600)")
    while [ "$(unfinished)" != 0 ] && python3 -c "import sys,time; sys.exit(0 if time.time() < $deadline else 1)"; do sleep 1; done
    echo "  completed: $(sql "SELECT count(*) FROM detectq.requests WHERE state = 'completed'") of 200; failed: $(sql "SELECT count(*) FROM detectq.requests WHERE state = 'failed'")"
    echo "  completed within 60 s of their insert: $(sql "SELECT count(*) FROM detectq.requests WHERE completed_at - created_at <= interval '60 seconds'") (goal: 198)"
    echo "  the slowest: $(sql "SELECT round(extract(epoch FROM max(completed_at - created_at))::numeric, 1) FROM detectq.requests") s (goal: within 240 s)"
    echo "  submissions: $(stat_of "$sim_port" submissions); faults injected: $(stat_of "$sim_port" injectedServerErrors) 503s, $(stat_of "$sim_port" injectedRateLimits) 429s, $(stat_of "$sim_port" injectedDrops) cut connections, of $(stat_of "$sim_port" requests) API requests"
    stop_processes
fi
if [ "$which" = credit ] || [ "$which" = all ]; then
    echo "==> credit: 10 requests, two workers, the account out of credit, a probe every 3 s"
    fresh_schema
    start_simulator --out-of-credit
    start_workers 2 DETECTQ_CREDIT_RECHECK_SECONDS=3
    sql "INSERT INTO detectq.requests (media_url) SELECT 'https://cdn.example.com/credit-' || n || '.wav' FROM generate_series(1, 10) AS n" >/dev/null
    while [ "$(stat_of "$sim_port" creditRefusals)" = 0 ]; do sleep 0.05; done
    sleep 10
    echo "  submissions answered 402 in the window's first 10 s: $(stat_of "$sim_port" creditRefusals) (the 10 under way, then one probe per recheck: at most 14)"
    echo "  requests failed: $(sql "SELECT count(*) FROM detectq.requests WHERE state = 'failed'"); attempts spent: $(sql "SELECT coalesce(sum(attempt), 0) FROM detectq.requests")"
    stop_processes
fi
rm -rf "$work"
