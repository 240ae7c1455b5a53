#!/usr/bin/env bash
# Installs ONNX Runtime's shared library from the PyPI wheel (no registry ships it for Rust) into
# .venv-ort, links .venv-ort/libonnxruntime.so to it, and prints that path. Idempotent.
# GPU: ORT_PACKAGE=onnxruntime-gpu scripts/setup-ort.sh (CUDA 13 + cuDNN 9 on the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=${ORT_PACKAGE:-onnxruntime}
version=${ORT_VERSION:-1.31.1}
if [ ! -e .venv-ort/libonnxruntime.so ]; then
  python3 -m venv .venv-ort >&2
  .venv-ort/bin/pip install --quiet "$pkg==$version" >&2
  lib=$(ls .venv-ort/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)
  ln -sf "${lib#.venv-ort/}" .venv-ort/libonnxruntime.so
fi
echo "$PWD/.venv-ort/libonnxruntime.so"
