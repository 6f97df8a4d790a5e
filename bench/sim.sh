#!/usr/bin/env bash
# Benchmark: a fleet of reference edges (`sim edge --count N`) against the embedded
# broker and against mosquitto, in the same run, each with a `sim platform
# --respond-only` answering link-ups and topo requests. Not a test: prints numbers.
#
#   bench/sim.sh [N_EDGES] [DURATION_MS]     (default 1000 edges, 20000 ms)
#
# Needs mosquitto and /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
dur=${2:-20000}
work=$(mktemp -d /tmp/edgetap-simbench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true
cargo build --release --quiet
bin=target/release/edgetap

fleet() { # name, broker address; prints the edge process's summary and peak RSS
  local name=$1 addr=$2
  "$bin" sim platform --broker "$addr" --respond-only > "$work/$name.platform" 2>&1 &
  local platform=$!
  sleep 1
  echo "== $name ($addr): $n edges, ${dur} ms"
  /usr/bin/time -f "edge process: %e s wall, peak RSS %M KB" \
    "$bin" sim edge --broker "$addr" --edge-id B --count "$n" --period-ms 1000 \
    --duration-ms "$dur" 2>&1 | tail -n 8
  kill "$platform" 2>/dev/null || true
  wait "$platform" 2>/dev/null || true
}

p1=18851; p2=18853
"$bin" broker --listen "127.0.0.1:$p1" > /dev/null 2>&1 &
broker=$!
sleep 1
fleet "embedded rumqttd" "127.0.0.1:$p1"
echo "broker peak RSS: $(grep VmHWM /proc/$broker/status | awk '{print $2, $3}')"
kill "$broker"

printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\n' "$p2" > "$work/m.conf"
mosquitto -c "$work/m.conf" > /dev/null 2>&1 &
mosq=$!
sleep 1
fleet "mosquitto" "127.0.0.1:$p2"
echo "broker peak RSS: $(grep VmHWM /proc/$mosq/status | awk '{print $2, $3}')"
