// The dseek web chat: keeps the conversation in memory, sends it to /v1/chat/completions with
// stream: true and renders the server-sent events as they arrive (fetch + ReadableStream,
// because EventSource cannot POST). No external resources.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { history: [], controller: null, model: null };

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "message " + role;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role;
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = text || "";
  div.append(label, content);
  $("messages").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

// The folded reasoning block of an answer, made when the first reasoning text arrives.
function reasoningBlock(div) {
  let d = div.querySelector("details.reasoning");
  if (!d) {
    d = document.createElement("details");
    d.className = "reasoning";
    const s = document.createElement("summary");
    s.textContent = "Reasoning";
    const t = document.createElement("div");
    t.className = "reasoning-text";
    d.append(s, t);
    div.insertBefore(d, div.querySelector(".content"));
  }
  return d.querySelector(".reasoning-text");
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

// A read of data that has already arrived resolves as a microtask, so while the server streams
// faster than the page handles events the loop below would never return to the task queue: no
// paint, and a click on Stop would wait for the end of the answer. Past this many milliseconds
// of work the loop lets queued tasks run.
const YIELD_AFTER_MS = 25;

// Yields the JSON payload of each "data:" event of an SSE response body.
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let since = performance.now();
  for (;;) {
    if (performance.now() - since > YIELD_AFTER_MS) {
      await new Promise((resolve) => setTimeout(resolve, 0));
      since = performance.now();
    }
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;  // ":" lines are keep-alive comments
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

async function send() {
  const text = $("input").value.trim();
  if (!text || state.controller) return;
  $("input").value = "";
  addMessage("user", text);
  state.history.push({ role: "user", content: text });

  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...state.history);
  const body = { messages, stream: true };
  if (state.model) body.model = state.model;
  const temp = parseFloat($("temperature").value);
  if (!Number.isNaN(temp)) body.temperature = temp;
  if ($("thinking").checked) body.chat_template_kwargs = { thinking: true };

  const div = addMessage("assistant", "");
  const content = div.querySelector(".content");
  let answer = "", reasoning = "";
  // The text is painted at most once a frame: each paint lays the whole answer out again.
  let paintPending = false;
  const paint = () => {
    paintPending = false;
    if (reasoning) reasoningBlock(div).textContent = reasoning;
    content.textContent = answer;
    div.scrollIntoView({ block: "end" });
  };
  const schedulePaint = () => {
    if (!paintPending) { paintPending = true; requestAnimationFrame(paint); }
  };
  state.controller = new AbortController();
  setBusy(true);
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.controller.signal,
    });
    if (!res.ok) {
      const err = await res.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || "HTTP " + res.status);
    }
    for await (const chunk of sseEvents(res.body)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = (chunk.choices && chunk.choices[0] && chunk.choices[0].delta) || {};
      if (delta.reasoning_content) reasoning += delta.reasoning_content;
      if (delta.content) answer += delta.content;
      for (const call of delta.tool_calls || []) {
        const p = document.createElement("div");
        p.className = "tool-call";
        p.textContent = "tool call: " + call.function.name + "(" + call.function.arguments + ")";
        div.append(p);
      }
      schedulePaint();
    }
  } catch (e) {
    if (e.name !== "AbortError") {
      const p = document.createElement("div");
      p.className = "error";
      p.textContent = "Error: " + e.message;
      div.append(p);
    }
  } finally {
    paint();  // what arrived since the last frame, also after Stop or an error
    state.controller = null;
    setBusy(false);
  }
  const msg = { role: "assistant", content: answer };
  if (reasoning) msg.reasoning_content = reasoning;
  state.history.push(msg);
}

$("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
});
$("stop").addEventListener("click", () => { if (state.controller) state.controller.abort(); });
$("new-chat").addEventListener("click", () => {
  if (state.controller) state.controller.abort();
  state.history = [];
  $("messages").textContent = "";
});

// The served model's id, shown in the header and sent with each request.
fetch("/v1/models", { headers: headers() })
  .then((r) => (r.ok ? r.json() : null))
  .then((j) => {
    if (j && j.data && j.data[0]) { state.model = j.data[0].id; $("model").textContent = state.model; }
  })
  .catch(() => {});
