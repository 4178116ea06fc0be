#!/usr/bin/env bash
# Where one thread's time goes: records a command with `perf record -e cpu-clock -g`, then
# counts the samples of the first thread whose name starts with THREAD (default
# `mixplane-w`, a node's worker) by the function they landed in, grouped into crypto, replay
# filter, libc copies, other user code and kernel, and prints the call chains of the kernel
# functions that took the most. Per-thread leaf counts come from `perf script`, which reads
# every sample (`perf report --comm` can show a subset of them for a thread).
#
#   perf/thread-profile.sh -- target/release/mixplane-nodebench --packets 40000 --pin-harness \
#       --interleave 8 --transport tcp
#   THREAD=mixplane-w1 TOP=30 perf/thread-profile.sh -- target/release/mixplane run --config node.toml
#
# Output: the tables on stdout; the recording in perf/out/thread.data. With several node
# phases in one run (e.g. `--transport udp,tcp,noise`), the first worker is the first
# phase's: profile one transport at a time.
set -euo pipefail
# the recording goes to the repository's perf/out; the command runs where it was called from
out=$(cd "$(dirname "$0")" && pwd)/out
[ "${1:-}" = "--" ] && shift
if [ $# -eq 0 ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
command -v perf >/dev/null 2>&1 || {
    echo "perf not found: install it (Debian: apt-get install linux-perf)" >&2
    exit 1
}
thread=${THREAD:-mixplane-w}
top=${TOP:-25}
mkdir -p "$out"
data=$out/thread.data
perf record -e cpu-clock -F "${FREQ:-4000}" -g -o "$data" -- "$@"
# from here on, pipelines end in `head`: an early close must not stop the script
set +o pipefail

tid=$(perf script -i "$data" -F comm,tid 2>/dev/null |
    awk -v t="$thread" '!found && index($1, t) == 1 { print $2; found = 1 }')
if [ -z "$tid" ]; then
    echo "no samples from a thread named $thread*" >&2
    exit 1
fi
leaves=$(mktemp)
trap 'rm -f "$leaves"' EXIT
# the first frame of each sample is the function the sample landed in
perf script -i "$data" --tid "$tid" -F ip,sym,dso 2>/dev/null |
    awk 'BEGIN { first = 1 } /^$/ { first = 1; next } first { first = 0; $1 = ""; print }' >"$leaves"
total=$(wc -l <"$leaves")
echo "thread $thread (tid $tid): $total samples"
echo
echo "by kind:"
awk '{
    if ($0 ~ /x25519|blake2b|sha256|chacha20|lioness|kdf::batch|aes::|wipe|zeroize|black_box|check_batched/) k = "crypto (and its scrubbing)";
    else if ($0 ~ /\[kernel/) k = "kernel";
    else if ($0 ~ /ReplayFilter/) k = "replay filter";
    else if ($0 ~ /memmove|memcpy|memset/) k = "libc copies";
    else k = "other user code";
    n[k]++; t++
} END { for (k in n) printf "  %6.1f %%  %s\n", 100 * n[k] / t, k }' "$leaves" | sort -rn
echo
echo "top $top functions:"
sort "$leaves" | uniq -c | sort -rn | head -n "$top" |
    awk -v t="$total" '{ c = $1; $1 = ""; printf "  %6.2f %% %s\n", 100 * c / t, $0 }'
echo
echo "where the five busiest kernel functions were called from (eight frames):"
grep -F '[kernel' "$leaves" | awk '{ print $1 }' | sort | uniq -c | sort -rn | head -5 |
    awk '{ print $2 }' | while read -r f; do
    perf script -i "$data" --tid "$tid" -F ip,sym 2>/dev/null |
        awk -v f="$f" 'BEGIN { n = 0 }
            /^$/ { if (hit) print chain; chain = ""; n = 0; hit = 0; next }
            { n++; if (n == 1 && $2 == f) hit = 1; if (n <= 8) chain = chain (n > 1 ? " < " : "") $2 }
            END { if (hit) print chain }' |
        sort | uniq -c | sort -rn | head -2 |
        awk -v t="$total" '{ c = $1; $1 = ""; printf "  %6.2f %% %s\n", 100 * c / t, $0 }'
done
