#!/usr/bin/env bash
# The long form of the chaos test (imgsearch/tests/it/distributed.rs,
# `chaos_kills_restarts_and_outages_lose_and_duplicate_nothing`): 2 embedders and 2 writers on one
# session of IMAGES images over this machine's RabbitMQ and PostgreSQL and the Qdrant fixture; a
# seeded schedule kills -9 a random worker every 0.1-0.6 s (restarted after 0-2 s) until KILLS kills
# landed while jobs were open, closes the run's broker connections, restarts the Qdrant fixture and
# breaks the run's PostgreSQL connections once each; then checks that nothing was lost or written
# twice. RUNS runs, each with a fresh seed; prints each run's final line (the seed replays a run:
# IMGSEARCH_CHAOS_SEED=<seed>).
#   bench/chaos.sh [RUNS] [IMAGES] [KILLS]        (defaults: 5 runs, 6000 images, 80 kills)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
export IMGSEARCH_CHAOS_IMAGES=${2:-6000}
export IMGSEARCH_CHAOS_KILLS=${3:-80}
source scripts/setup.sh >/dev/null
scripts/cargo build --locked --tests -p imgsearch --features imgsearch/failpoints >&2
failed=0
for run in $(seq 1 "$runs"); do
  log=$(mktemp)
  if scripts/cargo test --locked -q -p imgsearch --features imgsearch/failpoints --test it -- \
      distributed::chaos_kills_restarts_and_outages_lose_and_duplicate_nothing --exact --nocapture >"$log" 2>&1; then
    verdict=passed
  else
    verdict=FAILED
    failed=$((failed + 1))
  fi
  line=$(grep -E '^chaos seed [0-9]+: ' "$log" | tail -1 || true)
  echo "run $run/$runs $verdict: ${line:-$(grep -E '^chaos seed' "$log" | head -1)}"
  [ "$verdict" = FAILED ] && { grep -E 'panicked|assert' -A4 "$log" | head -20; echo "(log: $log)"; } || rm -f "$log"
done
echo "$((runs - failed)) of $runs runs passed"
[ "$failed" -eq 0 ]
