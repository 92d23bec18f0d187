#!/usr/bin/env bash
# Coverage-guided fuzzing of the API response decoders with libFuzzer, by hand: compiles
# fuzz/ResponseDecoders.swift with the decoding files of Sources/ResembleDetect (-sanitize=fuzzer,address) and
# runs it from the API pages' examples for the given seconds (default 300). A crash leaves its input in the
# work directory: copy it into Tests/ResembleDetectTests/Fixtures/fuzz-regressions/, which every test run
# replays. (CI runs the seeded mutation fuzzers of the test suite instead; README, "Guarantees under faults".)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
work="${DETECTQ_FUZZ_DIR:-$(mktemp -d /tmp/detectq-fuzz.XXXXXX)}"
mkdir -p "$work/corpus"
cp Tests/ResembleDetectTests/Fixtures/*-response-*.json Tests/ResembleDetectTests/Fixtures/fuzz-regressions/* "$work/corpus/"
sources=(DetectAPIError DetectResponses DetectionItem DetectionMetrics DetectionOptions Intelligence JSONSpan JSONValue LenientDecoding MediaFile)
echo "==> compiling the fuzzer into $work"
swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name ResembleDetectFuzz fuzz/ResponseDecoders.swift \
    $(printf 'Sources/ResembleDetect/%s.swift ' "${sources[@]}") -o "$work/fuzz-response-decoders"
echo "==> fuzzing for $seconds s"
cd "$work"
# Swift's runtime keeps metadata caches that LeakSanitizer reports at exit; leaks are not what is fuzzed here.
ASAN_OPTIONS=detect_leaks=0 ./fuzz-response-decoders -max_total_time="$seconds" -max_len=16384 -print_final_stats=1 corpus
