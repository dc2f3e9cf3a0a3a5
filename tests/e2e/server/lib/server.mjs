// Helpers of the `dseek serve` end-to-end tests: the tiny test model, starting and stopping a
// server on a free loopback port, and small HTTP utilities (SSE parsing, /metrics parsing).
//
// Environment (ctest sets all three; see tests/e2e/CMakeLists.txt):
//   DSEEK_BINARY      the dseek executable          (default: <source>/build/dseek)
//   DSEEK_SOURCE_DIR  the repository root           (default: three levels above this folder)
//   DSEEK_TEST_TMPDIR scratch folder (model, logs, screenshots; default: $TMPDIR/dseek-e2e-server)
//   DSEEK_SERVER_TEST_MODEL  optional: a model directory to serve instead of the tiny one
//
// A missing binary, tokenizer or node_modules is an error: the tests fail, never skip.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SOURCE_DIR = path.resolve(process.env.DSEEK_SOURCE_DIR || path.join(here, '..', '..', '..', '..'));
export const DSEEK = process.env.DSEEK_BINARY || path.join(SOURCE_DIR, 'build', 'dseek');
export const TMP = process.env.DSEEK_TEST_TMPDIR || path.join(os.tmpdir(), 'dseek-e2e-server');
export const TOKENIZER_DIR = path.join(SOURCE_DIR, '.deps', 'tokenizer-deepseek-v3', 'package', 'models');
const TINY_CONFIG = path.join(SOURCE_DIR, 'tests', 'data', 'configs', 'tiny-chat.json');

// Imports an npm package of tests/e2e/server, failing with the fix when it is not installed.
export async function requirePackage(name) {
  try {
    return await import(name);
  } catch (e) {
    throw new Error(`npm package '${name}' is missing (${e.code || e.message}): run scripts/setup.sh ` +
                    `(or 'npm ci' in tests/e2e/server)`);
  }
}

function checkBinary() {
  if (!fs.existsSync(DSEEK)) {
    throw new Error(`dseek binary not found at ${DSEEK}: build it (ninja dseek) or set DSEEK_BINARY`);
  }
}

