#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 600) each, two at a time; logs in fuzz/logs/.
set -uo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
mkdir -p logs
run() {
    RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$1" "corpus/$1" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        > "logs/$1.log" 2>&1
    echo "$1 exit $?" >> logs/summary.txt
}
: > logs/summary.txt
run pickle_machine & run checkpoint & wait
run rewrite & run zip_reader & wait
run safetensors_header & run recipe & wait
run adapter & wait
cat logs/summary.txt
