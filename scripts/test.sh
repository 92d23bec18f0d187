#!/usr/bin/env bash
# The whole test suite, on a fresh machine or this one: installs what is missing, starts a throwaway
# PostgreSQL cluster (as the postgres user, on a free loopback port) with a transaction-pooling PgBouncer in
# front of it, builds, runs every test against it,
# and stops the cluster whatever happens. Extra arguments go to `swift test` (e.g. --filter PostgresTests).
# DETECTQ_FUZZ_SECONDS sets how long each fuzz target runs (default 10 s for the decoders, 6 s for callbacks,
# 4 s for the number readers). Whatever a test leaves running is stopped at the end and reported ("leftovers: N").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh
source scripts/lib/chromium.sh

detectq_install_prerequisites
detectq_install_pgbouncer
# The full run ends with the dashboard's browser check, which needs Chromium.
if [ "$#" -eq 0 ]; then
    detectq_install_chromium
fi
detectq_start_run_directory
trap 'detectq_stop_leftovers; detectq_stop_cluster' EXIT
detectq_start_cluster
detectq_start_pgbouncer

echo "==> building"
swift build --build-tests
if [ "$#" -gt 0 ]; then
    echo "==> testing: $*"
    swift test --skip-build "$@"
else
    echo "==> testing"
    swift test --skip-build --skip LargeUploadTests --skip ChaosTests --skip ResponseFuzzTests --skip CallbackFuzzTests \
        --skip InputNumberFuzzTests --skip FailoverTests --skip PgBouncerTests
    # Peak memory (VmHWM) belongs to the whole test process, so the uploads whose memory is measured run alone.
    echo "==> testing the memory-bound uploads alone"
    swift test --skip-build --filter LargeUploadTests
    # The fuzzers keep a core busy for their whole budget; beside the timing-sensitive suites they would skew them.
    echo "==> fuzzing (DETECTQ_FUZZ_SECONDS each; seeds printed, DETECTQ_FUZZ_SEED replays)"
    swift test --skip-build --filter "ResponseFuzzTests|CallbackFuzzTests|InputNumberFuzzTests"
    # Each of these runs clusters, a pooler and worker processes of its own: beside the timing-sensitive suites
    # they would load the machine as the fuzzers do.
    echo "==> failover and PgBouncer"
    swift test --skip-build --filter "FailoverTests|PgBouncerTests"
    # The chaos suite's short mode kills and restarts processes of its own; it gets the machine to itself.
    echo "==> chaos, short mode (scripts/chaos.sh runs the long one)"
    swift test --skip-build --filter ChaosTests
    # Last, the dashboard driven in headless Chromium: log in, filter, open, retry (installs Chromium if missing).
    echo "==> the dashboard in headless Chromium (scripts/dashboard-browser-check.sh)"
    DETECTQ_BINARY="$(swift build --show-bin-path)/detectq" scripts/dashboard-browser-check.sh
fi
