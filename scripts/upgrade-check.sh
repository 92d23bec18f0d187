#!/usr/bin/env bash
# A rolling upgrade tried for real: builds the release at a git ref (default: the last commit before the newest
# migration) in a scratch work tree, then runs `detectq upgrade-check`, which runs that release's migrate and
# workers with requests in flight, this release's migrate beside them, stops them (the first with SIGKILL), runs
# this release's workers to the end, and prints what it checked. Usage: scripts/upgrade-check.sh [REF] [options
# of detectq upgrade-check], e.g. `scripts/upgrade-check.sh 2bf2f4b` for the first release.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh

newest="$(ls migrations/*.sql | sort | tail -1)"
ref="${1:-$(git log -1 --format=%H --diff-filter=A -- "$newest")^}"
[ $# -gt 0 ] && shift
commit="$(git rev-parse --verify "$ref^{commit}")"
scratch=".build/upgrade-check/${commit:0:12}"

detectq_install_prerequisites
if [ ! -x "$scratch/.build/debug/detectq" ]; then
    echo "==> building the release at $ref (${commit:0:12}) in $scratch"
    git worktree remove --force "$scratch" 2>/dev/null || rm -rf "$scratch"
    git worktree prune
    git worktree add --detach "$scratch" "$commit" >/dev/null
    (cd "$scratch" && swift build --product detectq 2>&1 | { grep -v "unhandled; explicitly declare\|swift-distributed-tracing/Sources" || true; })
fi
echo "==> building this release"
swift build --product detectq 2>&1 | { grep -v "unhandled; explicitly declare\|swift-distributed-tracing/Sources" || true; }
echo "==> upgrading from ${commit:0:12} ($(git log -1 --format=%cs "$commit")) to $(git rev-parse --short HEAD)"
exec env -u DATABASE_URL .build/debug/detectq upgrade-check --previous "$PWD/$scratch/.build/debug/detectq" "$@"
