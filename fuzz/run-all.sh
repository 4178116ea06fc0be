#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each, starting from the committed seed corpus
# (fuzz/corpus/<target>/, written by `cargo test -p mixplane-dataplane --test fuzz_corpus --
# --ignored`), and prints executions and crashes per target.
#
# Usage: fuzz/run-all.sh SECONDS
#   FUZZ_SANITIZER=address|none (default address)   FUZZ_TARGETS="a b" (default: all)
# Needs a nightly toolchain and cargo-fuzz; installs them if missing. New corpus entries go to
# fuzz/out/corpus/<target>/ (ignored by git), crashes to fuzz/artifacts/<target>/, logs to
# fuzz/out/<target>.log. Exit status: 0 if no target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:?usage: fuzz/run-all.sh SECONDS}
sanitizer=${FUZZ_SANITIZER:-address}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "installing the nightly toolchain (cargo fuzz needs it)"
    rustup toolchain install nightly --profile minimal ||
        { echo "cannot install nightly: fuzzing needs it" >&2; exit 2; }
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked ||
        { echo "cannot install cargo-fuzz" >&2; exit 2; }
fi

targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
mkdir -p fuzz/out
echo "== building ($sanitizer sanitizer)"
cargo +nightly fuzz build --sanitizer "$sanitizer" >fuzz/out/build.log 2>&1 ||
    { tail -30 fuzz/out/build.log; exit 1; }

status=0
printf '%-16s %8s %14s %10s %8s %s\n' target seconds executions "execs/s" crashes corpus
for t in $targets; do
    mkdir -p "fuzz/out/corpus/$t" "fuzz/artifacts/$t"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    set +e
    # the first corpus dir receives new inputs; the committed seeds are only read
    # (a target without committed seeds starts from an empty corpus)
    seeds=()
    [ -d "fuzz/corpus/$t" ] && seeds=("fuzz/corpus/$t")
    cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" "fuzz/out/corpus/$t" "${seeds[@]}" \
        -- -max_total_time="$secs" -print_final_stats=1 >"fuzz/out/$t.log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "fuzz/out/$t.log" | tail -1)
    crashes=$(( $(find "fuzz/artifacts/$t" -type f | wc -l) - before ))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes="?(rc=$rc, see fuzz/out/$t.log)"
    fi
    [ "$rc" -ne 0 ] && status=1
    corpus=$(find "fuzz/out/corpus/$t" -type f | wc -l)
    rate=$(( ${execs:-0} / secs ))
    printf '%-16s %8s %14s %10s %8s %s\n' "$t" "$secs" "${execs:-?}" "$rate" "$crashes" "$corpus"
done
exit $status
