#!/usr/bin/env bash
# Serving benchmark: starts `dseek serve --parallel 16` on a benchmark-shaped model and streams
# 1, 4 and 16 concurrent completions of a fixed shape; prints generated tokens/s per concurrency,
# the scaling over one stream and TTFT p50/p90, and saves them under bench/results/.
#
#   bench/serve_bench.sh [--config bench/configs/v2-lite-4l.json | --model DIR] [--prompt-tokens 128]
#                        [--max-tokens 64] [--levels 1,4,16] [--rounds 1] [-t THREADS]
#   bench/serve_bench.sh --model /tmp/tiny-chat --prompt-tokens 32 --max-tokens 16   # a quick check
#
# --config makes (once) the random-weight checkpoint .deps/bench/<config name> exactly as
# bench/run_bench.sh does (dseek init --test-init, BF16; v2-lite-4l: ~2.5 min, 4.5 GB) and serves
# it through .deps/bench/<name>-serve: links to those weights plus the DeepSeek-V3 tokenizer files
# when the checkpoint has no tokenizer (the prompts are token ids below the model's vocabulary, so
# only the detokenizer is used).
# Environment: DSEEK (the binary, default build/dseek), BENCH_DIR (default .deps/bench).
# Reports: bench/results/serve-<name>-<UTC time>.{txt,json} (ignored by git).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config="$root/bench/configs/v2-lite-4l.json"
model=""
prompt_tokens=128
max_tokens=64
levels="1,4,16"
rounds=1
threads="$(nproc)"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --prompt-tokens) prompt_tokens="$2"; shift 2 ;;
    --max-tokens) max_tokens="$2"; shift 2 ;;
    --levels) levels="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    -t | --threads) threads="$2"; shift 2 ;;
    -h | --help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "serve_bench.sh: unknown option '$1' (--help)" >&2; exit 2 ;;
  esac
done

dseek="${DSEEK:-$root/build/dseek}"
[[ -x "$dseek" ]] || { echo "serve_bench.sh: $dseek not built (cmake --build build)" >&2; exit 2; }
command -v node > /dev/null || { echo "serve_bench.sh: node not found (scripts/setup.sh)" >&2; exit 2; }
bench_dir="${BENCH_DIR:-$root/.deps/bench}"
tokenizer="$root/.deps/tokenizer-deepseek-v3/package/models"

if [[ -z "$model" ]]; then
  [[ -f "$config" ]] || { echo "serve_bench.sh: $config: no such config" >&2; exit 2; }
  name="$(basename "$config" .json)"
  weights="$bench_dir/$name"
  if [[ ! -f "$weights/config.json" ]] || ! ls "$weights"/*.safetensors > /dev/null 2>&1; then
    echo "serve_bench.sh: making $weights (random weights, --test-init, bf16)" >&2
    rm -rf "$weights"
    mkdir -p "$bench_dir"
    "$dseek" init "$config" "$weights" --test-init --dtype bf16
  fi
  model="$weights"
  if [[ ! -f "$weights/tokenizer.json" ]]; then
    [[ -f "$tokenizer/tokenizer.json" ]] || { echo "serve_bench.sh: no tokenizer at $tokenizer (scripts/setup.sh)" >&2; exit 2; }
    model="$bench_dir/$name-serve"
    rm -rf "$model"
    mkdir -p "$model"
    for f in "$weights"/*.json "$weights"/*.safetensors; do ln -s "$f" "$model/$(basename "$f")"; done
    cp "$tokenizer/tokenizer.json" "$tokenizer/tokenizer_config.json" "$model/"
  fi
else
  [[ -f "$model/config.json" ]] || { echo "serve_bench.sh: $model: no config.json" >&2; exit 2; }
  name="$(basename "$model")"
fi
# Prompt ids below min(vocab_size, 100000): ordinary tokens, never the tokenizer's special ones.
vocab="$(node -e "console.log(Math.min(100000, JSON.parse(require('fs').readFileSync(process.argv[1])).vocab_size))" "$model/config.json")"

mkdir -p "$root/bench/results"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$root/bench/results/serve-$name-$stamp"
log="$(mktemp)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2> /dev/null; then
    kill -TERM "$server_pid" 2> /dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2> /dev/null || true
  fi
  rm -f "$log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$dseek" serve -m "$model" --host 127.0.0.1 --port 0 --parallel 16 --alias "$name" -t "$threads" \
  --ctx-size $((16 * (prompt_tokens + max_tokens) + 256)) --max-queue 256 2> "$log" &
server_pid=$!
url=""
for _ in $(seq 1 1800); do  # loading a multi-GB checkpoint takes a while: up to 3 minutes
  url="$(sed -n 's/^dseek serve: listening on \(http:[^ ]*\)$/\1/p' "$log" | head -1)"
  if [[ -n "$url" ]] && [[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health" 2> /dev/null || true)" == 200 ]]; then break; fi
  kill -0 "$server_pid" 2> /dev/null || { echo "serve_bench.sh: dseek serve exited:" >&2; cat "$log" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$url" ]] || { echo "serve_bench.sh: dseek serve did not come up; its stderr:" >&2; cat "$log" >&2; exit 1; }

{
  echo "# dseek serve -m $model --parallel 16 -t $threads: $levels concurrent streams x $rounds, prompt $prompt_tokens tokens, max_tokens $max_tokens"
  echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, git $(git -C "$root" rev-parse --short HEAD 2> /dev/null || echo '?'), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  node "$root/bench/serve_bench.mjs" --url "$url" --model "$name" --prompt-tokens "$prompt_tokens" \
    --max-tokens "$max_tokens" --levels "$levels" --rounds "$rounds" --vocab "$vocab" --json "$out.json" \
    --threads "$threads" --cores "$(nproc)" --git "$(git -C "$root" rev-parse --short HEAD 2> /dev/null || echo '?')" \
    --loadavg "$(cut -d' ' -f1 /proc/loadavg)"
} | tee "$out.txt"
echo "serve_bench.sh: saved $out.txt and $out.json" >&2
