#!/usr/bin/env bash
# Our runner beside llama.cpp (llama-bench) on synthetic GGUFs with the dimensions of real
# checkpoints (`provenance models synthetic`: seeded random weights, a Q4_K_M-like mix),
# the same files and threads. Prints one markdown row per engine and size.
#   bench/synthetic.sh [NAME...]   (default: every known size)
# Needs `cargo build --release` and scripts/build-llama-cpp.sh; builds llama-bench once.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/release/provenance"
cache="${PROVENANCE_SYNTHETIC_DIR:-$HOME/.cache/provenance/synthetic}"
llama="$("$root/scripts/build-llama-cpp.sh")"
[ -x "$llama/llama-bench" ] || cmake --build "$llama/../" --target llama-bench -j "$(nproc)" >&2
threads="${THREADS:-$(nproc)}"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(qwen2.5-0.5b qwen3-0.6b qwen2.5-1.5b gemma2-2b phi3-mini)
mkdir -p "$cache"
echo "| engine | model | file MiB | load s | peak RSS MiB | prefill tok/s | decode tok/s |"
echo "|---|---|---|---|---|---|---|"
for n in "${names[@]}"; do
  f="$cache/$n.gguf"
  [ -f "$f" ] || "$bin" models synthetic "$n" --out "$f" >&2
  mib=$(( $(stat -c %s "$f") / 1048576 ))
  ours="$("$bin" bench --model "$f" --json 2>/dev/null)"
  read -r load rss pp tg prompt < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.2f %.0f %.1f %.1f %d" % (d["load_s"], d["peak_rss_mib"], d["prefill_tok_s"], d["decode_tok_s"], d["prefill_tokens"] // 3))' "$ours")
  echo "| provenance | $n | $mib | $load | $rss | $pp | $tg |"
  theirs="$("$llama/llama-bench" -m "$f" -p "$prompt" -n 64 -t "$threads" -r 2 -o json 2>/dev/null)"
  read -r lpp ltg < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); pp=[r["avg_ts"] for r in d if r["n_prompt"]>0]; tg=[r["avg_ts"] for r in d if r["n_gen"]>0]; print("%.1f %.1f" % (pp[0], tg[0]))' "$theirs")
  echo "| llama.cpp -t $threads | $n | $mib | – | – | $lpp | $ltg |"
done
