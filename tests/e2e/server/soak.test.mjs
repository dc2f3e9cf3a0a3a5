// Soak: a bounded storm of mixed requests over loopback (chat and completions, streamed or not,
// ~15% cancelled mid-flight, ~10% malformed), then the server must be idle, leak-free and well.
// Bounds: SOAK_REQUESTS (default 300) requests, SOAK_INFLIGHT (32) at once, SOAK_SECONDS (120)
// wall clock; SOAK_SEED replays a mix.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { errorShapeProblem, metrics, metricValue, readSSE, rng, rssBytes, startServer, tinyModel, waitFor }
  from './lib/server.mjs';

const REQUESTS = Number(process.env.SOAK_REQUESTS || 300);
const INFLIGHT = Number(process.env.SOAK_INFLIGHT || 32);
const SECONDS = Number(process.env.SOAK_SECONDS || 120);
const SEED = Number(process.env.SOAK_SEED || 20250101);

let srv;
before(async () => {
  srv = await startServer({ model: tinyModel(), args: ['--parallel', '16', '--max-queue', '64'] });
});
after(async () => { if (srv) await srv.stop(); });

const WORDS = ['alpha', 'river', 'stone', 'cloud', 'seven', 'green', 'quiet', 'north', 'paper', 'light'];

// One random request: { kind, url, body (string), stream, cancelAfterMs|null, malformed }.
function makeRequest(rand, model) {
  const words = Array.from({ length: 3 + Math.floor(rand() * 40) }, () => WORDS[Math.floor(rand() * WORDS.length)]).join(' ');
  const chat = rand() < 0.6;
  const stream = rand() < 0.5;
  const max = 4 + Math.floor(rand() * 28);
  const r = rand();
  const req = { chat, stream, cancelAfterMs: null, malformed: null };
  req.url = chat ? '/v1/chat/completions' : '/v1/completions';
  const body = chat
    ? { model, messages: [{ role: 'user', content: words }], max_tokens: max, temperature: rand() < 0.5 ? 0 : 0.8, stream }
    : { model, prompt: words, max_tokens: max, temperature: 0, stream };
  if (stream && rand() < 0.5) body.stream_options = { include_usage: true };
  if (r < 0.10) {  // malformed
    const m = Math.floor(rand() * 3);
    req.malformed = ['bad-json', 'wrong-type', 'unknown-model'][m];
    if (m === 0) { req.body = JSON.stringify(body).slice(0, 20); return req; }
    if (m === 1) { if (chat) body.messages = 'oops'; else body.max_tokens = 'many'; }
    if (m === 2) body.model = 'nope-model';
  } else if (r < 0.25) {
    req.cancelAfterMs = Math.floor(rand() * 400);
  }
  req.body = JSON.stringify(body);
  return req;
}

// Runs one request; returns { outcome: 'ok'|'cancelled'|'error', detail }.
async function run(req) {
  const ac = new AbortController();
  const timer = req.cancelAfterMs !== null ? setTimeout(() => ac.abort(), req.cancelAfterMs) : null;
  try {
    const res = await fetch(`${srv.url}${req.url}`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: req.body, signal: ac.signal,
    });
    if (req.malformed) {
      const text = await res.text();
      let body; try { body = JSON.parse(text); } catch { body = text; }
      const problem = errorShapeProblem(body);
      if (res.status !== 400 || problem) return { outcome: 'error', detail: `${req.malformed}: ${res.status} ${text.slice(0, 200)}` };
      return { outcome: 'ok' };
    }
    if (res.status !== 200) return { outcome: 'error', detail: `${res.status} ${(await res.text()).slice(0, 200)}` };
    let finish = null;
    let text = '';
    if (req.stream) {
      const { events, done } = await readSSE(res);
      if (!done) return { outcome: 'error', detail: 'stream without [DONE]' };
      for (const e of events) {
        if (e.error) return { outcome: 'error', detail: `error event in the stream: ${JSON.stringify(e.error)}` };
        for (const c of e.choices ?? []) {
          text += req.chat ? (c.delta?.content ?? '') : (c.text ?? '');
          if (c.finish_reason) finish = c.finish_reason;
        }
      }
    } else {
      const raw = await res.text();
      const b = JSON.parse(raw);
      if (b.error) return { outcome: 'error', detail: `200 with an error body: ${raw.trim().slice(0, 200)}` };
      const c = b.choices?.[0];
      text = req.chat ? c?.message?.content : c?.text;
      finish = c?.finish_reason;
      const u = b.usage;
      if (!u || u.total_tokens !== u.prompt_tokens + u.completion_tokens) return { outcome: 'error', detail: `usage ${JSON.stringify(u)}` };
    }
    if (!['stop', 'length'].includes(finish) || typeof text !== 'string') {
      return { outcome: 'error', detail: `finish ${finish}, text ${JSON.stringify(text)}` };
    }
    return { outcome: 'ok' };
  } catch (e) {
    if (ac.signal.aborted) return { outcome: 'cancelled' };
    return { outcome: 'error', detail: `${e.name}: ${e.message} ${e.cause?.code ?? ''}` };
  } finally {
    if (timer) clearTimeout(timer);
  }
}

