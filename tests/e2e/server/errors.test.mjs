// `dseek serve` error answers over raw HTTP: each is an OpenAI error object
// {"error":{"message","type","param","code"}} with the right status, type, param and code.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { errorShapeProblem, postJSON, startServer, tinyModel } from './lib/server.mjs';

const KEY = 'sk-dseek-e2e-errors';
const MAX_BODY = 65536;
const CTX = 256;
let srv;

before(async () => {
  srv = await startServer({ model: tinyModel(),
                            args: ['--api-key', KEY, '--max-body', String(MAX_BODY), '--ctx-size', String(CTX), '--parallel', '2'] });
});
after(async () => { if (srv) await srv.stop(); });

// Asserts an error answer; `param` may be a string (exact), a RegExp, or null; `code` likewise.
function expectError(r, status, { type = 'invalid_request_error', param, code } = {}) {
  const what = `${status} expected, got ${r.status}: ${r.text.slice(0, 400)}`;
  assert.equal(r.status, status, what);
  assert.match(r.headers.get('content-type') ?? '', /application\/json/, `content-type of ${what}`);
  const problem = errorShapeProblem(r.body);
  assert.equal(problem, null, problem ?? '');
  const e = r.body.error;
  if (type instanceof RegExp) assert.match(e.type, type, what); else if (type) assert.equal(e.type, type, what);
  if (param !== undefined) {
    if (param instanceof RegExp) assert.match(String(e.param), param, what); else assert.equal(e.param, param, what);
  }
  if (code !== undefined) assert.equal(e.code, code, what);
  return e;
}

const chat = (body, opts = {}) => postJSON(`${srv.url}/v1/chat/completions`, body, { key: KEY, ...opts });
const completions = (body, opts = {}) => postJSON(`${srv.url}/v1/completions`, body, { key: KEY, ...opts });
const good = () => ({ model: srv.model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });

describe('400 invalid_request_error', () => {
  test('the well-formed reference request succeeds', async () => {
    const r = await chat(good());
    assert.equal(r.status, 200, r.text);
  });

  test('malformed JSON', async () => {
    expectError(await chat('{"model": "x", "messages": [', { raw: true }), 400);
    expectError(await completions('not json at all', { raw: true }), 400);
    expectError(await chat('[1, 2, 3]', { raw: true }), 400);  // JSON, but not an object
  });

  test('wrong types name the field in param', async () => {
    const cases = [
      [{ messages: 'hi' }, /^messages/],
      [{ temperature: 'hot' }, 'temperature'],
      [{ temperature: -1 }, 'temperature'],
      [{ top_p: 2 }, 'top_p'],
      [{ max_tokens: 'ten' }, 'max_tokens'],
      [{ max_tokens: -5 }, 'max_tokens'],
      [{ n: 0 }, 'n'],
      [{ stream: 'yes' }, 'stream'],
      [{ stop: 42 }, 'stop'],
      [{ seed: 'abc' }, 'seed'],
      [{ top_logprobs: 50, logprobs: true }, 'top_logprobs'],
      [{ tools: 'all' }, /^tools/],
      [{ response_format: { type: 'xml' } }, /^response_format/],
    ];
    for (const [patch, param] of cases) {
      expectError(await chat({ ...good(), ...patch }), 400, { param });
    }
    expectError(await completions({ model: srv.model, prompt: { text: 'x' } }), 400, { param: 'prompt' });
    expectError(await completions({ model: srv.model, prompt: [1, 'a'] }), 400, { param: /^prompt/ });
    expectError(await completions({ model: srv.model, prompt: 'x', logprobs: 99 }), 400, { param: 'logprobs' });
  });

  test('unknown model: code model_not_found, param model', async () => {
    expectError(await chat({ ...good(), model: 'no-such-model' }), 400, { param: 'model', code: 'model_not_found' });
    expectError(await completions({ model: 'no-such-model', prompt: 'x' }), 400, { param: 'model', code: 'model_not_found' });
  });

  test('missing or empty messages, missing prompt', async () => {
    expectError(await chat({ model: srv.model }), 400, { param: 'messages' });
    expectError(await chat({ model: srv.model, messages: [] }), 400, { param: 'messages' });
    expectError(await completions({ model: srv.model }), 400, { param: 'prompt' });
  });

  test('bad roles and malformed messages', async () => {
    for (const messages of [
      [{ role: 'wizard', content: 'hi' }],
      [{ content: 'hi' }],
      [{ role: 'user', content: 5 }],
      ['hi'],
    ]) {
      expectError(await chat({ ...good(), messages }), 400, { param: /^messages/ });
    }
  });

  test('over-context: code context_length_exceeded', async () => {
    const long = Array.from({ length: 200 }, (_, i) => `word${i} and more`).join(' ');  // > 256 tokens
    expectError(await chat({ ...good(), messages: [{ role: 'user', content: long }] }), 400,
                { param: /^messages/, code: 'context_length_exceeded' });
    expectError(await completions({ model: srv.model, prompt: long }), 400,
                { param: 'prompt', code: 'context_length_exceeded' });
    const ids = Array.from({ length: CTX + 10 }, (_, i) => 1000 + i);
    expectError(await completions({ model: srv.model, prompt: ids }), 400,
                { param: 'prompt', code: 'context_length_exceeded' });
    const r = await chat(good());  // still serving
    assert.equal(r.status, 200);
  });
});

