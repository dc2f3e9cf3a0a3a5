// `dseek serve` through the official OpenAI Node SDK: every call a client makes, checked for
// protocol, shapes, determinism and consistency (random weights: never for wording).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { requirePackage, startServer, tinyModel } from './lib/server.mjs';

const { default: OpenAI } = await requirePackage('openai');

const KEY = 'sk-dseek-e2e-sdk';
let srv;
let client;
let model;

before(async () => {
  srv = await startServer({ model: tinyModel(), args: ['--api-key', KEY, '--parallel', '4'] });
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: KEY, maxRetries: 0, timeout: 60_000 });
  model = srv.model;
});
after(async () => { if (srv) await srv.stop(); });

const USER = [{ role: 'user', content: 'Write a short poem about the sea.' }];

function checkUsage(u) {
  assert.ok(u, 'usage present');
  assert.ok(Number.isInteger(u.prompt_tokens) && u.prompt_tokens > 0, `prompt_tokens ${u.prompt_tokens}`);
  assert.ok(Number.isInteger(u.completion_tokens) && u.completion_tokens >= 0, `completion_tokens ${u.completion_tokens}`);
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens, 'total = prompt + completion');
}

function checkCompletion(c, n = 1) {
  assert.equal(c.object, 'chat.completion');
  assert.ok(typeof c.id === 'string' && c.id.length > 0, 'id');
  assert.equal(c.model, model);
  const now = Date.now() / 1000;
  assert.ok(Number.isInteger(c.created) && Math.abs(c.created - now) < 3600, `created ${c.created}`);
  assert.equal(c.choices.length, n);
  c.choices.forEach((ch, i) => {
    assert.equal(ch.index, i);
    assert.equal(ch.message.role, 'assistant');
    assert.ok(['stop', 'length', 'tool_calls'].includes(ch.finish_reason), `finish_reason ${ch.finish_reason}`);
  });
  checkUsage(c.usage);
}

// Streams a chat request; returns per-choice text/reasoning/tool calls, finish reasons, usage chunk.
async function streamChat(params) {
  const stream = await client.chat.completions.create({ ...params, stream: true });
  const out = { chunks: 0, ids: new Set(), choices: [], usage: null, usageChunks: 0, roles: [] };
  for await (const chunk of stream) {
    out.chunks++;
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.equal(chunk.model, model);
    out.ids.add(chunk.id);
    if (chunk.usage) {
      out.usageChunks++;
      out.usage = chunk.usage;
      assert.equal(chunk.choices.length, 0, 'the usage chunk has no choices');
    }
    for (const ch of chunk.choices) {
      const c = (out.choices[ch.index] ??= { content: '', reasoning: '', finish: null, tools: [], finishes: 0, deltas: 0, logprobs: [] });
      const d = ch.delta ?? {};
      if (d.role) out.roles.push(d.role);
      if (typeof d.content === 'string' && d.content.length) { c.content += d.content; c.deltas++; }
      if (typeof d.reasoning_content === 'string') c.reasoning += d.reasoning_content;
      for (const tc of d.tool_calls ?? []) {
        const t = (c.tools[tc.index] ??= { id: '', type: '', name: '', arguments: '' });
        if (tc.id) t.id = tc.id;
        if (tc.type) t.type = tc.type;
        if (tc.function?.name) t.name += tc.function.name;
        if (tc.function?.arguments) t.arguments += tc.function.arguments;
      }
      if (ch.logprobs?.content) c.logprobs.push(...ch.logprobs.content);
      if (ch.finish_reason) { c.finish = ch.finish_reason; c.finishes++; }
    }
  }
  assert.equal(out.ids.size, 1, 'every chunk carries the same id');
  for (const c of out.choices) assert.equal(c.finishes, 1, 'exactly one finish_reason per choice');
  return out;
}

describe('models', () => {
  test('models.list names the served model (the model directory basename)', async () => {
    const page = await client.models.list();
    assert.ok(page.data.length >= 1);
    const m = page.data.find((x) => x.id === model);
    assert.ok(m, `model ${model} in ${JSON.stringify(page.data)}`);
    assert.equal(m.object, 'model');
    const one = await client.models.retrieve(model).catch((e) => e);
    if (!(one instanceof Error)) assert.equal(one.id, model);  // retrieve is optional in the contract
  });
});