// The tiny random-weight DeepSeek-V3-shaped model with the real DeepSeek-V3 tokenizer, made once
// per scratch folder and dseek build (atomically: made under a temporary name, then renamed, so test files that
// run at the same time never see half a model). Its directory's basename is the served model id.
// DSEEK_SERVER_TEST_MODEL=DIR serves that model instead (e.g. to separate a model's quirks
// from the server's).
export function tinyModel(name = 'tiny-chat') {
  checkBinary();
  if (process.env.DSEEK_SERVER_TEST_MODEL) return process.env.DSEEK_SERVER_TEST_MODEL;
  if (!fs.existsSync(path.join(TOKENIZER_DIR, 'tokenizer.json'))) {
    throw new Error(`DeepSeek-V3 tokenizer missing at ${TOKENIZER_DIR}: run scripts/setup.sh`);
  }
  // Keyed by the binary's build time: a rebuilt dseek makes its own model; older ones go.
  const stamp = Math.floor(fs.statSync(DSEEK).mtimeMs / 1000);
  const dir = path.join(TMP, `${name}-${stamp}`);
  if (fs.existsSync(path.join(dir, 'config.json'))) return dir;
  fs.mkdirSync(TMP, { recursive: true });
  for (const old of fs.readdirSync(TMP)) {
    if (new RegExp(`^${name}-\\d+$`).test(old) && old !== path.basename(dir)) {
      fs.rmSync(path.join(TMP, old), { recursive: true, force: true });
    }
  }
  const staging = `${dir}.making-${process.pid}`;
  fs.rmSync(staging, { recursive: true, force: true });
  const r = spawnSync(DSEEK, ['init', TINY_CONFIG, staging, '--seed', '1', '--tokenizer', TOKENIZER_DIR],
                      { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw new Error(`dseek init failed (status ${r.status}): ${r.stderr || r.error}`);
  }
  try {
    fs.renameSync(staging, dir);
  } catch (e) {  // another test file won the race: use its model
    fs.rmSync(staging, { recursive: true, force: true });
    if (!fs.existsSync(path.join(dir, 'config.json'))) throw e;
  }
  return dir;
}

const live = new Set();  // servers not yet stopped: killed when this process exits, whatever happens
process.on('exit', () => {
  for (const s of live) {
    try { s.proc.kill('SIGKILL'); } catch { /* already gone */ }
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(130));
}

// Starts `dseek serve -m MODEL --host 127.0.0.1 --port 0 ARGS` and waits for its
// "dseek serve: listening on http://HOST:PORT" line. Returns
// { url, baseURL, port, pid, model (served id), stderr(), stop() }.
// stop() sends SIGTERM and resolves to { code, signal } (SIGKILL after 15 s if it hangs).
export async function startServer({ model = tinyModel(), args = [], threads = 2, timeoutMs = 60_000 } = {}) {
  checkBinary();
  const argv = ['serve', '-m', model, '--host', '127.0.0.1', '--port', '0', '-t', String(threads), ...args];
  // The server's OpenMP threads would busy-wait between the many small parallel regions of a
  // step and, on a 2-core machine, starve the clients of these tests (a headless browser in
  // web.test.mjs missed its 10 s click deadline): they wait passively here, as the README
  // advises when dseek shares its cores.
  const env = { ...process.env, OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'PASSIVE' };
  const proc = spawn(DSEEK, argv, { stdio: ['ignore', 'ignore', 'pipe'], env });
  let err = '';
  const server = {
    proc, pid: proc.pid, argv,
    stderr: () => err,
    exited: new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal }))),
  };
  live.add(server);
  server.exited.then(() => live.delete(server));
  server.stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
    const r = await server.exited;
    clearTimeout(timer);
    return r;
  };
  const aliasAt = args.indexOf('--alias');
  server.model = aliasAt >= 0 ? args[aliasAt + 1] : path.basename(model);

  proc.stderr.setEncoding('utf8');
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`dseek ${argv.join(' ')}: no "listening" line in ` +
                                                    `${timeoutMs} ms; stderr:\n${err}`)), timeoutMs);
    proc.stderr.on('data', (chunk) => {
      err += chunk;
      const m = /^dseek serve: listening on (http:\/\/([^\s:]+):(\d+))$/m.exec(err);
      if (m) { clearTimeout(timer); resolve(m); }
    });
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`dseek ${argv.join(' ')} exited (code ${code}, signal ${signal}) before listening; ` +
                       `stderr:\n${err}`));
    });
    proc.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
  try {
    const m = await ready;
    server.url = m[1];
    server.host = m[2];
    server.port = Number(m[3]);
    server.baseURL = `${server.url}/v1`;
    // The server may listen before the model is loaded (/health 503 "loading"): wait for 200.
    const end = Date.now() + timeoutMs;
    for (;;) {
      const st = await fetch(`${server.url}/health`).then((r) => r.status, (e) => String(e));
      if (st === 200) break;
      if (Date.now() > end) throw new Error(`GET /health never answered 200 (last: ${st}); stderr:\n${err}`);
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`server died; stderr:\n${err}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (e) {
    await server.stop();
    throw e;
  }
  return server;
}

// JSON POST with optional bearer key; resolves to { status, headers, body (parsed or text) }.
export async function postJSON(url, body, { key, signal, raw = false } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (key) headers.authorization = `Bearer ${key}`;
  const res = await fetch(url, { method: 'POST', headers, body: raw ? body : JSON.stringify(body), signal });
  const text = await res.text();
  let parsed = text;
  try { parsed = JSON.parse(text); } catch { /* not JSON: keep the text */ }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

// Server-sent events of a streaming response: the parsed JSON of every `data:` line, and whether
// the stream ended with `data: [DONE]`.
export async function readSSE(res) {
  const text = await res.text();
  const events = [];
  let done = false;
  for (const block of text.split(/\r?\n\r?\n/)) {
    for (const line of block.split(/\r?\n/)) {
      if (!line.startsWith('data:')) continue;
      const data = line.slice(5).trim();
      if (data === '[DONE]') { done = true; continue; }
      if (done) throw new Error(`SSE data after [DONE]: ${data}`);
      events.push(JSON.parse(data));
    }
  }
  return { events, done, text };
}

// Prometheus text -> Map "name{labels}" -> value, plus helpers.
export function parseMetrics(text) {
  const m = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    const v = Number(line.slice(sp + 1));
    m.set(line.slice(0, sp).trim(), v);
  }
  return m;
}

export async function metrics(server) {
  const res = await fetch(`${server.url}/metrics`);
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status}`);
  return parseMetrics(await res.text());
}

// The value of an unlabelled metric (or the sum over its label sets); undefined if absent.
export function metricValue(map, name) {
  let sum;
  for (const [k, v] of map) {
    if (k === name || k.startsWith(`${name}{`)) sum = (sum ?? 0) + v;
  }
  return sum;
}

// Histogram buckets of `name`: [{le, count}] sorted by le (cumulative counts), plus _count.
export function histogram(map, name) {
  const buckets = [];
  for (const [k, v] of map) {
    const mm = new RegExp(`^${name}_bucket\\{(?:.*,)?le="([^"]+)"`).exec(k);
    if (mm) buckets.push({ le: mm[1] === '+Inf' ? Infinity : Number(mm[1]), count: v });
  }
  buckets.sort((a, b) => a.le - b.le);
  return { buckets, count: metricValue(map, `${name}_count`), sum: metricValue(map, `${name}_sum`) };
}

// Polls fn() (async, truthy = done) every 100 ms for at most ms; returns its last value.
export async function waitFor(fn, ms, what) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function rssBytes(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB/m.exec(s);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

// Deterministic PRNG (mulberry32) for request mixes that can be replayed.
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// The OpenAI error object shape: {"error":{"message","type","param","code"}}.
export function errorShapeProblem(body) {
  if (typeof body !== 'object' || body === null || typeof body.error !== 'object' || body.error === null) {
    return `not an OpenAI error object: ${JSON.stringify(body)}`;
  }
  const e = body.error;
  for (const k of ['message', 'type', 'param', 'code']) {
    if (!(k in e)) return `error object lacks "${k}": ${JSON.stringify(body)}`;
  }
  if (typeof e.message !== 'string' || e.message.length === 0) return `empty error.message: ${JSON.stringify(body)}`;
  if (typeof e.type !== 'string' || e.type.length === 0) return `error.type not a string: ${JSON.stringify(body)}`;
  return null;
}
