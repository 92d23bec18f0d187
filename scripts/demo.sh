#!/usr/bin/env bash
# The whole pipeline end to end, on a fresh machine or this one: installs what is missing, builds detectq,
# and runs `detectq demo`, which starts a throwaway PostgreSQL cluster (unless DATABASE_URL is set) and the
# built-in API simulator (unless RESEMBLE_API_TOKEN is set), runs a mixed batch through two workers, prints a
# summary, and stops everything it started. Extra arguments go to `detectq demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh

detectq_install_prerequisites
echo "==> building detectq"
# (A dependency's packaging warnings about its CMakeLists.txt files are noise here; build errors still stop the script.)
swift build --product detectq 2>&1 | { grep -v "unhandled; explicitly declare\|swift-distributed-tracing/Sources" || true; }
exec .build/debug/detectq demo "$@"
