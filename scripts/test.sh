#!/usr/bin/env bash
# The whole test suite, on a fresh machine or this one: installs what is missing, starts a throwaway
# PostgreSQL cluster (as the postgres user, on a free loopback port), builds, runs every test against it,
# and stops the cluster whatever happens. Extra arguments go to `swift test` (e.g. --filter PostgresTests).
# DETECTQ_FUZZ_SECONDS sets how long each fuzz target runs (default 10 s for the decoders, 6 s for callbacks).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh

detectq_install_prerequisites
trap detectq_stop_cluster EXIT
detectq_start_cluster

echo "==> building"
swift build --build-tests
if [ "$#" -gt 0 ]; then
    echo "==> testing: $*"
    swift test --skip-build "$@"
else
    echo "==> testing"
    swift test --skip-build --skip LargeUploadTests --skip ChaosTests --skip ResponseFuzzTests --skip CallbackFuzzTests
    # Peak memory (VmHWM) belongs to the whole test process, so the uploads whose memory is measured run alone.
    echo "==> testing the memory-bound uploads alone"
    swift test --skip-build --filter LargeUploadTests
    # The fuzzers keep a core busy for their whole budget; beside the timing-sensitive suites they would skew them.
    echo "==> fuzzing (DETECTQ_FUZZ_SECONDS each; seeds printed, DETECTQ_FUZZ_SEED replays)"
    swift test --skip-build --filter "ResponseFuzzTests|CallbackFuzzTests"
    # The chaos suite's short mode kills and restarts processes of its own; it gets the machine to itself.
    echo "==> chaos, short mode (scripts/chaos.sh runs the long one)"
    swift test --skip-build --filter ChaosTests
    # The browser check needs Chromium, which CI machines may not have; the dashboard's HTTP tests ran above.
    if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; then
        echo "==> the dashboard in headless Chromium (scripts/dashboard-screenshots.sh)"
        scripts/dashboard-screenshots.sh
    else
        echo "==> no Chromium: skipping scripts/dashboard-screenshots.sh (apt-get install -y chromium)"
    fi
fi
