#!/usr/bin/env bash
# Proxy benchmark (issue 4, item 7): QoS 0 1 KB publishes and QoS 1 round trips,
# straight to mosquitto and through `edgetap proxy` with recording on, in one run;
# then the proxy's peak RSS with 1,000 connections. Not a timed test: read the numbers.
#
#   bench/proxy.sh            # release build (the numbers that count)
#   BENCH_PROFILE=dev bench/proxy.sh
#   BENCH_MESSAGES=50000 BENCH_ROUNDS=5000 bench/proxy.sh
#   BENCH_MAX_BUFFERED=4194304 bench/proxy.sh   # the proxy's --max-buffered
#   BENCH_SLOW=1 bench/proxy.sh                 # also print the 30 slowest QoS 1 rounds
#   BENCH_PAIRS=5 bench/proxy.sh                # direct/proxied pairs, taking turns (default 5)
#
# Targets: throughput >= 90% of direct; added p99 latency < 300 µs on loopback;
# peak RSS < 100 MB at 1,000 connections. Needs mosquitto; raises its fd limit itself.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=()
if [ "${BENCH_PROFILE:-release}" = release ]; then profile=(--release); fi
cargo test "${profile[@]}" --test proxy bench_direct_vs_proxy -- --ignored --nocapture
