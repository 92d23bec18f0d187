#!/usr/bin/env bash
# The chaos suite by hand: installs what is missing, builds detectq, and runs `detectq chaos`, which starts a
# throwaway PostgreSQL cluster, the simulator, an alert sink and three worker processes, injects faults while
# requests flow (SIGKILLed workers, PostgreSQL restarts, a slow and faulty API, lost and duplicated callbacks,
# a failing alert sink), drains the queue and checks the invariants. Extra arguments go to `detectq chaos`,
# e.g. `scripts/chaos.sh --duration 1200` for the long run (CI runs 72 s through the test suite).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh

detectq_install_prerequisites
echo "==> building detectq"
swift build --product detectq 2>&1 | { grep -v "unhandled; explicitly declare\|swift-distributed-tracing/Sources" || true; }
exec env -u DATABASE_URL .build/debug/detectq chaos "$@"
