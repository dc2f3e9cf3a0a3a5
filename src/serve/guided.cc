// Guided-decoding constraints: the per-vocabulary token index, the mask walk, and the grammars
// of each chat format's tool-call block (see guided.h).
#include "serve/guided.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <limits>
#include <list>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "base/check.h"
#include "serve/guided_schema.h"

namespace dseek::serve {
namespace guided {

// The vocabulary's plain tokens sorted by their bytes, with the common prefix length of each
// and its predecessor: the mask walk feeds shared prefixes once and skips every token that
// starts with a rejected prefix, as a walk over a trie would.
struct TokenIndex {
  size_t vocab = 0;
  std::vector<int32_t> order;        // plain tokens, sorted by bytes
  std::vector<uint16_t> lcp;         // lcp[i]: common prefix of order[i-1] and order[i]
  std::vector<const std::string*> bytes;
  size_t max_len = 0;
  std::vector<uint8_t> symbol;       // per id: an added or special token (matched whole only)
  uint64_t serial = 0;               // unique per index built: names it in mask-cache keys
};

// One state's allowed tokens as the shorter of its allowed and disallowed id lists, so that
// applying it costs O(that list) rather than a walk (plus a fill for an allowed list).
struct CachedMask {
  bool allowed_list = false;  // ids are the allowed tokens; else the disallowed ones below vocab
  size_t vocab = 0;           // ids at or above it are never allowed
  std::vector<int32_t> ids;
  size_t bytes() const { return sizeof(CachedMask) + ids.capacity() * sizeof(int32_t); }
};

namespace {

std::shared_ptr<const TokenIndex> build_index(const tokenizer::Tokenizer& tok) {
  static std::atomic<uint64_t> serials{0};
  auto idx = std::make_shared<TokenIndex>();
  idx->serial = ++serials;
  idx->vocab = tok.vocab_size();
  idx->symbol.assign(idx->vocab, 0);
  for (const auto& a : tok.added_tokens())
    if (a.id >= 0 && static_cast<size_t>(a.id) < idx->vocab) idx->symbol[a.id] = 1;
  for (size_t id = 0; id < idx->vocab; ++id) {
    const int32_t i = static_cast<int32_t>(id);
    if (tok.is_special(i)) idx->symbol[id] = 1;
    const std::string* b = tok.token_bytes(i);
    if (idx->symbol[id] || b == nullptr || b->empty()) continue;
    idx->order.push_back(i);
  }
  std::sort(idx->order.begin(), idx->order.end(),
            [&](int32_t x, int32_t y) { return *tok.token_bytes(x) < *tok.token_bytes(y); });
  idx->lcp.resize(idx->order.size(), 0);
  idx->bytes.resize(idx->order.size());
  for (size_t k = 0; k < idx->order.size(); ++k) {
    const std::string& cur = *tok.token_bytes(idx->order[k]);
    idx->bytes[k] = &cur;
    idx->max_len = std::max(idx->max_len, cur.size());
    if (k == 0) continue;
    const std::string& prev = *idx->bytes[k - 1];
    size_t l = 0;
    while (l < prev.size() && l < cur.size() && prev[l] == cur[l]) ++l;
    idx->lcp[k] = static_cast<uint16_t>(std::min<size_t>(l, 65535));
  }
  return idx;
}

// One index per tokenizer, built on first use (about 0.1 s for a 129K vocabulary). Keyed by
// address; the vocabulary size and a sample of token bytes guard against a reused address.
std::shared_ptr<const TokenIndex> index_for(const tokenizer::Tokenizer& tok) {
  static std::mutex mu;
  static std::unordered_map<const tokenizer::Tokenizer*, std::shared_ptr<const TokenIndex>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[&tok];
  const bool stale = slot && (slot->vocab != tok.vocab_size() ||
                              (!slot->order.empty() && slot->bytes.front() != tok.token_bytes(slot->order.front())));
  if (!slot || stale) slot = build_index(tok);
  return slot;
}

// A map with least-recently-used eviction past a byte budget (keys count too).
template <typename V>
class LruMap {
 public:
  explicit LruMap(size_t max_bytes) : max_bytes_(max_bytes) {}

