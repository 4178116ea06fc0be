#!/usr/bin/env bash
# Count instructions with valgrind's callgrind: repeatable (same binary and inputs give the same
# totals, whatever else the machine does), for machines where perf is unavailable or noisy.
#
#   perf/callgrind.sh bench sphinx     # one short run of a criterion bench
#   perf/callgrind.sh demo [flags]     # the demo (few packets: valgrind is ~50x slower)
#
# Output: perf/out/callgrind.<name>.out; read it with callgrind_annotate or kcachegrind.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p perf/out
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
kind=${1:-}
shift || true
case "$kind" in
    bench)
        name=${1:?bench name}
        shift
        cargo bench -p mixplane-bench --bench "$name" --no-run
        bin=$(ls -t target/release/deps/"$name"-* | grep -v '\.d$' | head -n 1)
        out="perf/out/callgrind.$name.out"
        # --profile-time runs each benchmark for a fixed time without analysis
        valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --bench --profile-time 1 "$@"
        ;;
    demo)
        cargo build --release -p mixplane-dataplane --bin mixplane
        out=perf/out/callgrind.demo.out
        valgrind --tool=callgrind --callgrind-out-file="$out" \
            target/release/mixplane demo --packets 50 --rate 100 "$@"
        ;;
    *)
        sed -n '2,8p' "$0"
        exit 2
        ;;
esac
callgrind_annotate "$out" 2>/dev/null | head -n 40 || true
