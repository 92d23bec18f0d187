#!/usr/bin/env bash
# The dashboard's browser check: populates a throwaway database with `detectq demo` (plus failures and hostile
# metadata), serves `detectq dashboard`, and has scripts/dashboard_browser_check.py drive headless Chromium
# through it over the DevTools protocol in one session: log in through the form, filter the request list to
# the failed requests, open one, retry it through its form (psql confirms it is queued), visit the other
# pages, retry a failure group, accepting its confirm(), pause, resume and set a queue on the Queues page, and
# filter the list by queue. Any console error, uncaught exception, failed
# asset or unexpected dialog fails it. A screenshot of each page goes to $DETECTQ_SCREENSHOTS (default
# .build/dashboard-screenshots). Installs Chromium when missing; scripts/test.sh runs it at the end.
# DETECTQ_BINARY=path uses that detectq instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh
source scripts/lib/chromium.sh

detectq_install_prerequisites
detectq_install_chromium
browser="$(detectq_chromium)"
out="${DETECTQ_SCREENSHOTS:-.build/dashboard-screenshots}"
mkdir -p "$out"
rm -f "$out"/*.png

# Not the caller's cluster (scripts/test.sh exports its own): this script starts and stops one of its own.
unset DATABASE_URL DETECTQ_PG_DIR DETECTQ_PG_BINDIR
work="$(mktemp -d /tmp/detectq-browser.XXXXXX)"
dashboard_pid=""
cleanup() {
    # The driver kills its browser itself; this is for when the driver was killed before it could.
    if [ -s "$work/chromium.pgid" ]; then kill -KILL -- "-$(cat "$work/chromium.pgid")" 2>/dev/null || true; fi
    if [ -n "$dashboard_pid" ]; then
        kill "$dashboard_pid" 2>/dev/null || true
        wait "$dashboard_pid" 2>/dev/null || true
    fi
    detectq_stop_cluster
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
detectq_start_cluster

if [ -n "${DETECTQ_BINARY:-}" ]; then
    detectq="$DETECTQ_BINARY"
    [ -x "$detectq" ] || { echo "DETECTQ_BINARY=$detectq is not an executable" >&2; exit 1; }
else
    echo "==> building detectq"
    swift build --product detectq 2>&1 | { grep -v "unhandled; explicitly declare\|swift-distributed-tracing/Sources" || true; }
    detectq=.build/debug/detectq
fi
"$detectq" migrate >/dev/null

echo "==> populating: failures and hostile metadata, then the demo batch"
psql -q "$DATABASE_URL" <<'SQL'
INSERT INTO detectq.requests (media_url, metadata) VALUES
    ('https://media.example.com/notes.txt', '{"case": "intake-7", "note": "<script>alert(\"x\")</script>"}'),
    ('https://media.example.com/clip.exe', '{"case": "intake-8"}');
INSERT INTO detectq.requests (media_path, metadata) VALUES
    ('missing/interview-1.wav', '{"case": "intake-9", "uploader": "field office"}'),
    ('missing/interview-2.wav', '{"case": "intake-9", "uploader": "field office"}');
SQL
timeout 300 "$detectq" demo --no-large-file --requests 36 --latency 0.2 >"$out/demo.log" 2>&1 || {
    echo "detectq demo failed or took over 300 s; the end of its log:" >&2
    tail -n 20 "$out/demo.log" >&2
    exit 1
}

port="$(detectq_free_port)"
export DETECTQ_DASHBOARD_TOKEN="browser-check-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$detectq" dashboard --port "$port" >"$out/dashboard.log" 2>&1 &
dashboard_pid=$!
deadline=$((SECONDS + 30))
until curl -sf -o /dev/null "http://127.0.0.1:$port/dashboard/login"; do
    if ! kill -0 "$dashboard_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        echo "the dashboard did not answer on 127.0.0.1:$port within 30 s; its log:" >&2
        cat "$out/dashboard.log" >&2
        exit 1
    fi
    sleep 0.1
done

echo "==> the dashboard in headless Chromium ($browser)"
# Every wait in the driver has its own 30 s deadline; this bounds the whole session besides.
status=0
timeout --kill-after=10 300 python3 scripts/dashboard_browser_check.py --base-url "http://127.0.0.1:$port" \
    --browser "$browser" --screenshots "$out" --workdir "$work" || status=$?
if [ "$status" -ne 0 ]; then
    [ "$status" -eq 124 ] && echo "the browser check did not finish within 300 s" >&2
    echo "--- the last lines of $out/dashboard.log:" >&2
    tail -n 20 "$out/dashboard.log" >&2
    exit "$status"
fi