  const V* find(const std::string& key) {
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    items_.splice(items_.begin(), items_, it->second);
    return &it->second->value;
  }
  void insert(const std::string& key, V value, size_t value_bytes) {
    if (map_.count(key)) return;  // another thread got there first: same value
    items_.push_front({key, std::move(value), key.size() + value_bytes});
    map_.emplace(items_.front().key, items_.begin());
    bytes_ += items_.front().bytes;
    while (bytes_ > max_bytes_ && items_.size() > 1) {
      bytes_ -= items_.back().bytes;
      map_.erase(items_.back().key);
      items_.pop_back();
    }
  }

 private:
  struct Item {
    std::string key;
    V value;
    size_t bytes;
  };
  size_t max_bytes_;
  size_t bytes_ = 0;
  std::list<Item> items_;  // most recently used first
  std::unordered_map<std::string_view, typename std::list<Item>::iterator> map_;  // views of Item::key
};

// The process-wide mask cache: masks keyed by (grammar uid, MatchState::signature), shared by
// all requests whose grammars are equal (same schema or tools, limits and vocabulary), so a
// repeated request starts warm. Engine threads each run their own constraints but share this,
// hence the mutex; it is held for a hash lookup and a list splice, never for a walk.
class MaskCache {
 public:
  static MaskCache& instance() {
    static MaskCache* c = new MaskCache();  // never destroyed: no exit-time destruction order
    return *c;
  }

  // Equal fingerprints get equal uids while remembered; uids are never reused, so a forgotten
  // fingerprint's masks just age out.
  uint64_t grammar_uid(const std::string& fingerprint) {
    std::lock_guard<std::mutex> lock(mu_);
    if (const uint64_t* uid = grammars_.find(fingerprint)) return *uid;
    const uint64_t uid = next_uid_++;
    grammars_.insert(fingerprint, uid, sizeof(uid));
    return uid;
  }
  std::shared_ptr<const CachedMask> find(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto* m = masks_.find(key);
    return m ? *m : nullptr;
  }
  void insert(const std::string& key, std::shared_ptr<const CachedMask> mask) {
    const size_t bytes = mask->bytes();
    std::lock_guard<std::mutex> lock(mu_);
    masks_.insert(key, std::move(mask), bytes);
  }

 private:
  // 64 MiB: ~6000 free-string masks (~2.6K disallowed ids each for DeepSeek-V3), far more
  // constrained ones (a few to a few hundred allowed ids), and at least 250 of the largest
  // possible (half the vocabulary).
  static constexpr size_t kMaskBytes = size_t{64} << 20;
  static constexpr size_t kFingerprintBytes = size_t{8} << 20;

  std::mutex mu_;
  LruMap<std::shared_ptr<const CachedMask>> masks_{kMaskBytes};
  LruMap<uint64_t> grammars_{kFingerprintBytes};
  uint64_t next_uid_ = 1;
};

// Fixed text -> units, with each chat marker that the vocabulary has as an added token turned
// into that token's symbol.
class LiteralMaker {
 public:
  LiteralMaker(const tokenizer::Tokenizer& tok, const TokenIndex& idx, Grammar* g) : tok_(tok), idx_(idx), g_(g) {}

  Units operator()(std::string_view text) const {
    static const std::vector<std::string> kMarkers = {
        tokenizer::kToolCallsBegin, tokenizer::kToolCallsEnd, tokenizer::kToolCallBegin, tokenizer::kToolCallEnd,
        tokenizer::kToolSep,        tokenizer::kThinkStart,   tokenizer::kThinkEnd,      tokenizer::kDsml};
    Units out;
    size_t i = 0;
    while (i < text.size()) {
      bool matched = false;
      for (const std::string& m : kMarkers) {
        if (text.compare(i, m.size(), m) != 0) continue;
        const int32_t id = tok_.token_to_id(m);
        if (id < 0 || static_cast<size_t>(id) >= idx_.vocab || !idx_.symbol[id]) continue;
        out.push_back(kSymbolBase + static_cast<Unit>(id));
        if (std::find(g_->symbols.begin(), g_->symbols.end(), id) == g_->symbols.end()) g_->symbols.push_back(id);
        i += m.size();
        matched = true;
        break;
      }
      if (!matched) out.push_back(static_cast<unsigned char>(text[i++]));
    }
    return out;
  }

