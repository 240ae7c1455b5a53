#!/usr/bin/env bash
# What building and running need, on a machine with only a Rust toolchain, a C compiler and Python 3
# (README's two commands and .ci/run source this; nothing is installed system-wide):
#  - ONNX Runtime's shared library, from its PyPI wheel (scripts/setup-ort.sh) -> ORT_DYLIB_PATH;
#  - libjpeg-turbo (the JPEG decoder PIL uses, so decoding is bit-exact with the reference): the
#    system's when pkg-config finds libturbojpeg >= 2.0 (its SIMD build is the fastest), else built
#    from the source the turbojpeg-sys crate bundles and linked statically, with CMake from PyPI when
#    the machine has none -> TURBOJPEG_SOURCE. Without nasm that build has no SIMD (decoding is
#    about 1.4x slower on a 12 MP JPEG; install nasm, or libturbojpeg0-dev, for the fast path). Set TURBOJPEG_SOURCE
#    yourself (vendor | pkg-config) to choose.
# Usage: source scripts/setup.sh   (idempotent; progress goes to stderr)
_imgsearch_setup() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$("$root/scripts/setup-ort.sh")}
  if [ -z "${TURBOJPEG_SOURCE:-}" ]; then
    if command -v pkg-config >/dev/null && pkg-config --exists 'libturbojpeg >= 2.0' 2>/dev/null; then
      export TURBOJPEG_SOURCE=pkg-config
    else
      export TURBOJPEG_SOURCE=vendor
    fi
  fi
  if [ "$TURBOJPEG_SOURCE" = vendor ]; then
    if ! command -v cmake >/dev/null; then
      if [ ! -x "$root/.venv-tools/bin/cmake" ]; then
        echo "setup: no libturbojpeg on this machine; building it from source needs CMake: installing it from PyPI into .venv-tools" >&2
        python3 -m venv "$root/.venv-tools" >&2
        # libjpeg-turbo 2.1's CMakeLists asks for CMake 2.8.12 compatibility, which CMake 4 dropped
        "$root/.venv-tools/bin/pip" install --quiet 'cmake>=3.20,<4' >&2
      fi
      export PATH="$root/.venv-tools/bin:$PATH"
    fi
    if ! command -v nasm >/dev/null && [ -z "${IMGSEARCH_SETUP_QUIET:-}" ]; then
      echo "setup: libjpeg-turbo is built without SIMD (no nasm): JPEG decoding is slower; install nasm or libturbojpeg0-dev for the fast path" >&2
    fi
  fi
}
_imgsearch_setup
unset -f _imgsearch_setup
