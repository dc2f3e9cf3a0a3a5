// The driver of bench/serve_bench.sh: streams fixed-shape completions from a running dseek serve
// at several concurrencies and reports generated tokens/s, the scaling over one stream, and
// time to first token. Node >= 18 (fetch), no npm packages.
//
//   node bench/serve_bench.mjs --url http://127.0.0.1:PORT --model ID [--prompt-tokens 128]
//        [--max-tokens 64] [--levels 1,4,16] [--rounds 1] [--json FILE] [--vocab 100000]
//
// Each request is POST /v1/completions with a prompt of exactly --prompt-tokens token ids (a
// different pseudo-random sequence per request, so the prefix cache cannot help), temperature 0,
// stream true with include_usage. At concurrency C, C workers send C x rounds requests.
//   tokens/s   generated tokens of the level / wall seconds (first send to last byte)
//   TTFT       send -> first streamed token, per request; p50 and p90 (nearest rank)
//   seq/step   mean of the server's dseek_batch_sequences histogram over the level
const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]?.startsWith('--') || all[i + 1] === undefined ? 'true' : all[i + 1]]);
  return acc;
}, []));
const url = args.url;
const model = args.model;
if (!url || !model) {
  console.error('usage: serve_bench.mjs --url URL --model ID [--prompt-tokens N] [--max-tokens N] [--levels 1,4,16] [--rounds R] [--json FILE]');
  process.exit(2);
}
const P = Number(args['prompt-tokens'] ?? 128);
const N = Number(args['max-tokens'] ?? 64);
const LEVELS = String(args.levels ?? '1,4,16').split(',').map(Number);
const ROUNDS = Number(args.rounds ?? 1);
const VOCAB = Number(args.vocab ?? 100000);
const TIMEOUT_MS = Number(args['timeout-s'] ?? 3600) * 1000;

let counter = 0;
function promptIds() {  // xorshift32 from a per-request seed; ids in [1000, VOCAB)
  let x = (0x9e3779b9 ^ (++counter * 2654435761)) >>> 0 || 1;
  return Array.from({ length: P }, () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return 1000 + (x % (VOCAB - 1000));
  });
}

async function metricsSnapshot() {
  const text = await (await fetch(`${url}/metrics`)).text();
  const get = (name) => Number((new RegExp(`^${name} ([0-9.eE+-]+)$`, 'm').exec(text) ?? [])[1] ?? NaN);
  return { steps: get('dseek_batch_sequences_count'), seqs: get('dseek_batch_sequences_sum') };
}

async function one(maxTokens = N) {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt: promptIds(), max_tokens: maxTokens, temperature: 0, stream: true,
                           stream_options: { include_usage: true } }),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let first = null;
  let chunks = 0;
  let usage = null;
  let buf = '';
  const dec = new TextDecoder();
  for await (const part of res.body) {
    buf += dec.decode(part, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = ev.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('');
      if (!data || data === '[DONE]') continue;
      const j = JSON.parse(data);
      if (j.error) throw new Error(JSON.stringify(j.error));
      if (j.usage) usage = j.usage;
      if (j.choices?.length) {
        chunks++;
        if (first === null) first = performance.now();
      }
    }
  }
  const end = performance.now();
  const tokens = usage?.completion_tokens ?? chunks;
  return { t0, first: first ?? end, end, tokens, prompt_tokens: usage?.prompt_tokens ?? null };
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};

await one(4);  // warm-up: thread pool, page cache
const levels = [];
for (const C of LEVELS) {
  const m0 = await metricsSnapshot();
  const total = C * ROUNDS;
  let next = 0;
  const results = [];
  const worker = async () => { while (next < total) { next++; results.push(await one()); } };
  await Promise.all(Array.from({ length: C }, worker));
  const m1 = await metricsSnapshot();
  const start = Math.min(...results.map((r) => r.t0));
  const stop = Math.max(...results.map((r) => r.end));
  const seconds = (stop - start) / 1000;
  const tokens = results.reduce((s, r) => s + r.tokens, 0);
  const ttft = results.map((r) => (r.first - r.t0) / 1000);
  const decode = results.filter((r) => r.tokens > 1).map((r) => (r.tokens - 1) / ((r.end - r.first) / 1000));
  levels.push({
    concurrency: C, requests: total, generated_tokens: tokens, seconds,
    tokens_per_s: tokens / seconds,
    ttft_p50_s: pct(ttft, 50), ttft_p90_s: pct(ttft, 90),
    per_stream_decode_tokens_per_s_p50: decode.length ? pct(decode, 50) : null,
    prompt_tokens: results[0].prompt_tokens,
    mean_sequences_per_step: (m1.seqs - m0.seqs) / (m1.steps - m0.steps),
  });
  console.error(`serve_bench: concurrency ${C}: ${tokens} tokens in ${seconds.toFixed(2)} s`);
}
const base = levels.find((l) => l.concurrency === 1)?.tokens_per_s ?? levels[0].tokens_per_s;
for (const l of levels) l.scaling_vs_1 = l.tokens_per_s / base;

const f = (x, d = 2) => (x === null || Number.isNaN(x) ? '-' : x.toFixed(d));
const rows = [['streams', 'requests', 'tokens', 'seconds', 'tok/s', 'x vs 1', 'TTFT p50 s', 'TTFT p90 s', 'stream tok/s', 'seq/step']];
for (const l of levels) {
  rows.push([String(l.concurrency), String(l.requests), String(l.generated_tokens), f(l.seconds), f(l.tokens_per_s),
             f(l.scaling_vs_1), f(l.ttft_p50_s, 3), f(l.ttft_p90_s, 3), f(l.per_stream_decode_tokens_per_s_p50),
             f(l.mean_sequences_per_step)]);
}
const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
for (const r of rows) console.log(r.map((c, i) => c.padStart(widths[i])).join('  '));
const report = {
  model, url, prompt_tokens: P, max_tokens: N, rounds: ROUNDS,
  threads: args.threads ? Number(args.threads) : null, cores: args.cores ? Number(args.cores) : null,
  git: args.git ?? null, load_average_1m_before: args.loadavg ? Number(args.loadavg) : null,
  date: new Date().toISOString(), levels,
};
if (args.json) (await import('node:fs')).writeFileSync(args.json, JSON.stringify(report, null, 2) + '\n');