 private:
  const tokenizer::Tokenizer& tok_;
  const TokenIndex& idx_;
  Grammar* g_;
};

bool valid_function_name(const std::string& name) {
  if (name.empty() || name.size() > 256) return false;
  for (unsigned char c : name)
    if (!(std::isalnum(c) || c == '_' || c == '-' || c == '.' || c == ':')) return false;
  return true;
}

}  // namespace
}  // namespace guided

using guided::Grammar;
using guided::MatchState;
using guided::Units;
using tokenizer::ChatFormat;
using tokenizer::OrderedJson;

GuidedConstraint::GuidedConstraint(const tokenizer::Tokenizer& tok, std::shared_ptr<const guided::TokenIndex> index,
                                   std::shared_ptr<const Grammar> grammar)
    : tok_(tok), index_(std::move(index)), grammar_(std::move(grammar)), state_(*grammar_) {
  scratch_.resize(index_->max_len + 1);
  allowed_.assign(index_->vocab, 0);
  // The index serial stands for the vocabulary: feed_token() reads the tokenizer it indexes.
  std::string fingerprint(reinterpret_cast<const char*>(&index_->serial), sizeof(index_->serial));
  fingerprint += grammar_->fingerprint();
  grammar_uid_ = guided::MaskCache::instance().grammar_uid(fingerprint);
}

size_t GuidedConstraint::max_token_bytes() const { return index_->max_len; }

bool GuidedConstraint::feed_token(MatchState* s, int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= index_->vocab) return false;
  if (index_->symbol[id]) return s->feed(*grammar_, guided::kSymbolBase + static_cast<guided::Unit>(id));
  const std::string* b = tok_.token_bytes(id);
  if (b == nullptr || b->empty()) return false;
  for (unsigned char c : *b)
    if (!s->feed(*grammar_, c)) return false;
  return true;
}

bool GuidedConstraint::would_accept(int32_t id) const {
  if (state_.done()) return id == tok_.eos_id();
  MatchState s;
  s.assign(state_);
  return feed_token(&s, id);
}

namespace {

void apply_mask(const guided::CachedMask& m, std::span<float> logits, std::vector<float>* kept) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (m.allowed_list) {
    kept->clear();
    for (int32_t id : m.ids) kept->push_back(static_cast<size_t>(id) < logits.size() ? logits[id] : kNegInf);
    std::fill(logits.begin(), logits.end(), kNegInf);
    for (size_t i = 0; i < m.ids.size(); ++i)
      if (static_cast<size_t>(m.ids[i]) < logits.size()) logits[m.ids[i]] = (*kept)[i];
  } else {
    for (int32_t id : m.ids)
      if (static_cast<size_t>(id) < logits.size()) logits[id] = kNegInf;
    for (size_t i = m.vocab; i < logits.size(); ++i) logits[i] = kNegInf;
  }
}

}  // namespace

std::shared_ptr<const guided::CachedMask> GuidedConstraint::walk_mask() {
  const guided::TokenIndex& idx = *index_;
  allowed_ids_.clear();
  // Walk the tokens in byte order: scratch_[d] holds the state after the first d bytes of
  // the current token, valid for d <= valid; a token sharing at least `failed` bytes with
  // its predecessor starts with a prefix already rejected.
  scratch_[0].assign(state_);
  size_t valid = 0, failed = std::numeric_limits<size_t>::max();
  for (size_t k = 0; k < idx.order.size(); ++k) {
    const size_t l = idx.lcp[k];
    if (k > 0 && l >= failed) continue;
    failed = std::numeric_limits<size_t>::max();
    const std::string& b = *idx.bytes[k];
    size_t d = std::min(l, valid);
    bool ok = true;
    for (; d < b.size(); ++d) {
      scratch_[d + 1].assign(scratch_[d]);
      if (!scratch_[d + 1].feed(*grammar_, static_cast<unsigned char>(b[d]))) {
        ok = false;
        failed = d + 1;
        valid = d;
        break;
      }
    }
    if (ok) {
      allowed_ids_.push_back(idx.order[k]);
      valid = b.size();
    }
  }
  MatchState s;
  for (int32_t id : grammar_->symbols) {
    s.assign(state_);
    if (s.feed(*grammar_, guided::kSymbolBase + static_cast<guided::Unit>(id))) allowed_ids_.push_back(id);
  }
  auto m = std::make_shared<guided::CachedMask>();
  m->vocab = idx.vocab;
  m->allowed_list = allowed_ids_.size() <= idx.vocab - allowed_ids_.size();
  if (m->allowed_list) {
    m->ids = allowed_ids_;
  } else {
    std::fill(allowed_.begin(), allowed_.end(), 0);
    for (int32_t id : allowed_ids_) allowed_[id] = 1;
    m->ids.reserve(idx.vocab - allowed_ids_.size());
    for (size_t id = 0; id < idx.vocab; ++id)
      if (!allowed_[id]) m->ids.push_back(static_cast<int32_t>(id));
  }
  return m;
}

