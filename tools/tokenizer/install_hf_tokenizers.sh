#!/usr/bin/env bash
# Installs the Hugging Face `tokenizers` Rust core as a Node addon (npm `@anush008/tokenizers`)
# into .deps/hf-tokenizers (ignored by git). scripts/setup.sh runs it: the tokenizer-train e2e test
# checks dseek's trained tokenizer.json against it; it also generates test data
# (tools/tokenizer/gen_extra_cases.js) and is the baseline of the benchmark (bench/tokenizer/).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=.deps/hf-tokenizers
if [ -f "$DEST/.done" ]; then exit 0; fi
rm -rf "$DEST"; mkdir -p "$DEST"
(cd "$DEST" && echo '{"name":"dseek-hf-tokenizers","private":true}' > package.json &&
  npm install --silent --no-audit --no-fund @anush008/tokenizers@0.6.0 >/dev/null && touch .done)
echo "installed @anush008/tokenizers into $DEST"
