#!/usr/bin/env bash
# Builds the JSON fuzzer with libFuzzer + AddressSanitizer and runs it for N seconds (default 60).
# Exits non-zero when libFuzzer finds a crash, a broken invariant, a leak or a timeout (the input is saved
# under fuzz/artifacts/), or when the build or its coverage instrumentation is missing.
#
#   fuzz/run.sh [seconds]          extra libFuzzer flags: FUZZ_FLAGS="-fork=2" fuzz/run.sh 600
set -euo pipefail

seconds="${1:-60}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

# Both spellings are needed (README.md "Build flags"): `--sanitize=fuzzer` makes SwiftPM link libFuzzer's main
# instead of renaming the entry point to json_fuzz_main (which -parse-as-library leaves undefined), and
# `-Xswiftc -sanitize=fuzzer,address` comes last, so swiftc (which keeps only its last -sanitize=) compiles the
# code with coverage counters as well as ASan.
build=(
    swift build -c debug --sanitize=fuzzer
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
    --product json-fuzz
)
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "building: ${build[*]}"
if ! "${build[@]}" >"$log" 2>&1; then
    # ld.gold warns once per ASan helper symbol ("Cannot export local symbol"); only the rest is news.
    grep -v "Cannot export local symbol" "$log" >&2
    exit 2
fi
tail -n 1 "$log"
fuzzer="$(swift build -c debug --show-bin-path)/json-fuzz"

# Swift's crash backtracer fights libFuzzer for the fatal signal (it hung here after a fatalError); libFuzzer
# prints the stack and saves the input itself.
export SWIFT_BACKTRACE="enable=no"

# Without coverage counters libFuzzer degrades to blind mutation and still "passes": refuse that.
mkdir -p artifacts
preflight="$("$fuzzer" -runs=0 -artifact_prefix=artifacts/ corpus/json 2>&1 || true)"
if ! grep -q "inline 8-bit counters" <<<"$preflight"; then
    echo "json-fuzz has no coverage instrumentation; check the build flags" >&2
    exit 2
fi

# New inputs go to the working corpus in .build (not committed); the seeds in corpus/json are only read.
work=".build/corpus/json"
mkdir -p "$work" artifacts
set -x
# shellcheck disable=SC2086  # FUZZ_FLAGS is a list of flags
"$fuzzer" \
    -max_len=4096 -timeout=5 -max_total_time="$seconds" -print_final_stats=1 \
    -dict=json.dict -artifact_prefix=artifacts/ ${FUZZ_FLAGS:-} \
    "$work" corpus/json
