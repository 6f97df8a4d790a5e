#!/usr/bin/env bash
# Regenerates the replay golden files with edgetap's own tools:
#   golden.pcap         the reference platform's clause 6 plan against the reference
#                       edge GOLD1 (`sim platform --capture`), through mosquitto;
#   golden.expect.json  the outcome of replaying its platform side to a fresh reference
#                       edge DUT1 (`replay --save-expect`), with the mutations the
#                       README's CI example sends.
# Usage: captures/replay/generate.sh [path/to/edgetap]   (default: target/debug/edgetap)
# Needs: mosquitto.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EDGETAP=${1:-$HERE/../../target/debug/edgetap}
PORT=${PORT:-18850}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
mosquitto -p "$PORT" >/dev/null 2>&1 & PIDS+=($!)
sleep 1
B=127.0.0.1:$PORT
"$EDGETAP" sim platform --broker "$B" --edge-id GOLD1 --wait-ms 3000 --edge-wait-ms 3000 \
    --job-timeout 10 --capture "$HERE/golden.pcap" > /dev/null & PLAN=$!
sleep 1
"$EDGETAP" sim edge --broker "$B" --edge-id GOLD1 > /dev/null & PIDS+=($!)
wait $PLAN
kill "${PIDS[1]}"
"$EDGETAP" replay "$HERE/golden.pcap" --as platform --broker "$B" --edge-id DUT1 --asap \
    --seed 42 --mutate drop-field --mutate invalid-json \
    --save-expect "$HERE/golden.expect.json" > /dev/null & REPLAY=$!
sleep 2
# The device of the README's CI example, as written there.
"$EDGETAP" sim edge --broker "$B" --edge-id DUT1 > /dev/null & PIDS+=($!)
wait $REPLAY
echo "wrote $HERE/golden.pcap and $HERE/golden.expect.json"
