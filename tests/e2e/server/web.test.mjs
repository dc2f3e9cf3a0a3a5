// The web chat page at GET / in a real browser: Playwright (playwright-core) driving Debian's
// headless Chromium (CHROMIUM, default /usr/bin/chromium; browsers are never downloaded).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { metrics, metricValue, requirePackage, startServer, tinyModel, TMP, waitFor } from './lib/server.mjs';

const { chromium } = await requirePackage('playwright-core');
const ACTION_MS = 10_000;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

let browser;
before(async () => {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (scripts/setup.sh)`);
  browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true, timeout: 60_000,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
});
after(async () => { if (browser) await browser.close(); });

// Sets an <input>/<textarea>/<select> value the way a user would (range inputs cannot be filled).
async function setValue(page, selector, value) {
  const el = page.locator(selector);
  await el.waitFor({ state: 'attached', timeout: 10_000 });
  if (!(await el.isVisible())) {  // e.g. in a folded settings panel: open it as a user would
    await el.evaluate((e) => {
      const d = e.closest('details');
      if (d && !d.open) d.querySelector('summary')?.click();
    });
  }
  const kind = await el.evaluate((e) => `${e.tagName}:${e.type ?? ''}`);
  if (/^(INPUT:(text|number|search|)|TEXTAREA:.*)$/i.test(kind) || (await el.evaluate((e) => e.isContentEditable))) {
    await el.fill(String(value), { timeout: ACTION_MS });
  } else {
    await el.evaluate((e, v) => {
      e.value = v;
      e.dispatchEvent(new Event('input', { bubbles: true }));
      e.dispatchEvent(new Event('change', { bubbles: true }));
    }, String(value));
  }
}

// Opens the page, records every length the last answer's text (or reasoning) takes, asks
// `question`; returns { lengths, text, reasoning, request (the page's API request body) }.
async function converse(srv, { system, question, temperature, shot, stopAfter = 16 }) {
  const page = await browser.newPage();
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  const requests = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url().includes('/v1/chat/completions')) requests.push(r.postDataJSON());
  });
  try {
    const res = await page.goto(`${srv.url}/`, { waitUntil: 'load', timeout: 30_000 });
    assert.equal(res.status(), 200);
    assert.match(res.headers()['content-type'] ?? '', /text\/html/);
    for (const id of ['#input', '#send', '#messages', '#temperature', '#system']) {
      assert.equal(await page.locator(id).count(), 1, `the page has ${id}`);
    }
    if (system !== undefined) await setValue(page, '#system', system);
    if (temperature !== undefined) await setValue(page, '#temperature', temperature);
    await page.evaluate(() => {
      window.__lengths = { content: [], reasoning: [] };
      const record = () => {
        const all = document.querySelectorAll('#messages .assistant');
        const last = all[all.length - 1];
        if (!last) return;
        const content = [...last.querySelectorAll('.content')].filter((e) => !e.closest('details'))
          .map((e) => e.textContent).join('');
        const reasoning = [...last.querySelectorAll('details.reasoning')].map((e) => e.textContent).join('');
        for (const [k, v] of [['content', content], ['reasoning', reasoning]]) {
          const l = window.__lengths[k];
          if (v.length && l[l.length - 1] !== v.length) l.push(v.length);
        }
      };
      new MutationObserver(record).observe(document.querySelector('#messages'),
                                           { subtree: true, childList: true, characterData: true });
    });
    await page.fill('#input', question, { timeout: ACTION_MS });
    // Send submits the form, whose handler prevents the navigation: Playwright is told not to wait
    // for one (now and then, under load, that wait outlived the click timeout). Were the page to
    // navigate after all, the streamed answer checked below would never come.
    await page.click('#send', { timeout: ACTION_MS, noWaitAfter: true });
    // The page sets no max_tokens: once the answer has streamed `stopAfter` pieces, press Stop
    // (as a user would) rather than wait for the context to fill.
    let stopped = false;
    let stoppedAt = 0;
    await waitFor(async () => {
      const l = await page.evaluate(() => window.__lengths);
      if (l.content.length + l.reasoning.length >= stopAfter) return true;
      return metricValue(await metrics(srv), 'dseek_running_sequences') === 0 && requests.length > 0;
    }, 60_000, `${stopAfter} streamed pieces of the answer`);
    const stop = page.locator('#stop');
    if ((await stop.count()) === 1 && (await stop.isEnabled({ timeout: ACTION_MS }))) {
      // The answer may end on its own in between: then Stop is disabled again, which is fine.
      stoppedAt = Date.now();
      stopped = await stop.click({ timeout: 2_000 }).then(() => true, async (e) => {
        if (await stop.isEnabled({ timeout: ACTION_MS })) throw e;
        return false;
      });
    }
    // Done when the engine is idle and the page text has stopped changing for 500 ms.
    let last = '';
    let stableSince = Date.now();
    await waitFor(async () => {
      const now = JSON.stringify(await page.evaluate(() => window.__lengths));
      if (now !== last) { last = now; stableSince = Date.now(); return false; }
      const running = metricValue(await metrics(srv), 'dseek_running_sequences');
      return running === 0 && requests.length > 0 && Date.now() - stableSince > 500;
    }, 60_000, 'the answer to finish');
    const idleAfterStopMs = stopped ? Date.now() - stoppedAt : undefined;
    const lengths = await page.evaluate(() => window.__lengths);
    const { text, reasoning, users } = await page.evaluate(() => {
      const all = document.querySelectorAll('#messages .assistant');
      const lastA = all[all.length - 1];
      return {
        text: lastA ? [...lastA.querySelectorAll('.content')].filter((e) => !e.closest('details')).map((e) => e.textContent).join('') : '',
        reasoning: lastA ? [...lastA.querySelectorAll('details.reasoning')].map((e) => e.textContent).join('') : '',
        users: document.querySelector('#messages').textContent,
      };
    });
    fs.mkdirSync(TMP, { recursive: true });
    await page.screenshot({ path: path.join(TMP, shot), fullPage: true });
    assert.deepEqual(consoleErrors, [], 'no script errors on the page');
    assert.ok(users.includes(question), 'the question is shown in #messages');
    return { lengths, text, reasoning, stopped, idleAfterStopMs, request: requests[requests.length - 1] };
  } finally {
    await page.close();
  }
}

// The longest run of letters of `s` (markdown rendering cannot change one).
const longestWord = (s) => (s.match(/\p{L}+/gu) ?? []).reduce((a, b) => (b.length > a.length ? b : a), '');

describe('web chat page (V3 format)', () => {
  let srv;
  before(async () => { srv = await startServer({ model: tinyModel(), args: ['--parallel', '2'] }); });
  after(async () => { if (srv) await srv.stop(); });

  test('system prompt + question -> a streamed answer; the page sends what was set', async () => {
    const system = 'You are a terse assistant.';
    const r = await converse(srv, { system, question: 'What is the tallest mountain?', temperature: 0, shot: 'web-chat.png' });
    assert.ok(r.text.length > 0, 'the answer is not empty');
    assert.ok(r.lengths.content.length >= 2, `streamed: the answer was seen at lengths ${r.lengths.content}`);
    assert.equal(r.request.stream, true, 'the page streams');
    assert.equal(r.request.messages[0].role, 'system');
    assert.equal(r.request.messages[0].content, system);
    assert.equal(r.request.messages[r.request.messages.length - 1].content, 'What is the tallest mountain?');
    assert.equal(Number(r.request.temperature), 0, 'the page sends #temperature');
    // The same request without streaming gives the answer the page shows (its first 8 tokens;
    // the page showed at least 16 pieces).
    const replay = await fetch(`${srv.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...r.request, stream: false, stream_options: undefined, max_tokens: 8 }),
    });
    const replayText = await replay.text();
    assert.equal(replay.status, 200, `replaying ${JSON.stringify(r.request)} without streaming: ${replayText}`);
    const answer = JSON.parse(replayText).choices?.[0]?.message?.content;
    assert.equal(typeof answer, "string", `replay answer: ${replayText}`);
    const word = longestWord(answer);
    if (word.length >= 2) assert.ok(r.text.includes(word), `the page shows the API's answer (${word})`);
    // At temperature 0 the tiny model's answer runs until the context is full (about 10 s here):
    // Stop must reach the page while the text streams in, and end the answer promptly.
    assert.ok(r.stopped, 'Stop was clicked while the answer streamed');
    assert.ok(r.idleAfterStopMs < 5_000, `the page and the engine were idle ${r.idleAfterStopMs} ms after Stop`);
    assert.equal(metricValue(await metrics(srv), 'dseek_running_sequences'), 0, 'Stop cancelled the request');
  });
});

describe('web chat page (R1 format: reasoning)', () => {
  let srv;
  before(async () => { srv = await startServer({ model: tinyModel(), args: ['--parallel', '2', '--chat-format', 'r1'] }); });
  after(async () => { if (srv) await srv.stop(); });

  test('the reasoning is shown in details.reasoning while it streams', async () => {
    const r = await converse(srv, { question: 'Why is the sky blue?', temperature: 0, shot: 'web-reasoning.png' });
    assert.ok(r.reasoning.length > 0, 'details.reasoning is not empty');
    assert.ok(r.lengths.reasoning.length >= 2, `streamed: reasoning seen at lengths ${r.lengths.reasoning}`);
  });
});
