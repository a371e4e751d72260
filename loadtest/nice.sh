# Sourced by compare.sh and watchers.sh (before anything else runs): re-executes the calling script.
# NICE=-10 runs the relay, nginx and relay-load at that nice level, so that a build running beside them gets only
# what they leave (on a shared machine that never goes quiet). Negative values need root. With autogroup scheduling
# (kernel.sched_autogroup_enabled=1) nice only ranks processes within one session's group, so the script moves
# into a session of its own and gives that group the same nice level.
NICE=${NICE:-0}
NICE_CMD=""
if [[ $NICE != 0 ]]; then
    if [[ -z ${LOADTEST_OWN_SESSION:-} ]] && command -v setsid >/dev/null; then
        LOADTEST_OWN_SESSION=1 exec setsid --wait bash "$0" "$@"
    fi
    [[ -w /proc/self/autogroup ]] && { echo "$NICE" >/proc/self/autogroup; } 2>/dev/null || true
    NICE_CMD="nice -n $NICE"
fi
