#!/usr/bin/env bash
# The benchmarks (not a test): installs what is missing, builds detectq in release mode, and runs
# `detectq bench`, which starts a throwaway PostgreSQL cluster (unless DATABASE_URL is set), the simulator,
# worker processes and PgQueuer's own benchmark (benchmarks/pgqueuer.sh, from PyPI), and prints one table and
# a line of ratios. Extra arguments go to `detectq bench` (e.g. --only core,latency --scale 0.2).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh

detectq_install_prerequisites
echo "==> building detectq (release)"
swift build -c release --product detectq 2>&1 | { grep -v "unhandled; explicitly declare\|swift-distributed-tracing/Sources" || true; }
exec .build/release/detectq bench "$@"