describe('401, 404, 405, 413', () => {
  test('401 invalid_api_key: no key, wrong key, wrong scheme', async () => {
    for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: `Basic ${KEY}` }]) {
      for (const [method, route] of [['GET', '/v1/models'], ['POST', '/v1/chat/completions'], ['POST', '/v1/completions']]) {
        const res = await fetch(`${srv.url}${route}`, {
          method, headers: { 'content-type': 'application/json', ...headers },
          body: method === 'POST' ? JSON.stringify(good()) : undefined,
        });
        const text = await res.text();
        let body; try { body = JSON.parse(text); } catch { body = text; }
        expectError({ status: res.status, headers: res.headers, body, text }, 401, { code: 'invalid_api_key' });
      }
    }
    const ok = await fetch(`${srv.url}/v1/models`, { headers: { authorization: `Bearer ${KEY}` } });
    assert.equal(ok.status, 200);
  });

  test('404 for unknown routes', async () => {
    for (const route of ['/v1/nope', '/v1/chat/complete', '/v2/models']) {
      const res = await fetch(`${srv.url}${route}`, { headers: { authorization: `Bearer ${KEY}` } });
      const text = await res.text();
      expectError({ status: res.status, headers: res.headers, body: JSON.parse(text), text }, 404);
    }
  });

  test('405 for a wrong method on a known route', async () => {
    for (const [method, route] of [['GET', '/v1/chat/completions'], ['GET', '/v1/completions'], ['DELETE', '/v1/models'],
                                    ['PUT', '/v1/chat/completions']]) {
      const res = await fetch(`${srv.url}${route}`, { method, headers: { authorization: `Bearer ${KEY}` } });
      const text = await res.text();
      let body; try { body = JSON.parse(text); } catch { body = text; }
      expectError({ status: res.status, headers: res.headers, body, text }, 405, { type: /.+/ });
    }
  });

  test('413 for a body over --max-body', async () => {
    const body = { ...good(), messages: [{ role: 'user', content: 'x'.repeat(MAX_BODY + 1000) }] };
    expectError(await chat(body), 413, { type: /.+/ });
    const r = await chat(good());  // the server is still fine
    assert.equal(r.status, 200);
  });
});

describe('429 rate_limit_exceeded', () => {
  let busy;
  before(async () => {
    busy = await startServer({ model: tinyModel(), args: ['--parallel', '1', '--max-queue', '1'] });
  });
  after(async () => { if (busy) await busy.stop(); });

  test('a full queue answers 429; the admitted requests complete', async () => {
    const long = { model: busy.model, messages: [{ role: 'user', content: 'Tell me a long story.' }], max_tokens: 400, temperature: 0 };
    const rs = await Promise.all(Array.from({ length: 6 }, () => postJSON(`${busy.url}/v1/chat/completions`, long)));
    const statuses = rs.map((r) => r.status);
    const limited = rs.filter((r) => r.status === 429);
    assert.ok(limited.length >= 1, `some 429s among ${statuses}`);
    assert.ok(statuses.filter((s) => s === 200).length >= 2, `running + queued complete: ${statuses}`);
    assert.ok(statuses.every((s) => s === 200 || s === 429), `${statuses}`);
    for (const r of limited) expectError(r, 429, { type: /.+/, code: 'rate_limit_exceeded' });
    const after = await postJSON(`${busy.url}/v1/chat/completions`, { ...long, max_tokens: 2 });
    assert.equal(after.status, 200, 'the server accepts requests again');
  });
});