describe('chat completions', () => {
  let greedy;  // the reference greedy answer
  const params = { model, messages: USER, temperature: 0, max_tokens: 24 };

  test('non-streaming: shape and usage', async () => {
    params.model = model;
    greedy = await client.chat.completions.create(params);
    checkCompletion(greedy);
    assert.equal(typeof greedy.choices[0].message.content, 'string');
    assert.ok(greedy.choices[0].message.content.length > 0, 'non-empty answer');
    assert.ok(greedy.usage.completion_tokens <= 24);
    if (greedy.choices[0].finish_reason === 'length') assert.equal(greedy.usage.completion_tokens, 24);
    const again = await client.chat.completions.create(params);
    assert.equal(again.choices[0].message.content, greedy.choices[0].message.content, 'greedy is deterministic');
    assert.notEqual(again.id, greedy.id, 'each completion has its own id');
  });

  test('streaming: deltas reassemble the non-streamed answer; include_usage chunk', async () => {
    const s = await streamChat({ ...params, stream_options: { include_usage: true } });
    assert.equal(s.choices.length, 1);
    assert.equal(s.roles[0], 'assistant', 'first delta carries the role');
    assert.ok(s.choices[0].deltas >= 2, `streamed in ${s.choices[0].deltas} content deltas`);
    assert.equal(s.choices[0].content, greedy.choices[0].message.content);
    assert.equal(s.choices[0].finish, greedy.choices[0].finish_reason);
    assert.equal(s.usageChunks, 1, 'exactly one usage chunk');
    checkUsage(s.usage);
    assert.equal(s.usage.prompt_tokens, greedy.usage.prompt_tokens);
    assert.equal(s.usage.completion_tokens, greedy.usage.completion_tokens);
    const plain = await streamChat(params);
    assert.equal(plain.usageChunks, 0, 'no usage chunk without include_usage');
    assert.equal(plain.choices[0].content, greedy.choices[0].message.content);
  });

  test('max_completion_tokens / max_tokens: finish "length" with exactly that many tokens', async () => {
    for (const limit of [{ max_completion_tokens: 5 }, { max_tokens: 7 }]) {
      const n = Object.values(limit)[0];
      const r = await client.chat.completions.create({ model, messages: USER, temperature: 0, ...limit });
      checkCompletion(r);
      assert.equal(r.choices[0].finish_reason, 'length', JSON.stringify(limit));
      assert.equal(r.usage.completion_tokens, n, JSON.stringify(limit));
      assert.ok(greedy.choices[0].message.content.startsWith(r.choices[0].message.content.replace(/\uFFFD+$/, '')),
                'a shorter greedy answer is a prefix of the longer one');
    }
  });

  test('stop: the answer ends right before the first occurrence of the stop string', async () => {
    const text = greedy.choices[0].message.content;
    const cps = [...text];
    assert.ok(cps.length >= 6, `reference answer too short: ${JSON.stringify(text)}`);
    let stop = null;
    for (let k = Math.floor(cps.length / 2); k < cps.length - 1 && !stop; k++) {
      const s = cps.slice(k, k + 2).join('');
      if (!s.includes('\uFFFD') && text.indexOf(s) > 0) stop = s;
    }
    assert.ok(stop, 'found a stop string');
    const expected = text.slice(0, text.indexOf(stop));
    const r = await client.chat.completions.create({ ...params, stop: [stop] });
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.choices[0].message.content, expected, `stop ${JSON.stringify(stop)}`);
    const s = await streamChat({ ...params, stop });
    assert.equal(s.choices[0].content, expected, 'streamed with stop');
    assert.equal(s.choices[0].finish, 'stop');
  });

  test('seed: same seed at temperature 1 repeats, another seed differs', async () => {
    const p = { model, messages: USER, temperature: 1, top_p: 1, max_tokens: 16 };
    const a = await client.chat.completions.create({ ...p, seed: 1234 });
    const b = await client.chat.completions.create({ ...p, seed: 1234 });
    const c = await client.chat.completions.create({ ...p, seed: 98765 });
    assert.equal(a.choices[0].message.content, b.choices[0].message.content);
    assert.notEqual(a.choices[0].message.content, c.choices[0].message.content);
    const sa = await streamChat({ ...p, seed: 1234 });
    assert.equal(sa.choices[0].content, a.choices[0].message.content, 'streamed with the same seed');
  });

  test('logprobs/top_logprobs: shape, sorted, greedy token is the top one, bytes spell the text', async () => {
    const p = { model, messages: USER, temperature: 0, max_tokens: 8, logprobs: true, top_logprobs: 3 };
    const r = await client.chat.completions.create(p);
    checkCompletion(r);
    const lp = r.choices[0].logprobs?.content;
    assert.ok(Array.isArray(lp), 'choices[0].logprobs.content');
    assert.equal(lp.length, r.usage.completion_tokens);
    const bytes = [];
    let allBytes = true;
    for (const e of lp) {
      assert.equal(typeof e.token, 'string');
      assert.ok(Number.isFinite(e.logprob) && e.logprob <= 0, `logprob ${e.logprob}`);
      assert.equal(e.top_logprobs.length, 3);
      let total = 0;
      for (let i = 0; i < 3; i++) {
        const t = e.top_logprobs[i];
        assert.equal(typeof t.token, 'string');
        assert.ok(t.logprob <= 0);
        if (i) assert.ok(t.logprob <= e.top_logprobs[i - 1].logprob, 'top_logprobs sorted descending');
        total += Math.exp(t.logprob);
      }
      assert.ok(total <= 1 + 1e-4, `probabilities sum to ${total}`);
      assert.ok(Math.abs(e.logprob - e.top_logprobs[0].logprob) < 1e-4, 'greedy picks the most likely token');
      assert.equal(e.token, e.top_logprobs[0].token);
      assert.ok(e.bytes === null || Array.isArray(e.bytes));
      if (Array.isArray(e.bytes)) bytes.push(...e.bytes); else allBytes = false;
    }
    if (allBytes) assert.equal(Buffer.from(bytes).toString('utf8'), r.choices[0].message.content, 'bytes spell the answer');
    const ref = await client.chat.completions.create({ model, messages: USER, temperature: 0, max_tokens: 8 });
    assert.equal(r.choices[0].message.content, ref.choices[0].message.content, 'logprobs do not change the answer');
    const s = await streamChat(p);
    assert.deepEqual(s.choices[0].logprobs.map((e) => e.token), lp.map((e) => e.token), 'streamed logprob tokens');
    s.choices[0].logprobs.forEach((e, i) => assert.ok(Math.abs(e.logprob - lp[i].logprob) < 1e-4, 'streamed logprob'));
    const plain = await client.chat.completions.create({ ...p, logprobs: false, top_logprobs: undefined });
    assert.ok(plain.choices[0].logprobs == null, 'no logprobs unless asked');
  });

  test('n=2: two choices; greedy choices equal; sampled choices differ; token counts add up', async () => {
    const g = await client.chat.completions.create({ model, messages: USER, temperature: 0, max_tokens: 6, n: 2 });
    checkCompletion(g, 2);
    assert.equal(g.choices[0].message.content, g.choices[1].message.content);
    if (g.choices.every((c) => c.finish_reason === 'length')) assert.equal(g.usage.completion_tokens, 12);
    const t = await client.chat.completions.create({ model, messages: USER, temperature: 1, max_tokens: 12, n: 2, seed: 5 });
    checkCompletion(t, 2);
    assert.notEqual(t.choices[0].message.content, t.choices[1].message.content, 'n samples are independent');
    const s = await streamChat({ model, messages: USER, temperature: 0, max_tokens: 6, n: 2 });
    assert.equal(s.choices.length, 2);
    assert.equal(s.choices[0].content, g.choices[0].message.content);
    assert.equal(s.choices[1].content, g.choices[1].message.content);
  });

  test('prefix reuse: a long shared system prompt is served from cache the second time', async () => {
    const nonce = `${process.pid}-${Date.now()}`;
    const system = `Session ${nonce}. ` + Array.from({ length: 60 }, (_, i) =>
      `Rule ${i + 1}: answer politely, cite sources and keep the tone even.`).join(' ');
    const ask = (q) => client.chat.completions.create({
      model, temperature: 0, max_tokens: 4,
      messages: [{ role: 'system', content: system }, { role: 'user', content: q }],
    });
    const first = await ask('What is the capital of France?');
    const second = await ask('How tall is Mount Everest?');
    const c1 = first.usage.prompt_tokens_details?.cached_tokens ?? 0;
    const c2 = second.usage.prompt_tokens_details?.cached_tokens;
    assert.ok(first.usage.prompt_tokens > 400, `system prompt long enough: ${first.usage.prompt_tokens}`);
    assert.ok(Number.isInteger(c2), `usage.prompt_tokens_details.cached_tokens: ${JSON.stringify(second.usage)}`);
    assert.ok(c2 > c1, `cached ${c2} the second time vs ${c1}`);
    assert.ok(c2 >= 0.5 * second.usage.prompt_tokens && c2 < second.usage.prompt_tokens,
              `cached ${c2} of ${second.usage.prompt_tokens}`);
  });
});

