#!/usr/bin/env bash
# The README's first command: sets up and builds dseek (scripts/setup.sh), then starts an
# interactive chat with the default model, the demo model in models/demo (a small
# DeepSeek-V3-architecture model dseek trained on English and French novels: it continues
# the text you type, docs/demo-model.md). Extra arguments go to dseek chat, e.g. -m MODEL_DIR.
# `scripts/quickstart.sh serve [ARGS]` starts the OpenAI-compatible server (dseek serve) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ "${1:-}" = "serve" ]; then
  shift
  exec ./build/dseek serve "$@"
fi
exec ./build/dseek chat "$@"
