#!/usr/bin/env bash
# Preprocessing throughput: this crate's path (exact and fast JPEG) next to the Python reference
# (PIL open + convert + open_clip's transform), on the same 200 JPEGs of about 1 megapixel, each on
# one core (pinned to the same CPU when taskset exists), and the ratios. Also the fast path's drift.
#   bench/preprocess.sh [N_IMAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
out=bench/out
mkdir -p "$out"

# Python reference. Torch from Debian (PyPI's torch is the multi-GB CUDA build); open_clip and Pillow
# from PyPI, installed here into bench/.venv.
if ! /usr/bin/python3 -c "import torch, torchvision" 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-torch python3-torchvision >&2
fi
if [ ! -x bench/.venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages bench/.venv
  bench/.venv/bin/pip install --quiet --no-deps open_clip_torch==3.3.0
  bench/.venv/bin/pip install --quiet --ignore-installed pillow && bench/.venv/bin/pip install --quiet ftfy regex tqdm huggingface_hub safetensors
fi
if [ "$(ls "$out/images" 2>/dev/null | wc -l)" -ne "$n" ]; then
  rm -rf "$out/images"
  bench/.venv/bin/python bench/preprocess_reference.py make "$out/images" "$n"
fi

pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/setup-ort.sh)}
scripts/cargo build --release --locked -p clip --bench preprocess >&2
python_json=$("${pin[@]}" bench/.venv/bin/python bench/preprocess_reference.py time "$out/images")
PYTHON_REFERENCE="$python_json" "${pin[@]}" scripts/cargo bench --locked -p clip --bench preprocess -- "$PWD/$out/images"