const TOOLS = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Current weather in a city',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
        required: ['city', 'unit'],
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'get_time',
      description: 'Current time in a time zone',
      parameters: { type: 'object', properties: { timezone: { type: 'string' } }, required: ['timezone'] },
    },
  },
];
const REQUIRED = { get_weather: ['city', 'unit'], get_time: ['timezone'] };

function checkToolCall(tc, expectName) {
  assert.ok(typeof tc.id === 'string' && tc.id.length > 0, 'tool call id');
  assert.equal(tc.type, 'function');
  const name = tc.function?.name ?? tc.name;
  const args = tc.function?.arguments ?? tc.arguments;
  if (expectName) assert.equal(name, expectName);
  assert.ok(name in REQUIRED, `tool name ${name}`);
  let parsed;
  assert.doesNotThrow(() => { parsed = JSON.parse(args); }, `arguments are JSON: ${args}`);
  assert.ok(parsed && typeof parsed === 'object' && !Array.isArray(parsed), 'arguments are an object');
  for (const k of REQUIRED[name]) assert.equal(typeof parsed[k], 'string', `argument ${k} in ${args}`);
  if (name === 'get_weather') assert.ok(['celsius', 'fahrenheit'].includes(parsed.unit), `enum unit: ${parsed.unit}`);
  return { name, args };
}

