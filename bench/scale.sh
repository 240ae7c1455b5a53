#!/usr/bin/env bash
# How cost grows with the corpus (issue 16), embedded default, in one run: for each N, N distinct
# generated images are indexed, re-run unchanged, searched from the CLI and through `serve` (p50/p99
# at concurrency 1 and 8, with and without a date filter); one row per N, then the growth ratios
# from the smallest to the largest N. Uses the tiny test CLIP (64-d vectors).
# Usage: bench/scale.sh [N ...]   (default: 10000 50000 200000; add 1000000 for the million row)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh >/dev/null
scripts/cargo build --release --locked -p imgsearch >&2
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(10000 50000 200000)
exec python3 bench/scale.py "$PWD/target/release/imgsearch" "$PWD/tests/fixtures/models/tiny-clip" "${sizes[@]}"
