#!/usr/bin/env bash
# Runs the README's test command (scripts/test.sh) with both cores kept busy by a CPU hog this
# script starts and stops itself, several times in a row: the proof that the suite waits for
# events rather than racing the clock. Each run's closing lines and time are summed up at the
# end; the script fails on the first failed run.
#
# Usage: scripts/stress-test.sh [RUNS] (default 3)
#
# The hog is one `yes > /dev/null` per core at normal priority, so the tests get about half
# the machine, as on a developer's laptop that is building something else.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs="${1:-3}"
if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [RUNS]" >&2
    exit 2
fi

log() { printf '==> stress: %s\n' "$*" >&2; }

hogs=()
stop_hogs() {
    if ((${#hogs[@]})); then
        kill "${hogs[@]}" 2>/dev/null || true
        wait "${hogs[@]}" 2>/dev/null || true
    fi
    hogs=()
}
trap stop_hogs EXIT

mkdir -p target
summary=()
for ((run = 1; run <= runs; run++)); do
    for ((core = 0; core < $(nproc); core++)); do
        yes >/dev/null &
        hogs+=("$!")
    done
    log "run $run of $runs with ${#hogs[@]} CPU hogs (log: target/stress-$run.log)"
    started=$SECONDS
    status=0
    bash scripts/test.sh >"target/stress-$run.log" 2>&1 || status=$?
    stop_hogs
    elapsed=$((SECONDS - started))
    # cargo prints one 'test result:' line per test binary; add them up.
    totals="$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed", p, f }' \
        "target/stress-$run.log")"
    summary+=("run $run: exit $status in ${elapsed} s: $totals")
    log "${summary[-1]}"
    if ((status != 0)); then
        grep -E '^test .* FAILED$|^---- |panicked at' "target/stress-$run.log" | head -n 40 >&2 || true
        break
    fi
done

printf '%s\n' "${summary[@]}"
[[ ${#summary[@]} -eq $runs ]] && [[ "${summary[-1]}" == *"exit 0 "* ]]