describe('tools', () => {
  const ask = [{ role: 'user', content: 'What is the weather in Paris?' }];

  test('tool_choice "required": a structured tool call, streamed identically', async () => {
    const p = { model, messages: ask, tools: TOOLS, tool_choice: 'required', temperature: 0, max_tokens: 256 };
    const r = await client.chat.completions.create(p);
    checkCompletion(r);
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
    const calls = r.choices[0].message.tool_calls;
    assert.ok(Array.isArray(calls) && calls.length >= 1, `tool_calls: ${JSON.stringify(r.choices[0].message)}`);
    const first = checkToolCall(calls[0]);
    const s = await streamChat(p);
    assert.equal(s.choices[0].finish, 'tool_calls');
    assert.equal(s.choices[0].tools.length, calls.length);
    const st = checkToolCall(s.choices[0].tools[0]);
    assert.equal(st.name, first.name);
    assert.deepEqual(JSON.parse(st.args), JSON.parse(first.args), 'streamed arguments == non-streamed');
  });

  test('named tool_choice forces that function; a follow-up turn with the tool result is accepted', async () => {
    const p = { model, messages: ask, tools: TOOLS, temperature: 0, max_tokens: 256,
                tool_choice: { type: 'function', function: { name: 'get_time' } } };
    const r = await client.chat.completions.create(p);
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
    const call = r.choices[0].message.tool_calls[0];
    checkToolCall(call, 'get_time');
    const s = await streamChat(p);
    checkToolCall(s.choices[0].tools[0], 'get_time');

    const follow = await client.chat.completions.create({
      model, tools: TOOLS, tool_choice: 'none', temperature: 0, max_tokens: 8,
      messages: [...ask, { role: 'assistant', content: null, tool_calls: [call] },
                 { role: 'tool', tool_call_id: call.id, content: '{"time": "12:00"}' }],
    });
    checkCompletion(follow);
    assert.ok(['stop', 'length'].includes(follow.choices[0].finish_reason), 'tool_choice none: no tool call');
    assert.ok(follow.usage.prompt_tokens > r.usage.prompt_tokens, 'the tool turn is part of the prompt');
  });
});

