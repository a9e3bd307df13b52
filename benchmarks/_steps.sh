# Shared by the GPU check scripts (sourced): timed, logged steps and a summary list.
# step <name> <timeout_s> <command...>: runs the command under `timeout`, logs its status and
# time, appends a line to SUMMARY and returns the command's exit status (a failed step does
# not stop the script). skip <name> <reason>: a summary line for a step that did not run.

SUMMARY=()

step() {
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== [$name] $(date -u +%H:%M:%S) (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    local took=$((SECONDS - t0))
    local status=OK
    [ $rc -ne 0 ] && status="FAIL(rc=$rc)"
    [ $rc -eq 124 ] && status="TIMEOUT"
    echo "=== [$name] $status in ${took}s"
    SUMMARY+=("$(printf '%-14s %-12s %4ss' "$name" "$status" "$took")")
    return $rc
}

skip() {
    echo
    echo "=== [$1] SKIPPED: $2"
    SUMMARY+=("$(printf '%-14s %-12s' "$1" "SKIPPED") $2")
}
