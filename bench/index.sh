#!/usr/bin/env bash
# End-to-end indexing throughput of the embedded default (scan, decode + preprocess, ViT-B-32 image
# tower on ONNX Runtime CPU, vector upsert, catalog commit), at three inference batch sizes, in one run.
# The model is the ViT-B-32 architecture with random weights (speed does not depend on the weights):
#   .venv-tools/bin/python scripts/fixtures/export_vit_b32_shape.py /tmp/vit-b32-random
# Usage: bench/index.sh [MODEL_DIR] [COPIES_OF_THE_16_PHOTOS]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-/tmp/vit-b32-random}
copies=${2:-20}
[ -f "$model/visual/model.onnx" ] || { echo "no model in $model; make it with scripts/fixtures/export_vit_b32_shape.py $model" >&2; exit 1; }
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/setup-ort.sh)}
scripts/cargo build --release --locked -p imgsearch >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for i in $(seq 1 "$copies"); do
  mkdir -p "$work/images/$i"
  cp tests/fixtures/photos/* "$work/images/$i/"
done
echo "$(find "$work/images" -type f | wc -l) photos (16 real photographs, 214-1000 px, JPEG/PNG/WebP/GIF/BMP/TIFF), $(nproc) cores"
run() { # batch, extra flags -> images/s
  rm -rf "$work/data"
  target/release/imgsearch index "$work/images" --model "$model" --data-dir "$work/data" --batch-size "$1" "${@:2}" --json >"$work/out.json"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['failed'] == 0, d; print(f\"{d['imagesPerSecond']:.2f}\")" "$work/out.json"
}
printf '%-6s %-22s %-22s %s\n' batch "sequential images/s" "overlapped images/s" ratio
for batch in 1 8 32; do
  seq=$(run "$batch" --overlap-decode off)
  ovl=$(run "$batch" --overlap-decode on)
  printf '%-6s %-22s %-22s %s\n' "$batch" "$seq" "$ovl" "$(python3 -c "print(f'{$ovl/$seq:.2f}x')")"
done
