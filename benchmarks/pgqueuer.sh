#!/usr/bin/env bash
# Runs PgQueuer's own drain benchmark (tools/benchmark.py from its PyPI source release) against the database
# named by the libpq URI in $1, with $2 jobs (default 50000), and prints its JSON result as the last line.
# With $3 = primed (the default), its statistics are primed first, as its authors' runs have them: 20,000 jobs
# enqueued through PgQueuer, ANALYZE, the queue cleared; with $3 = cold, the drain runs on the fresh table.
# `detectq bench` calls it so the comparison runs on the same PostgreSQL, in the same run. The virtual
# environment and the source release go to benchmarks/.pgqueuer (not committed).
set -euo pipefail
cd "$(dirname "$0")"
url="$1"
jobs="${2:-50000}"
statistics="${3:-primed}"
case "$statistics" in primed|cold) ;; *) echo "pgqueuer.sh: \$3 must be primed or cold, not '$statistics'" >&2; exit 2 ;; esac
version="1.6.0"
home=".pgqueuer"
mkdir -p "$home"
if [ ! -x "$home/venv/bin/python" ]; then
    python3 -m venv "$home/venv"
    "$home/venv/bin/pip" install -q "pgqueuer[asyncpg]==$version" tqdm >&2
fi
if [ ! -f "$home/pgqueuer-$version/tools/benchmark.py" ]; then
    "$home/venv/bin/pip" download -q --no-deps --no-binary :all: "pgqueuer==$version" -d "$home" >&2
    tar xzf "$home/pgqueuer-$version.tar.gz" -C "$home"
fi
# asyncpg and PgQueuer's CLI read the standard libpq variables.
eval "$("$home/venv/bin/python" - "$url" <<'PY'
import sys, shlex, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
for key, value in {"PGHOST": u.hostname, "PGPORT": u.port, "PGUSER": u.username, "PGPASSWORD": u.password,
                   "PGDATABASE": u.path.lstrip("/")}.items():
    if value:
        print(f"export {key}={shlex.quote(str(value))}")
PY
)"
"$home/venv/bin/pgq" install >/dev/null 2>&1 || true
if [ "$statistics" = primed ]; then
    "$home/venv/bin/python" - <<'PY'
import asyncio, asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

async def prime() -> None:
    queries = Queries(AsyncpgDriver(await asyncpg.connect(dsn="")))
    await queries.enqueue(["fetch"] * 20_000, [b""] * 20_000, [0] * 20_000)
    await queries.driver.execute("ANALYZE")
    await queries.clear_queue()

asyncio.run(prime())
PY
fi
result="$(mktemp)"
"$home/venv/bin/python" "$home/pgqueuer-$version/tools/benchmark.py" --strategy drain --jobs "$jobs" \
    --dequeue 5 --dequeue-batch-size 10 --output-json "$result" >&2
cat "$result"
echo
rm -f "$result"