// `count` requests from the PRNG, at most `inflight` at once, stopping new ones at `deadline`.
async function storm(seed, count, inflight, deadline) {
  const rand = rng(seed);
  const reqs = Array.from({ length: count }, () => makeRequest(rand, srv.model));
  const results = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count && Date.now() < deadline) {
      const i = next++;
      results[i] = { req: reqs[i], ...(await run(reqs[i])) };
    }
  };
  await Promise.all(Array.from({ length: inflight }, worker));
  return results.filter(Boolean);
}

async function idle() {
  return waitFor(async () => {
    const m = await metrics(srv);
    const g = (n) => metricValue(m, n);
    return g('dseek_running_sequences') === 0 && g('dseek_queue_length') === 0 && g('dseek_kv_cache_pages_used') === 0 && m;
  }, 15_000, 'running 0, queue 0, kv pages used 0');
}

test(`soak: ${REQUESTS} mixed requests, ${INFLIGHT} in flight`, { timeout: (SECONDS + 60) * 1000 }, async () => {
  const t0 = Date.now();
  const warm = await storm(SEED ^ 0x5a5a, Math.min(96, REQUESTS), INFLIGHT, t0 + 30_000);
  const warmErrors = warm.filter((r) => r.outcome === 'error');
  await idle();
  const rssWarm = rssBytes(srv.pid);

  const results = await storm(SEED, REQUESTS, INFLIGHT, Date.now() + SECONDS * 1000);
  const seconds = (Date.now() - t0) / 1000;
  const errors = results.filter((r) => r.outcome === 'error');
  const cancelled = results.filter((r) => r.outcome === 'cancelled').length;
  const malformed = results.filter((r) => r.req.malformed).length;
  console.log(`# soak seed ${SEED}: ${results.length} requests (${cancelled} cancelled, ${malformed} malformed, ` +
              `${errors.length} errors) in ${seconds.toFixed(1)} s`);
  assert.ok(results.length >= Math.min(REQUESTS, 100), `only ${results.length} requests ran before the deadline`);
  assert.ok(malformed > 0 && cancelled > 0, 'the mix had malformed and cancelled requests');

  const m = await idle();
  assert.equal(metricValue(m, 'dseek_running_sequences'), 0);
  assert.equal(metricValue(m, 'dseek_queue_length'), 0);
  assert.equal(metricValue(m, 'dseek_kv_cache_pages_used'), 0);
  const health = await fetch(`${srv.url}/health`);
  assert.equal(health.status, 200);
  const rssAfter = rssBytes(srv.pid);
  const limit = Math.max(rssWarm * 1.10, rssWarm + 32 * 1024 * 1024);
  console.log(`# RSS after warm-up ${(rssWarm / 2 ** 20).toFixed(1)} MiB, after soak ${(rssAfter / 2 ** 20).toFixed(1)} MiB`);
  assert.ok(rssAfter <= limit, `RSS grew from ${rssWarm} to ${rssAfter} bytes (limit ${Math.round(limit)})`);

  const check = await run({ chat: true, stream: false, cancelAfterMs: null, malformed: null, url: '/v1/chat/completions',
                            body: JSON.stringify({ model: srv.model, messages: [{ role: 'user', content: 'still there?' }], max_tokens: 4 }) });
  assert.equal(check.outcome, 'ok', check.detail);
  // Last, so that one bad answer does not hide the idle/leak checks above.
  const bad = [...warmErrors, ...errors];
  assert.deepEqual(bad.map((r) => `${r.req.url} ${r.req.stream ? 'stream' : ''} ${r.req.malformed ?? ''} ${r.detail}`), [],
                   `every well-formed, non-cancelled request got a 200 with a valid answer (${bad.length} did not)`);
});