describe('response_format', () => {
  test('json_object: the content parses as a JSON object', async () => {
    const r = await client.chat.completions.create({
      model, temperature: 0, max_tokens: 256, response_format: { type: 'json_object' },
      messages: [{ role: 'user', content: 'Describe a cat as JSON.' }],
    });
    assert.equal(r.choices[0].finish_reason, 'stop');
    const v = JSON.parse(r.choices[0].message.content);
    assert.ok(v && typeof v === 'object' && !Array.isArray(v), r.choices[0].message.content);
  });

  test('json_schema: the content matches the schema', async () => {
    const r = await client.chat.completions.create({
      model, temperature: 0, max_tokens: 256,
      response_format: { type: 'json_schema', json_schema: { name: 'person', strict: true, schema: {
        type: 'object', additionalProperties: false, required: ['name', 'age'],
        properties: { name: { type: 'string' }, age: { type: 'integer' } } } } },
      messages: [{ role: 'user', content: 'Invent a person.' }],
    });
    assert.equal(r.choices[0].finish_reason, 'stop');
    const v = JSON.parse(r.choices[0].message.content);
    assert.equal(typeof v.name, 'string');
    assert.ok(Number.isInteger(v.age), `age ${v.age}`);
  });
});

describe('completions', () => {
  const base = { temperature: 0, max_tokens: 6 };
  const texts = {};
  const one = async (prompt, extra = {}) => {
    const r = await client.completions.create({ model, prompt, ...base, ...extra });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.model, model);
    checkUsage(r.usage);
    r.choices.forEach((c, i) => {
      assert.equal(c.index, i);
      assert.equal(typeof c.text, 'string');
      assert.ok(['stop', 'length'].includes(c.finish_reason));
    });
    return r;
  };

  test('string prompt and [string] batch: each batch answer equals the single one', async () => {
    for (const p of ['Once upon a time', 'The quick brown fox']) {
      const r = await one(p);
      assert.equal(r.choices.length, 1);
      texts[p] = r;
    }
    const b = await one(['Once upon a time', 'The quick brown fox']);
    assert.equal(b.choices.length, 2);
    assert.equal(b.choices[0].text, texts['Once upon a time'].choices[0].text);
    assert.equal(b.choices[1].text, texts['The quick brown fox'].choices[0].text);
    assert.equal(b.usage.prompt_tokens,
                 texts['Once upon a time'].usage.prompt_tokens + texts['The quick brown fox'].usage.prompt_tokens);
  });

  test('[int] and [[int]] token prompts', async () => {
    const a = [1000, 2000, 3000, 4000, 5000];
    const b = [777, 888, 999];
    const ra = await one(a);
    const rb = await one(b);
    assert.ok(ra.usage.prompt_tokens === a.length || ra.usage.prompt_tokens === a.length + 1,
              `prompt_tokens ${ra.usage.prompt_tokens} for ${a.length} ids`);
    assert.equal(rb.usage.prompt_tokens - b.length, ra.usage.prompt_tokens - a.length, 'same BOS rule');
    const both = await one([a, b]);
    assert.equal(both.choices.length, 2);
    assert.equal(both.choices[0].text, ra.choices[0].text);
    assert.equal(both.choices[1].text, rb.choices[0].text);
    assert.equal(both.usage.prompt_tokens, ra.usage.prompt_tokens + rb.usage.prompt_tokens);
  });

  test('echo: the text is the prompt followed by the completion', async () => {
    const p = 'Once upon a time';
    const plain = texts[p] ?? await one(p);
    const r = await one(p, { echo: true });
    assert.equal(r.choices[0].text, p + plain.choices[0].text);
  });

  test('legacy logprobs: tokens, token_logprobs, top_logprobs, text_offset', async () => {
    const r = await one('The quick brown fox', { logprobs: 2, max_tokens: 6 });
    const lp = r.choices[0].logprobs;
    assert.ok(lp, 'choices[0].logprobs');
    const n = r.usage.completion_tokens;
    for (const k of ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset']) {
      assert.ok(Array.isArray(lp[k]), k);
      assert.equal(lp[k].length, n, `${k} has one entry per generated token`);
    }
    for (let i = 0; i < n; i++) {
      assert.equal(typeof lp.tokens[i], 'string');
      assert.ok(lp.token_logprobs[i] <= 0);
      const tops = Object.values(lp.top_logprobs[i]);
      assert.ok(tops.length >= 1 && tops.length <= 2, `top_logprobs[${i}] ${JSON.stringify(lp.top_logprobs[i])}`);
      assert.ok(Math.abs(Math.max(...tops) - lp.token_logprobs[i]) < 1e-4, 'greedy token is the most likely');
      assert.ok(Number.isInteger(lp.text_offset[i]));
      if (i) assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1], 'text_offset ascending');
    }
    const clean = lp.tokens.every((t) => !t.includes('\uFFFD') && !t.startsWith('bytes:'));
    if (clean) {
      assert.equal(lp.tokens.join(''), r.choices[0].text, 'tokens spell the text');
      // OpenAI's text_offset counts characters (not UTF-8 bytes), from the start of prompt + text.
      const chars = (s) => [...s].length;
      assert.ok(lp.text_offset[0] === 0 || lp.text_offset[0] === chars('The quick brown fox'), `text_offset[0] ${lp.text_offset[0]}`);
      for (let i = 1; i < n; i++) {
        assert.equal(lp.text_offset[i] - lp.text_offset[i - 1], chars(lp.tokens[i - 1]),
                     `text_offset ${JSON.stringify(lp.text_offset)} are character offsets of ${JSON.stringify(lp.tokens)}`);
      }
    }
  });

  test('streaming completions reassemble the non-streamed text', async () => {
    const p = 'The quick brown fox';
    const ref = texts[p] ?? await one(p);
    const stream = await client.completions.create({ model, prompt: p, ...base, stream: true,
                                                     stream_options: { include_usage: true } });
    let text = '';
    let finish = null;
    let usage = null;
    for await (const c of stream) {
      assert.equal(c.object, 'text_completion');
      if (c.usage) usage = c.usage;
      for (const ch of c.choices ?? []) {
        text += ch.text ?? '';
        if (ch.finish_reason) finish = ch.finish_reason;
      }
    }
    assert.equal(text, ref.choices[0].text);
    assert.equal(finish, ref.choices[0].finish_reason);
    if (usage) assert.equal(usage.completion_tokens, ref.usage.completion_tokens);
  });
});

