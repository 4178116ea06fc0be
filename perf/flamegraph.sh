#!/usr/bin/env bash
# Profile mixplane with `perf record -e cpu-clock` (works where hardware counters do not, e.g.
# in VMs) and render an SVG flamegraph with inferno.
#
#   perf/flamegraph.sh bench sphinx          # a criterion bench (bench/benches/sphinx.rs)
#   perf/flamegraph.sh demo [demo flags]     # the local mixnet demo, all four nodes
#   perf/flamegraph.sh pid 12345 [seconds]   # a running node, for N seconds (default 20)
#
# Output: perf/out/<name>.svg (and the folded stacks next to it).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p perf/out

need() {
    if ! command -v perf >/dev/null 2>&1; then
        echo "perf not found: install it (Debian: apt-get install linux-perf)" >&2
        exit 1
    fi
    if ! command -v inferno-collapse-perf >/dev/null 2>&1; then
        echo "installing inferno (cargo install inferno)..." >&2
        cargo install --locked inferno >&2
    fi
}

render() { # $1 = perf.data, $2 = name
    perf script -i "$1" 2>/dev/null | inferno-collapse-perf > "perf/out/$2.folded"
    inferno-flamegraph --title "mixplane: $2" < "perf/out/$2.folded" > "perf/out/$2.svg"
    echo "wrote perf/out/$2.svg"
}

kind=${1:-}
shift || true
case "$kind" in
    bench)
        need
        name=${1:?bench name, e.g. sphinx}
        shift
        # build first so the profile holds only the benchmark
        cargo bench -p mixplane-bench --bench "$name" --no-run
        bin=$(ls -t target/release/deps/"$name"-* | grep -v '\.d$' | head -n 1)
        perf record -e cpu-clock -F 999 -g --call-graph dwarf -o perf/out/perf.data \
            "$bin" --bench --profile-time 10 "$@"
        render perf/out/perf.data "bench-$name"
        ;;
    demo)
        need
        cargo build --release -p mixplane-dataplane --bin mixplane
        perf record -e cpu-clock -F 999 -g --call-graph dwarf -o perf/out/perf.data \
            target/release/mixplane demo "$@"
        render perf/out/perf.data demo
        ;;
    pid)
        need
        pid=${1:?pid of a running mixplane}
        secs=${2:-20}
        perf record -e cpu-clock -F 999 -g --call-graph dwarf -p "$pid" -o perf/out/perf.data -- sleep "$secs"
        render perf/out/perf.data "pid-$pid"
        ;;
    *)
        sed -n '2,9p' "$0"
        exit 2
        ;;
esac
