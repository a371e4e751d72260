#!/usr/bin/env bash
# backlog.sh: N distinct small requests submitted as fast as one client can to the synthetic upstream (its default
# 2 slots, time scale 0), on loopback; then, for comparison, the same N with no backlog (at most BASELINE_OUTSTANDING
# submitted and not yet completed). Each run prints the completion rate every second, the queue depth and the
# relay's RSS, and ends with the rates and the peak RSS. Rate limits are off in both runs (`--rate-limits off`): one
# client submitting N requests is what is measured, not the anonymous tier's 20 a minute.
#
#   loadtest/backlog.sh                          # 20,000 requests
#   COUNT=100000 MAX_SECONDS=1800 loadtest/backlog.sh
#
# Environment (all optional):
#   COUNT=20000                 requests per run (at most 200,000)
#   MAX_SECONDS=900             each run stops after this long, done or not (at most 3,600)
#   BASELINE=1                  also run without a backlog (0: only the backlog run)
#   BASELINE_OUTSTANDING=200    the no-backlog run's bound on requests in flight
#   RESTART=1                   after the backlog run, restart the relay on its data and measure it (0: skip)
#   CONCURRENCY=16              submitting connections
#   RELAY_BIN=…/media-relay     default: .build/release/media-relay, else .build/debug/media-relay
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
COUNT=${COUNT:-20000}
MAX_SECONDS=${MAX_SECONDS:-900}
BASELINE=${BASELINE:-1}
BASELINE_OUTSTANDING=${BASELINE_OUTSTANDING:-200}
CONCURRENCY=${CONCURRENCY:-16}
RESTART=${RESTART:-1}
if [[ -z "${RELAY_BIN:-}" ]]; then
    RELAY_BIN=$ROOT/.build/release/media-relay
    [[ -x $RELAY_BIN ]] || RELAY_BIN=$ROOT/.build/debug/media-relay
fi
[[ -x $RELAY_BIN ]] || { echo "no relay binary at $RELAY_BIN (make release, or set RELAY_BIN)" >&2; exit 1; }

run() {
    python3 "$HERE/backlog.py" --binary "$RELAY_BIN" --count "$COUNT" --max-seconds "$MAX_SECONDS" \
        --concurrency "$CONCURRENCY" "$@"
}

echo "== $COUNT requests at once (a backlog), $RELAY_BIN"
if [[ $RESTART == 1 ]]; then run --restart; else run; fi
if [[ $BASELINE == 1 ]]; then
    echo "== $COUNT requests, at most $BASELINE_OUTSTANDING in flight (no backlog)"
    run --max-outstanding "$BASELINE_OUTSTANDING"
fi