describe('api key', () => {
  test('a wrong key is an AuthenticationError', async () => {
    const bad = new OpenAI({ baseURL: srv.baseURL, apiKey: 'sk-wrong', maxRetries: 0, timeout: 10_000 });
    await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
    await assert.rejects(bad.chat.completions.create({ model, messages: USER, max_tokens: 2 }),
                         (e) => e instanceof OpenAI.AuthenticationError && e.code === 'invalid_api_key');
  });
});

describe('reasoning (--chat-format r1)', () => {
  let r1;
  let rc;
  before(async () => {
    r1 = await startServer({ model: tinyModel(), args: ['--chat-format', 'r1', '--alias', 'tiny-r1', '--parallel', '2'] });
    rc = new OpenAI({ baseURL: r1.baseURL, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  });
  after(async () => { if (r1) await r1.stop(); });

  test('the alias is the model id; answers start in reasoning_content, streamed as reasoning deltas', async () => {
    const ids = (await rc.models.list()).data.map((m) => m.id);
    assert.deepEqual(ids, ['tiny-r1']);
    const p = { model: 'tiny-r1', messages: USER, temperature: 0, max_tokens: 24 };
    const r = await rc.chat.completions.create(p);
    assert.equal(r.model, 'tiny-r1');
    const msg = r.choices[0].message;
    assert.equal(typeof msg.reasoning_content, 'string', `reasoning_content in ${JSON.stringify(msg)}`);
    assert.ok(msg.reasoning_content.length > 0);
    assert.ok(!msg.reasoning_content.includes('<think>') && !(msg.content ?? '').includes('</think>'),
              'think tags are not part of the text');
    const stream = await rc.chat.completions.create({ ...p, stream: true });
    let reasoning = '';
    let content = '';
    let reasoningDeltas = 0;
    for await (const c of stream) {
      const d = c.choices[0]?.delta ?? {};
      if (d.reasoning_content) { reasoning += d.reasoning_content; reasoningDeltas++; }
      if (d.content) content += d.content;
    }
    assert.ok(reasoningDeltas >= 2, `reasoning streamed in ${reasoningDeltas} deltas`);
    assert.equal(reasoning, msg.reasoning_content);
    assert.equal(content, msg.content ?? '');
  });
});

test('SIGTERM: the server exits cleanly with status 0', async () => {
  const s = await startServer({ model: tinyModel(), args: ['--parallel', '1'] });
  const r = await s.stop();
  assert.deepEqual(r, { code: 0, signal: null }, s.stderr());
});
