#!/usr/bin/env bash
# How cost grows with the corpus (issue 16), in one run: for each N, N distinct generated images.
# Embedded default (bench/scale.py): indexed, re-run unchanged, searched from the CLI and through
# `serve` (p50/p99 at concurrency 1 and 8, with and without a date filter).
# Distributed (--distributed, bench/scale_distributed.py): the coordinator's memory and publish rate,
# the writer's commit time per batch, and whether the per-page and per-batch catalog statements are
# served by an index, over this machine's PostgreSQL and RabbitMQ and the Qdrant gRPC fixture.
# One row per N, then the growth ratios from the smallest to the largest N. Tiny test CLIP (64-d).
# Usage: bench/scale.sh [--distributed] [N ...]
#   (default N: 10000 50000 200000; add 1000000 for the million row)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh >/dev/null
distributed=false
if [[ ${1:-} == --distributed ]]; then
  distributed=true
  shift
fi
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(10000 50000 200000)
model="$PWD/tests/fixtures/models/tiny-clip"
if $distributed; then
  scripts/cargo build --release --locked -p imgsearch -p qdrant-fixture >&2
  exec python3 bench/scale_distributed.py "$PWD/target/release/imgsearch" "$PWD/target/release/qdrant-fixture" "$model" "${sizes[@]}"
fi
scripts/cargo build --release --locked -p imgsearch >&2
exec python3 bench/scale.py "$PWD/target/release/imgsearch" "$model" "${sizes[@]}"
