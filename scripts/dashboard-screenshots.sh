#!/usr/bin/env bash
# The dashboard's browser check: populates a throwaway database with `detectq demo` (plus failures and hostile
# metadata), serves `detectq dashboard`, loads every page in headless Chromium and saves a screenshot of each
# in $DETECTQ_SCREENSHOTS (default .build/dashboard-screenshots). Fails if a page does not answer 200 or a
# screenshot is missing. Needs Chromium (`apt-get install -y chromium`); scripts/test.sh runs it when present.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh

browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$browser" ]; then
    echo "no Chromium found: apt-get install -y chromium" >&2
    exit 1
fi
command -v python3 >/dev/null || { apt-get update && apt-get install -y python3; }

detectq_install_prerequisites
out="${DETECTQ_SCREENSHOTS:-.build/dashboard-screenshots}"
mkdir -p "$out"
rm -f "$out"/*.png

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    detectq_stop_cluster
}
trap cleanup EXIT
unset DATABASE_URL
detectq_start_cluster

echo "==> building detectq"
swift build --product detectq 2>&1 | { grep -v "unhandled; explicitly declare\|swift-distributed-tracing/Sources" || true; }
detectq=.build/debug/detectq
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
"$detectq" demo --no-large-file --requests 36 --latency 0.2 >/dev/null

port="$(detectq_free_port)"
proxy_port="$(detectq_free_port)"
export DETECTQ_DASHBOARD_TOKEN="screenshots-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$detectq" dashboard --port "$port" >"$out/dashboard.log" 2>&1 &
pids+=($!)
# Chromium cannot send a bearer header by itself: a loopback proxy adds it (the token stays out of argv).
DETECTQ_PROXY_TARGET="http://127.0.0.1:$port" python3 - "$proxy_port" <<'PY' &
import http.server, os, sys, urllib.error, urllib.request
target, token = os.environ["DETECTQ_PROXY_TARGET"], os.environ["DETECTQ_DASHBOARD_TOKEN"]
class Proxy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        request = urllib.request.Request(target + self.path, headers={"Authorization": "Bearer " + token})
        try:
            response = urllib.request.urlopen(request)
        except urllib.error.HTTPError as error:
            response = error
        body = response.read()
        self.send_response(response.status)
        for name, value in response.headers.items():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Proxy).serve_forever()
PY
pids+=($!)
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$proxy_port/dashboard" && break
    sleep 0.1
done

id_of() { psql -Atq "$DATABASE_URL" -c "$1 ORDER BY id LIMIT 1"; }
fake_video="$(id_of "SELECT id FROM detectq.requests WHERE is_fake AND media_type = 'video' AND intelligence")"
fake_audio="$(id_of "SELECT id FROM detectq.requests WHERE is_fake AND media_type = 'audio' AND zero_retention_mode")"
failed="$(id_of "SELECT id FROM detectq.requests WHERE state = 'failed'")"

pages=(
    "01-login|http://127.0.0.1:$port/dashboard/login"
    "02-overview|http://127.0.0.1:$proxy_port/dashboard"
    "03-requests|http://127.0.0.1:$proxy_port/dashboard/requests"
    "04-requests-fake-video|http://127.0.0.1:$proxy_port/dashboard/requests?verdict=fake&media_type=video"
    "05-request-fake-video|http://127.0.0.1:$proxy_port/dashboard/requests/$fake_video"
    "06-request-fake-audio|http://127.0.0.1:$proxy_port/dashboard/requests/$fake_audio"
    "07-request-failed|http://127.0.0.1:$proxy_port/dashboard/requests/$failed"
    "08-failures|http://127.0.0.1:$proxy_port/dashboard/failures"
)
echo "==> screenshots with $browser"
for page in "${pages[@]}"; do
    name="${page%%|*}"
    url="${page#*|}"
    status="$(curl -s -o /dev/null -w '%{http_code}' "$url")"
    if [ "$status" != 200 ]; then
        echo "$name: $url answered $status" >&2
        exit 1
    fi
    "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1440,1800 \
        --screenshot="$out/$name.png" "$url" >/dev/null 2>&1
    [ -s "$out/$name.png" ] || { echo "$name: no screenshot" >&2; exit 1; }
    echo "  $out/$name.png"
done
echo "==> every page loaded; screenshots in $out"
