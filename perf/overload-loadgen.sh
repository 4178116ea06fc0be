#!/usr/bin/env bash
# Overload measured with the load generator (issue 14 item 12): a `mixplane run` node (one
# worker, default budget) is offered 2x and 10x its capacity by `mixplane-loadgen replay`, which
# reads the node's drops by reason and release-lateness histogram from its metrics; this script
# adds the node's resident memory and the kernel's receive-buffer errors.
#
# Usage: perf/overload-loadgen.sh CAPACITY_PPS [SECONDS] [MULTIPLES]
#   CAPACITY_PPS  the node's forwarding capacity, e.g. the UDP figure of
#                 `mixplane-nodebench --transport udp` on the same machine
#   SECONDS       length of each phase (default 3)
#   MULTIPLES     default "2 10"
#   SYNC_INTERVAL_MS (environment): the replay filters' sync interval, default the node's 1000
#   CAPTURE (environment): packets in the capture, default 20000 (each loop after the first is
#                 replays; a capture as long as the phase keeps every packet fresh)
#   WORKER_CORE, LOADGEN_CORE (environment): default the last core and the first
#   BATCH_BUDGET_US (environment): the node's [node] batch_budget_us, default 1000
# Needs release builds: cargo build --release -p mixplane-dataplane -p mixplane-bench
#
# The capture holds 20,000 packets (mean delay 50 ms per hop) built for the node as layer 1;
# layers 2 and 3 and the gateway are loopback addresses where nothing listens, so what the node
# forwards is lost after it leaves (counted as sent by the node). Each phase replays the capture
# in loops at the asked rate to a freshly started node with an empty replay filter: the first
# loop is fresh packets, later loops are replays that each cost the node an X25519 to reject.
# The node's worker is pinned to the last core and the load generator to the first.
set -euo pipefail
cd "$(dirname "$0")/.."

cap=${1:?usage: perf/overload-loadgen.sh CAPACITY_PPS [SECONDS] [MULTIPLES]}
secs=${2:-3}
multiples=${3:-2 10}
bin=target/release
for b in mixplane mixplane-loadgen; do
    [ -x "$bin/$b" ] || { echo "build first: cargo build --release -p mixplane-dataplane -p mixplane-bench" >&2; exit 2; }
done
last=${WORKER_CORE:-$(($(nproc) - 1))}
gen=${LOADGEN_CORE:-0}
work=$(mktemp -d "${TMPDIR:-/tmp}/mixplane-overload.XXXXXX")
node_pid=
trap '[ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null; rm -rf "$work"' EXIT

key_of() { "$bin/mixplane" keys --config "$1/node.toml" | awk '$1 == "primary" { print $4 }'; }

# the node, and three stand-ins whose keys the routes need
"$bin/mixplane" init "$work/node" >/dev/null
for i in 2 3 4; do "$bin/mixplane" init "$work/hop$i" >/dev/null; done
sed -i -e 's|^listen = "0.0.0.0:1789"|listen = "127.0.0.1:17890"|' \
    -e 's|^workers = 0|workers = 1|' \
    -e "s|^cores = \[\]|cores = [$last]|" \
    -e 's|^allow_loopback_next_hops = false|allow_loopback_next_hops = true|' \
    -e "s|^# file = \"topology.json\"|file = \"$work/topology.json\"|" \
    -e 's|^listen = "127.0.0.1:8081"|listen = "127.0.0.1:18081"|' \
    -e 's|^listen = "0.0.0.0:8080"|listen = "127.0.0.1:18080"|' \
    -e 's|^listen = "0.0.0.0:1790"|listen = "127.0.0.1:11790"|' \
    -e 's|^tcp = true|tcp = false|' \
    -e "s|^batch = 64|batch = 64\nbatch_budget_us = ${BATCH_BUDGET_US:-1000}|" \
    -e "s|^sync_interval_ms = 1000|sync_interval_ms = ${SYNC_INTERVAL_MS:-1000}|" \
    -e 's|^level = "info"|level = "warn"|' "$work/node/node.toml"
entry() { # id ip port key role
    printf '{"node_id":%s,"ip_addresses":["%s"],"mix_port":%s,"x25519_sphinx_pubkey":"%s","role":%s,"mixplane_transport":"udp"}' "$@"
}
{
    printf '['
    entry 1 127.0.0.1 17890 "$(key_of "$work/node")" '{"Mixnode":{"layer":1}}'; printf ','
    entry 2 127.0.0.2 17891 "$(key_of "$work/hop2")" '{"Mixnode":{"layer":2}}'; printf ','
    entry 3 127.0.0.3 17892 "$(key_of "$work/hop3")" '{"Mixnode":{"layer":3}}'; printf ','
    entry 4 127.0.0.4 17893 "$(key_of "$work/hop4")" '"ExitGateway"'
    printf ']\n'
} >"$work/topology.json"

