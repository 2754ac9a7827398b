#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` for benchmarks/serving.py's `peers` section.
#
# Benchmark-only: nothing in relaygraph needs this binary. It is built from the llama.cpp
# that the installed llama-cpp-python vendors (its sdist), so the peer comparison runs
# the same ggml kernels as relaygraph's embedded engine, not whatever llama.cpp is newest.
#
# Output: build/llama-server/bin/llama-server (build/ is git-ignored). Idempotent: exits
# at once when that binary exists; delete build/llama-server/ to rebuild.
#
# Usage: nice -n 19 benchmarks/build_llama_server.sh        (about 10-15 min on 2 cores)
# Env:   PYTHON (default .venv/bin/python), JOBS (default: all cores).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
OUT="$ROOT/build/llama-server"
BINARY="$OUT/bin/llama-server"
JOBS="${JOBS:-$(nproc)}"

if [[ -x "$BINARY" ]]; then
    echo "llama-server already built: $BINARY"
    exit 0
fi

VERSION="$("$PYTHON" -c 'from importlib.metadata import version; print(version("llama-cpp-python"))')"
SRC="$OUT/src"
SDIST="$SRC/llama_cpp_python-$VERSION.tar.gz"
LLAMA_CPP="$SRC/llama_cpp_python-$VERSION/vendor/llama.cpp"
mkdir -p "$SRC"

if [[ ! -f "$SDIST" ]]; then
    echo "downloading the llama-cpp-python $VERSION sdist"
    "$PYTHON" -m pip download "llama-cpp-python==$VERSION" --no-binary :all: --no-deps \
        --dest "$SRC"
fi
if [[ ! -f "$LLAMA_CPP/CMakeLists.txt" ]]; then
    tar -xzf "$SDIST" -C "$SRC"
fi

GENERATOR=()
if command -v ninja >/dev/null; then
    GENERATOR=(-G Ninja)
fi

# LLAMA_USE_PREBUILT_UI=OFF: the web UI would otherwise be downloaded from Hugging Face at
# build time; the benchmark only uses the HTTP API. Static libraries give one binary that
# runs without LD_LIBRARY_PATH. LLAMA_CURL is deprecated (ignored) in recent llama.cpp but
# kept so an older vendored copy also builds without libcurl.
cmake -S "$LLAMA_CPP" -B "$OUT/cmake" "${GENERATOR[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_UI=OFF
cmake --build "$OUT/cmake" --config Release --target llama-server --parallel "$JOBS"

mkdir -p "$OUT/bin"
cp "$OUT/cmake/bin/llama-server" "$BINARY.tmp"
mv "$BINARY.tmp" "$BINARY"  # the binary appears only when complete: idempotence stays honest
"$BINARY" --version || true
echo "built $BINARY"
