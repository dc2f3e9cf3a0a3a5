// Continuous batching: 16 different greedy requests give the same answers one at a time and all
// at once (--parallel 16), and /metrics proves the engine ran them together.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { histogram, metrics, metricValue, postJSON, readSSE, startServer, tinyModel } from './lib/server.mjs';

let srv;
before(async () => { srv = await startServer({ model: tinyModel(), args: ['--parallel', '16'] }); });
after(async () => { if (srv) await srv.stop(); });

const TOPICS = ['the sea', 'mountains', 'a cat', 'rain', 'the moon', 'coffee', 'trains', 'a library',
                'winter', 'bees', 'a lighthouse', 'jazz', 'deserts', 'clocks', 'a garden', 'rivers'];
// Different lengths, so the sequences are at different positions in each step.
const bodies = TOPICS.map((t, i) => ({
  messages: [{ role: 'user', content: `Write ${i + 1} short lines about ${t}.${' Please.'.repeat(i % 5)}` }],
  temperature: 0, max_tokens: 24,
}));

async function ask(body, stream) {
  const b = { model: srv.model, ...body };
  if (!stream) {
    const r = await postJSON(`${srv.url}/v1/chat/completions`, b);
    assert.equal(r.status, 200, r.text);
    return { text: r.body.choices[0].message.content, finish: r.body.choices[0].finish_reason,
             tokens: r.body.usage.completion_tokens };
  }
  const res = await fetch(`${srv.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...b, stream: true, stream_options: { include_usage: true } }),
  });
  assert.equal(res.status, 200);
  const { events, done } = await readSSE(res);
  assert.ok(done, 'stream ends with [DONE]');
  let text = '';
  let finish = null;
  let tokens = null;
  for (const e of events) {
    if (e.usage) tokens = e.usage.completion_tokens;
    for (const c of e.choices) {
      text += c.delta?.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { text, finish, tokens };
}

test('16 greedy requests: sequential answers == concurrent answers; the engine batched them', async () => {
  const h0 = histogram(await metrics(srv), 'dseek_batch_sequences');
  const sequential = [];
  for (const b of bodies) sequential.push(await ask(b, false));
  const mid = histogram(await metrics(srv), 'dseek_batch_sequences');
  const le1 = (h) => h.buckets.find((b) => b.le >= 1 && b.le < 2)?.count;
  assert.ok(mid.count > h0.count, 'dseek_batch_sequences has observations');
  assert.ok(le1(mid) !== undefined, `a bucket le="1" in ${JSON.stringify(mid.buckets)}`);
  assert.equal(le1(mid) - (le1(h0) ?? 0), mid.count - h0.count, 'one request at a time: one sequence per step');

  const t0 = Date.now();
  const concurrent = await Promise.all(bodies.map((b, i) => ask(b, i % 2 === 1)));  // odd ones streamed
  const seconds = (Date.now() - t0) / 1000;
  for (let i = 0; i < bodies.length; i++) {
    assert.deepEqual(concurrent[i], sequential[i], `request ${i} (${i % 2 ? 'streamed' : 'not streamed'})`);
  }
  const m = await metrics(srv);
  const h = histogram(m, 'dseek_batch_sequences');
  const steps = h.count - mid.count;
  const shared = steps - (le1(h) - le1(mid));
  assert.ok(shared > 0, `steps with more than one sequence: ${shared} of ${steps}`);
  assert.ok(le1(h) < h.count, 'bucket le="1" < _count');
  assert.ok(h.sum - mid.sum > steps, 'more than one sequence per step on average');
  const generated = concurrent.reduce((s, r) => s + r.tokens, 0);
  assert.ok(metricValue(m, 'dseek_generation_tokens_total') >= 2 * generated, 'generation_tokens_total counts them');
  console.log(`# 16 concurrent requests in ${seconds.toFixed(2)} s; ${steps} engine steps, ` +
              `${((h.sum - mid.sum) / steps).toFixed(2)} sequences per step on average`);
});
