// Makes the demo model's chat fine-tuning set from the training novels (never the validation
// ones): each conversation gives the opening sentence(s) of a paragraph as the user turn and the
// rest of that paragraph as the assistant turn, so the chat model learns "continue this text"
// in the language it is addressed in. Deterministic: same corpora and options, same file.
//
//   node tools/demo/make_chat_data.mjs OUT.jsonl CORPUS.txt... [--per-file N] [--seed S]
import fs from 'node:fs';

function usage(msg) {
  if (msg) console.error(`make_chat_data.mjs: ${msg}`);
  console.error('usage: node tools/demo/make_chat_data.mjs OUT.jsonl CORPUS.txt... [--per-file N] [--seed S]');
  process.exit(2);
}

const args = process.argv.slice(2);
let perFile = 1500;
let seed = 1;
const files = [];
for (let i = 0; i < args.length; ++i) {
  if (args[i] === '--per-file' || args[i] === '--seed') {
    const v = Number(args[i + 1]);
    if (!Number.isInteger(v) || v <= 0) usage(`${args[i]} needs a positive integer, got '${args[i + 1]}'`);
    if (args[i] === '--per-file') perFile = v; else seed = v;
    ++i;
  } else {
    files.push(args[i]);
  }
}
if (files.length < 2) usage('expected an output file and at least one corpus');
const out = files.shift();

// mulberry32: a small seeded generator, so the selection does not depend on Node's Math.random.
function rng(s) {
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Sentence ends: . ! ? … (optionally followed by closing quotes) then a space, except after
// an initial or a title ("M. Dupont", "Mr. Vholes").
const sentenceSplit = /(?<=[.!?…][»"”’)]?)(?<!(?:^|\s)(?:\p{Lu}|Mr|Mrs|Dr|St|Mme|Mlle|MM|Messrs)\.)\s+/u;
const words = (s) => s.split(/\s+/u).filter(Boolean).length;

function conversation(paragraph) {
  const sentences = paragraph.split(sentenceSplit).map((s) => s.trim()).filter(Boolean);
  if (sentences.length < 3) return null;
  let cut = 1;
  while (cut < sentences.length - 1 && words(sentences.slice(0, cut).join(' ')) < 8) ++cut;
  const prompt = sentences.slice(0, cut).join(' ');
  const rest = [];
  for (const s of sentences.slice(cut)) {
    if (rest.length > 0 && words(rest.join(' ')) + words(s) > 90) break;
    rest.push(s);
  }
  const answer = rest.join(' ');
  if (words(prompt) > 40 || words(answer) < 12 || words(answer) > 120) return null;
  return { messages: [{ role: 'user', content: prompt }, { role: 'assistant', content: answer }] };
}

const next = rng(seed);
const perCorpus = files.map((file) => {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    usage(`${file}: cannot read (${e.code ?? e.message})`);
  }
  const candidates = text.split('\n').map(conversation).filter(Boolean);
  if (candidates.length < perFile) usage(`${file}: only ${candidates.length} usable paragraphs, need ${perFile}`);
  for (let i = candidates.length - 1; i > 0; --i) {  // Fisher-Yates with the seeded generator
    const j = Math.floor(next() * (i + 1));
    [candidates[i], candidates[j]] = [candidates[j], candidates[i]];
  }
  return candidates.slice(0, perFile);
});

// Interleave the corpora so every stretch of fine-tuning sees every language.
const lines = [];
for (let i = 0; i < perFile; ++i) for (const c of perCorpus) lines.push(JSON.stringify(c[i]));
fs.writeFileSync(out, lines.join('\n') + '\n');
console.error(`make_chat_data.mjs: wrote ${lines.length} conversations (${perFile} per corpus) to ${out}`);
