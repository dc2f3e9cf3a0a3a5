#!/usr/bin/env bash
# Runs `dseek bench` on one of the benchmark shapes in bench/configs, making its random-weight
# checkpoint first if it is missing, and saves the report under bench/results/.
#
#   bench/run_bench.sh CONFIG [bf16|fp8|f32|q8|q4] [dseek bench options...]
#   bench/run_bench.sh bench/configs/v2-lite-fp8.json fp8 -p 512 -n 128
#   bench/run_bench.sh bench/configs/v2-lite.json q4 -p 512 -n 128
#   bench/run_bench.sh bench/configs/v32-slice.json bf16 --ctx 16384 --ctx-fill random -p 1 -n 16
#
# The checkpoint goes to .deps/bench/<config name>[-<dtype>] (ignored by git), made with
# `dseek init CONFIG DIR --test-init [--dtype DTYPE]`. What that costs, on the 2-core dev
# machine (init writes about 0.6 GB/s of BF16; FP8 is half the bytes, a bit more compute):
#   v2-lite     15.7B params: ~9 min, 31 GB BF16 (FP8: ~16 GB)
#   v2-lite-4l   2.26B params: 2.5 min (on a loaded machine), 4.5 GB BF16 (4 layers of V2-Lite dims)
#   v3-slice     6.30B params: ~4 min, 12.6 GB BF16 (FP8: ~8.2 GB: embedding and head stay BF16)
#   v32-slice    6.36B params: ~4 min, 12.7 GB BF16
# q8/q4 (docs/quantization.md) are written directly by init, each random tensor quantized as
# it is drawn (as `dseek quantize` would), so no BF16 or FP8 copy is needed as an intermediate;
# an FP8 quantization_config in CONFIG is replaced. v2-lite q4 is about 9 GB (linears 0.5625
# byte/weight with scales, q8 head, BF16 embedding); its init time is not measured yet
# (quantizing costs more CPU than drawing FP8).
# The machine needs the weights in RAM (page cache) for a meaningful decode figure.
#
# Environment: DSEEK (the binary, default build/dseek), BENCH_DIR (default .deps/bench).
# Reports: bench/results/<name>-<dtype>-<UTC time>.{txt,json} (ignored by git; .json with --json).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -lt 1 ]]; then
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 2
fi
config="$1"
shift
dtype="bf16"
if [[ $# -gt 0 && "$1" != -* ]]; then
  dtype="$1"
  shift
fi
case "$dtype" in bf16 | fp8 | f32 | q8 | q4) ;; *) echo "run_bench.sh: dtype must be bf16, fp8, f32, q8 or q4, not '$dtype'" >&2; exit 2 ;; esac
[[ -f "$config" ]] || { echo "run_bench.sh: $config: no such config" >&2; exit 2; }

dseek="${DSEEK:-$root/build/dseek}"
[[ -x "$dseek" ]] || { echo "run_bench.sh: $dseek not built (cmake --build build)" >&2; exit 2; }
name="$(basename "$config" .json)"
suffix="$name"
[[ "$dtype" != bf16 ]] && suffix="$name-$dtype"
model="${BENCH_DIR:-$root/.deps/bench}/$suffix"

if [[ ! -f "$model/config.json" ]] || ! ls "$model"/*.safetensors > /dev/null 2>&1; then
  echo "run_bench.sh: making $model (random weights, --test-init, $dtype)" >&2
  rm -rf "$model"
  mkdir -p "$(dirname "$model")"
  "$dseek" init "$config" "$model" --test-init --dtype "$dtype"
fi

mkdir -p "$root/bench/results"
ext="txt"
for arg in "$@"; do [[ "$arg" == --json ]] && ext="json"; done
out="$root/bench/results/$name-$dtype-$(date -u +%Y%m%dT%H%M%SZ).$ext"
{
  if [[ "$ext" == txt ]]; then
    echo "# dseek bench -m $model${*:+ $*} ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, git $(git -C "$root" rev-parse --short HEAD 2> /dev/null || echo '?'))"
    echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  fi
  "$dseek" bench -m "$model" "$@"
} | tee "$out"
echo "run_bench.sh: saved $out" >&2