echo "== recording 20000 packets (nothing listens yet: the capture is all the node will see)"
taskset -c "$gen" "$bin/mixplane-loadgen" record --topology "$work/topology.json" --rate 20000 \
    --count ${CAPTURE:-20000} --mean-delay-ms 50 --sink 127.0.0.1:17899 --drain-ms 100 --pcap "$work/cap.pcap" -q >/dev/null

metric() { # name: the sum of its samples
    curl -s http://127.0.0.1:18081/metrics | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d", s }'
}
threads() { # per thread of the node: name, ns on a CPU, ns waiting for one, minor faults
    for t in /proc/"$node_pid"/task/*; do
        printf '%s %s %s\n' "$(tr ' ' _ <"$t/comm")" "$(cut -d' ' -f1,2 "$t/schedstat")" \
            "$(sed 's/.*) //' "$t/stat" | cut -d' ' -f8)"
    done | sort
}
rcvbuf_errors() { awk '/^Udp:/ { if (h) { print $6; exit } h = 1 }' /proc/net/snmp; }
# time the hypervisor ran something else while the worker's vCPU wanted to run (/proc/stat's
# steal column, in USER_HZ ticks; 0 on bare metal): a packet due in such a gap leaves late
steal_ticks() { awk -v c="cpu$last" '$1 == c { print $9 }' /proc/stat; }

for m in $multiples; do
    rm -rf "$work/node/replay"
    "$bin/mixplane" run --config "$work/node/node.toml" 2>"$work/node.log" &
    node_pid=$!
    for _ in $(seq 100); do curl -sf http://127.0.0.1:18081/status >/dev/null && break; sleep 0.1; done
    pps=$((cap * m))
    loops=$(((pps * secs + ${CAPTURE:-20000} - 1) / ${CAPTURE:-20000}))
    rss0=$(awk '/^VmRSS/ { print $2 }' "/proc/$node_pid/status")
    err0=$(rcvbuf_errors)
    steal0=$(steal_ticks)
    t0=$(date +%s%N)
    threads >"$work/sched0"
    wb0=$(awk '$1 == "write_bytes:" { print $2 }' "/proc/$node_pid/io")
    echo "== ${m}x: $pps packets/s, $loops loop(s) of the capture (capacity $cap/s)"
    taskset -c "$gen" "$bin/mixplane-loadgen" replay --pcap "$work/cap.pcap" --pps "$pps" --loop "$loops" \
        --metrics http://127.0.0.1:18081/metrics -q 2>&1 | grep -v '^WARNING'
    sleep 1 # the last held packets leave (mean delay 50 ms)
    hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$node_pid/status")
    err1=$(rcvbuf_errors)
    steal1=$(steal_ticks)
    t1=$(date +%s%N)
    threads >"$work/sched1"
    wb1=$(awk '$1 == "write_bytes:" { print $2 }' "/proc/$node_pid/io")
    # threads that ran more than 1% of the phase: time on a CPU, waiting for one, minor faults
    join "$work/sched0" "$work/sched1" | awk -v s="$secs" '{ r = ($5 - $2) / 1e9; w = ($6 - $3) / 1e9; if (r > s / 100) printf "thread %s: on a CPU %.0f%% of the phase, waiting for one %.0f%%, %d minor page faults\n", $1, 100 * r / s, 100 * w / s, $7 - $4 }'
    echo "node: received $(metric mixplane_packets_received_total), forwarded $(metric mixplane_packets_forwarded_total), dropped $(metric mixplane_packets_dropped_total) (by reason above); host UDP receive-buffer errors +$((err1 - err0))"
    echo "node: wrote $(((wb1 - wb0) / 1048576)) MiB to disk during the phase (the replay filter's syncs)"
    tick_ms=$((1000 / $(getconf CLK_TCK)))
    echo "host: steal on the worker's core (cpu$last) $(((steal1 - steal0) * tick_ms)) ms of $(((t1 - t0) / 1000000)) ms"
    echo "node: resident memory $((rss0 / 1024)) MiB before, peak $((hwm / 1024)) MiB (+$(((hwm - rss0) / 1024)) MiB)"
    kill "$node_pid"
    wait "$node_pid" 2>/dev/null || true
    node_pid=
done
