#!/usr/bin/env bash
# Constant-time check under Valgrind memcheck (ctgrind style): runs crypto-simd's ct_valgrind
# test with the secret inputs of the X25519 kernels (every backend Valgrind's CPU offers) and of
# the MAC compare marked undefined. Passes only if
#   1. the real code makes no branch or memory address depend on a secret (exit 0), and
#   2. the deliberately leaky compare (the negative control) is caught (exit 99).
# Built in debug with debug assertions and overflow checks off (both branch on secrets by
# design), in its own target dir so the main build is not invalidated.
# Usage: perf/ctgrind.sh        (exit 0: checked; 1: a leak or a harness failure)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
    echo "ctgrind: valgrind not installed" >&2
    exit 2
fi

bin=$(CARGO_PROFILE_DEV_DEBUG_ASSERTIONS=false CARGO_PROFILE_DEV_OVERFLOW_CHECKS=false \
    cargo test -p mixplane-crypto-simd --test ct_valgrind --target-dir target/ct --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "ctgrind: could not build the ct_valgrind test" >&2
    exit 1
fi

echo "== ctgrind: constant-time code must pass"
valgrind -q --error-exitcode=99 "$bin" --test-threads=1 --nocapture

echo "== ctgrind: the leaky compare (negative control) must be caught"
set +e
valgrind -q --error-exitcode=99 "$bin" --test-threads=1 --ignored >/dev/null 2>&1
rc=$?
set -e
if [ "$rc" -ne 99 ]; then
    echo "ctgrind: the negative control was not caught (exit $rc): the harness is broken" >&2
    exit 1
fi
echo "ctgrind: ok (leaky compare caught; kernels and MAC compare clean)"
