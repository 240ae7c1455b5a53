#!/usr/bin/env bash
# The distributed pipeline end to end (coordinator, EMBEDDERS embedder processes, 1 writer, over
# this machine's RabbitMQ and PostgreSQL, the vectors in the Qdrant gRPC test fixture), next to the
# embed stage's two halves alone (decode only, inference only) on the same images, in one run.
# Prints the ratio end-to-end / min(decode, inference): the goal is >= 0.9, i.e. the broker and the
# writer are not the bottleneck. On a CPU-only machine decode and inference share the cores, so the
# best the pipeline can do there is the sequential bound 1 / (1/decode + 1/inference); the script
# prints the ratio to that too.
#   bench/distributed.sh [MODEL_DIR] [N_IMAGES] [EMBEDDERS] [BATCH]
# MODEL_DIR defaults to the tiny test CLIP; the ViT-B-32 shape (random weights, same speed) comes from
#   .venv-tools/bin/python scripts/fixtures/export_vit_b32_shape.py /tmp/vit-b32-random
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(realpath "${1:-tests/fixtures/models/tiny-clip}")
n=${2:-2000}
embedders=${3:-1}
batch=${4:-32}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/setup-ort.sh)}
scripts/cargo build --release --locked -p imgsearch -p qdrant-fixture >&2
scripts/cargo bench --locked -p embedder --bench stages --no-run >&2

work=$(mktemp -d)
pids=()
prefix="bench$(date +%s)"
schema="bench_$(date +%s)"
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  for q in jobs jobs.dead embeddings embeddings.dead; do rabbitmqctl -q delete_queue "$prefix.$q" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# N images: the 16 real photographs (214-1000 px, six formats) copied into folders
mkdir -p "$work/images"
i=0
while [ "$i" -lt "$n" ]; do
  for f in tests/fixtures/photos/*; do
    [ "$i" -ge "$n" ] && break
    d="$work/images/$((i / 500))"; mkdir -p "$d"
    cp "$f" "$d/$i-$(basename "$f")"; i=$((i + 1))
  done
done
echo "$n images (copies of 16 real photographs), $(nproc) cores, model $(basename "$model"), batch $batch, $embedders embedder(s) + 1 writer"

stages=$(scripts/cargo bench --locked -p embedder --bench stages -- "$model" "$work/images" "$batch" 2>/dev/null | tail -1)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/qdrant-fixture --addr "127.0.0.1:$port" --data "$work/qdrant" 2>"$work/qdrant.log" & pids+=($!)
export IMGSEARCH__CATALOG__SCHEMA=$schema IMGSEARCH__BROKER__PREFIX=$prefix IMGSEARCH__VECTORS__QDRANT_URL="http://127.0.0.1:$port"
export IMGSEARCH__MODEL__NAME=$model IMGSEARCH__EMBEDDER__BATCH_SIZE=$batch
export IMGSEARCH__COORDINATOR__METRICS_ADDR=127.0.0.1:0 IMGSEARCH__COORDINATOR__PROGRESS_INTERVAL_MS=100
export IMGSEARCH_LOG=warn
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
metrics=()
for e in $(seq 1 "$embedders"); do
  p=$(free_port); metrics+=("$p")
  IMGSEARCH__EMBEDDER__METRICS_ADDR=127.0.0.1:$p target/release/imgsearch embedder 2>"$work/embedder$e.log" & pids+=($!)
done
p=$(free_port); metrics+=("$p")
IMGSEARCH__WRITER__METRICS_ADDR=127.0.0.1:$p target/release/imgsearch writer 2>"$work/writer.log" & pids+=($!)
sleep 2
target/release/imgsearch coordinator "$work/images" --json >"$work/coordinator.json" 2>"$work/coordinator.log"
for p in "${metrics[@]}"; do curl -s "127.0.0.1:$p/metrics"; done >"$work/metrics.txt"

python3 - "$work/coordinator.json" "$stages" <<'PY'
import json, sys
run = json.load(open(sys.argv[1])); st = json.loads(sys.argv[2])
assert run["status"] == "completed" and run["failed"] == 0, run
e2e, dec, inf = run["imagesPerSecond"], st["decodeImagesPerSecond"], st["inferenceImagesPerSecond"]
seq = 1 / (1 / dec + 1 / inf)
print(f"{'decode only':<28}{dec:10.1f} images/s")
print(f"{'inference only':<28}{inf:10.1f} images/s  ({st['device']})")
print(f"{'sequential bound':<28}{seq:10.1f} images/s  (1 / (1/decode + 1/inference))")
print(f"{'distributed end to end':<28}{e2e:10.1f} images/s  ({run['completed']} images in {run['pipelineSeconds']:.1f} s, publish to last commit)")
print(f"end-to-end / min(decode, inference) = {e2e / min(dec, inf):.2f}   (goal >= 0.9)")
print(f"end-to-end / sequential bound      = {e2e / seq:.2f}")
PY
# where the time went: total seconds per stage, summed over the processes
python3 - "$work/metrics.txt" <<'PY'
import re, sys, collections
tot = collections.Counter(); cnt = collections.Counter()
for line in open(sys.argv[1]):
    m = re.match(r'imgsearch_(embedder|writer)_batch_duration_seconds_(sum|count)\{stage="(\w+)"\} (\S+)', line)
    if m:
        (tot if m[2] == "sum" else cnt)[f"{m[1]} {m[3]}"] += float(m[4])
print("stage time (all batches):", ", ".join(f"{k} {tot[k]:.2f} s / {int(cnt[k])} batches" for k in sorted(tot)))
PY
