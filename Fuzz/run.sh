#!/usr/bin/env bash
# Runs each fuzz target for FUZZ_SECONDS (default 60) from its committed seed
# corpus (Fuzz/corpus/<target>/). New inputs go to $FUZZ_BUILD/corpus/<target>/,
# crashes, timeouts and leaks to $FUZZ_BUILD/crashes/<target>/ (both ignored by
# git). Exits non-zero when any target found a problem; the reproducer's path
# is printed (rerun it with: .build-fuzz/bin/fuzz-<target> <file>).
#
# Usage: Fuzz/run.sh [target...]   (default: config lease etcd netlink tunnel)
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${FUZZ_BUILD:-.build-fuzz}"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(config lease etcd netlink tunnel)

Fuzz/build.sh "${TARGETS[@]}" || exit 1

# The Swift runtime's backtracer would catch the trap before libFuzzer does.
export SWIFT_BACKTRACE=enable=no
# Leak checking would report Foundation's caches; traps and memory errors are what we look for.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:handle_abort=1}"

failed=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$OUT/corpus/$t" "$OUT/crashes/$t" "$OUT/logs"
    log="$OUT/logs/$t.log"
    echo "fuzz: $t for ${SECONDS_EACH}s (log: $log)"
    max_len=16384
    [ "$t" = netlink ] && max_len=65536
    [ "$t" = tunnel ] && max_len=65538
    dict=""
    [ -f "Fuzz/dict/$t.dict" ] && dict="-dict=Fuzz/dict/$t.dict"
    "$OUT/bin/fuzz-$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=$max_len \
        -print_final_stats=1 -artifact_prefix="$OUT/crashes/$t/" $dict \
        "$OUT/corpus/$t" "Fuzz/corpus/$t" > "$log" 2>&1
    status=$?
    # The last status line says how far it got: executions, coverage, corpus.
    grep -E '^#[0-9]+' "$log" | tail -1 | sed "s/^/fuzz: $t: /"
    grep -E 'stat::(number_of_executed_units|average_exec_per_sec|slowest_unit_time_sec|peak_rss_mb)' "$log" | sed "s/^/fuzz: $t: /"
    if [ $status -ne 0 ]; then
        failed+=("$t")
        echo "fuzz: $t FAILED (exit $status):"
        grep -E 'ERROR|SUMMARY|Fatal error|Test unit written|deadly signal|timeout' "$log" | head -10 | sed 's/^/    /'
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: problems found in: ${failed[*]} (reproducers in $OUT/crashes/)"
    exit 1
fi
echo "fuzz: no crash, hang or trap in ${TARGETS[*]}"