void GuidedConstraint::mask(std::span<float> logits) {
  const auto t0 = std::chrono::steady_clock::now();
  if (state_.done()) {
    // The engine stops at complete(); should it still ask, only EOS keeps the mask non-empty.
    const int32_t eos = tok_.eos_id();
    for (size_t i = 0; i < logits.size(); ++i)
      if (static_cast<int32_t>(i) != eos) logits[i] = -std::numeric_limits<float>::infinity();
  } else {
    // A token is at most max_len units (an added token is one), so that is the key's reach.
    key_.assign(reinterpret_cast<const char*>(&grammar_uid_), sizeof(grammar_uid_));
    state_.signature(*grammar_, static_cast<uint32_t>(std::max<size_t>(index_->max_len, 1)), &key_);
    guided::MaskCache& cache = guided::MaskCache::instance();
    std::shared_ptr<const guided::CachedMask> m = cache.find(key_);
    if (m) {
      ++mask_cache_hits_;
    } else {
      m = walk_mask();
      cache.insert(key_, m);
    }
    apply_mask(*m, logits, &kept_);
  }
  ++mask_calls_;
  mask_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void GuidedConstraint::accept(int32_t id) {
  DSEEK_CHECK(!state_.done(), "guided decoding: token {} after the constrained text is complete", id);
  DSEEK_CHECK(feed_token(&state_, id), "guided decoding: token {} is not allowed here", id);
  if (index_->symbol[id]) text_ += tok_.id_to_token(id);
  else text_ += *tok_.token_bytes(id);
}

namespace {

struct ToolSpec {
  std::string name;
  const OrderedJson* parameters = nullptr;
};

Expected<std::vector<ToolSpec>> read_tools(const OrderedJson& tools, const std::string& only_name) {
  if (!tools.is_array()) return Status::error("tools: expected an array of tools");
  std::vector<ToolSpec> specs;
  for (size_t i = 0; i < tools.size(); ++i) {
    const OrderedJson& t = tools[i];
    if (!t.is_object()) return Status::errorf("tools[{}]: expected an object", i);
    if (t.contains("type") && t["type"] != "function")
      return Status::errorf("tools[{}].type: expected \"function\"", i);
    if (!t.contains("function") || !t["function"].is_object())
      return Status::errorf("tools[{}].function: expected an object", i);
    const OrderedJson& f = t["function"];
    if (!f.contains("name") || !f["name"].is_string())
      return Status::errorf("tools[{}].function.name: expected a string", i);
    ToolSpec spec;
    spec.name = f["name"].get<std::string>();
    if (!guided::valid_function_name(spec.name))
      return Status::errorf("tools[{}].function.name: '{}' must be 1-256 letters, digits, '_', '-', '.' or ':'", i,
                            spec.name);
    if (f.contains("parameters") && !f["parameters"].is_null()) {
      const OrderedJson& p = f["parameters"];
      if (!p.is_object()) return Status::errorf("tools[{}].function.parameters: expected a JSON schema object", i);
      if (p.contains("type") && p["type"] != "object")
        return Status::errorf("tools[{}].function.parameters.type: expected \"object\"", i);
      spec.parameters = &p;
    }
    if (only_name.empty() || spec.name == only_name) specs.push_back(spec);
  }
  if (!only_name.empty() && specs.empty())
    return Status::errorf("tool_choice: no function named '{}' in tools", only_name);
  if (specs.empty()) return Status::error("tools: expected at least one function");
  return specs;
}

}  // namespace

Expected<std::shared_ptr<TokenConstraint>> make_tool_call_constraint(ChatFormat format, const tokenizer::Tokenizer& tok,
                                                                     const OrderedJson& tools,
                                                                     const std::string& only_name,
                                                                     const GuidedLimits& limits) {
  DSEEK_ASSIGN_OR_RETURN(std::vector<ToolSpec> specs, read_tools(tools, only_name));
  auto index = guided::index_for(tok);
  auto g = std::make_shared<Grammar>();
  g->limits = limits;
  guided::LiteralMaker lit(tok, *index, g.get());
  guided::SchemaCompiler compiler(g.get(), lit);
  using namespace tokenizer;  // the marker constants
  const std::string dsml = kDsml;

  std::vector<Units> names;
  std::vector<int32_t> bodies, tags;
  for (size_t i = 0; i < specs.size(); ++i) {
    // Positions in the original tools array name the schema in errors.
    size_t pos = 0;
    while (tools[pos]["function"]["name"] != specs[i].name) ++pos;
    const std::string path = fmt::format("tools[{}].function.parameters", pos);
    int32_t body;
    if (format == ChatFormat::kV32) {
      DSEEK_ASSIGN_OR_RETURN(int32_t args, compiler.dsml_arguments(specs[i].parameters, path));
      body = g->add_seq({g->add_literal(lit("\">")), args, g->add_literal(lit("\n</" + dsml + "function_calls>"))});
    } else {
      DSEEK_ASSIGN_OR_RETURN(int32_t args, compiler.object(specs[i].parameters, path, 0));
      const std::string open = format == ChatFormat::kV31 ? std::string(kToolSep) : "\n```json\n";
      const std::string close = std::string(format == ChatFormat::kV31 ? "" : "\n```") + kToolCallEnd + kToolCallsEnd;
      body = g->add_seq({g->add_literal(lit(open)), args, g->add_literal(lit(close))});
    }
    names.push_back(guided::bytes_to_units(specs[i].name));
    bodies.push_back(body);
    tags.push_back(-1);
  }
  const int32_t name_choice = g->add_choice(std::move(names), std::move(bodies), std::move(tags));
  std::string prefix;
  switch (format) {
    case ChatFormat::kR1:
      prefix = std::string(kThinkEnd) + "\n\n" + kToolCallsBegin + kToolCallBegin + "function" + kToolSep;
      break;
    case ChatFormat::kV3:
      prefix = std::string(kToolCallsBegin) + kToolCallBegin + "function" + kToolSep;
      break;
    case ChatFormat::kV31:
      prefix = std::string(kToolCallsBegin) + kToolCallBegin;
      break;
    case ChatFormat::kV32:
      prefix = "\n\n<" + dsml + "function_calls>\n<" + dsml + "invoke name=\"";
      break;
  }
  g->root = g->add_seq({g->add_literal(lit(prefix)), name_choice});
  return std::shared_ptr<TokenConstraint>(std::make_shared<GuidedConstraint>(tok, index, std::move(g)));
}

Expected<std::shared_ptr<TokenConstraint>> make_json_constraint(const tokenizer::Tokenizer& tok,
                                                                const OrderedJson* schema,
                                                                const GuidedLimits& limits) {
  if (schema != nullptr && !schema->is_object())
    return Status::error("json_schema.schema: expected a JSON schema object");
  auto index = guided::index_for(tok);
  auto g = std::make_shared<Grammar>();
  g->limits = limits;
  guided::SchemaCompiler compiler(g.get(), guided::bytes_to_units);
  int32_t value;
  if (schema == nullptr) {
    DSEEK_ASSIGN_OR_RETURN(value, compiler.object(nullptr, "json_schema.schema", 0));
  } else {
    DSEEK_ASSIGN_OR_RETURN(value, compiler.value(schema, "json_schema.schema", 0));
  }
  g->root = compiler.self_delimiting(value) ? value : g->add_seq({value, g->add_literal(guided::bytes_to_units("\n"))});
  return std::shared_ptr<TokenConstraint>(std::make_shared<GuidedConstraint>(tok, index, std::move(g)));
}

}  // namespace dseek::serve
