// The guided-decoding matcher (see guided_grammar.h). Frames are popped as soon as they can take
// nothing more, so done() is exact; a frame that may end or go on (a number, a choice whose
// candidate is complete but also a prefix of a longer one) stays until a unit it cannot take
// arrives, then hands that unit to its parent (Step::kPop). The grammars built in guided.cc
// keep that unambiguous: what may follow such a value never starts like its own extension.
#include "serve/guided_grammar.h"

#include <algorithm>
#include <numeric>

#include "base/check.h"

namespace dseek::serve::guided {
namespace {

constexpr uint8_t kDone = 255;
constexpr uint32_t kFullwidthBar = 0xFF5C;  // "｜": every DeepSeek marker starts "<｜" or "</｜"

bool is_digit(Unit u) { return u >= '0' && u <= '9'; }
bool is_hex(Unit u) { return is_digit(u) || (u >= 'a' && u <= 'f') || (u >= 'A' && u <= 'F'); }

}  // namespace

int32_t Grammar::add_choice(std::vector<Units> cands, std::vector<int32_t> conts, std::vector<int32_t> tags) {
  DSEEK_CHECK(cands.size() == conts.size() && cands.size() == tags.size() && !cands.empty());
  std::vector<size_t> order(cands.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return cands[x] < cands[y]; });
  Node n;
  n.kind = NodeKind::kChoice;
  for (size_t i : order) {
    DSEEK_CHECK(!cands[i].empty(), "empty choice candidate");
    if (!n.cands.empty() && n.cands.back() == cands[i]) continue;
    n.cands.push_back(cands[i]);
    n.conts.push_back(conts[i]);
    n.tags.push_back(tags[i]);
  }
  return add(std::move(n));
}

int32_t Grammar::add_seq(std::vector<int32_t> children) {
  Node n;
  n.kind = NodeKind::kSeq;
  n.children = std::move(children);
  return add(std::move(n));
}

int32_t Grammar::any_at(int32_t depth) {
  if (static_cast<int32_t>(any_by_depth_.size()) > depth && any_by_depth_[depth] >= 0) return any_by_depth_[depth];
  int32_t obj = -1, arr = -1;
  if (depth < limits.max_depth) {
    const int32_t inner = any_at(depth + 1);
    Node key;
    key.kind = NodeKind::kString;
    key.max_len = limits.max_string_chars;
    const int32_t key_id = add(std::move(key));
    Node o;
    o.kind = NodeKind::kFreeObject;
    o.key_node = key_id;
    o.item = inner;
    o.max_items = limits.max_object_keys;
    obj = add(std::move(o));
    Node a;
    a.kind = NodeKind::kArray;
    a.item = inner;
    a.max_items = limits.max_array_items;
    arr = add(std::move(a));
  }
  Node s;
  s.kind = NodeKind::kString;
  s.max_len = limits.max_string_chars;
  const int32_t str = add(std::move(s));
  Node num;
  num.kind = NodeKind::kNumber;
  const int32_t num_id = add(std::move(num));
  const int32_t lits = add_choice({bytes_to_units("true"), bytes_to_units("false"), bytes_to_units("null")},
                                  {-1, -1, -1}, {-1, -1, -1});
  Node any;
  any.kind = NodeKind::kAny;
  any.depth = depth;
  any.children = {str, num_id, lits, obj, arr};
  const int32_t id = add(std::move(any));
  if (static_cast<int32_t>(any_by_depth_.size()) <= depth) any_by_depth_.resize(depth + 1, -1);
  any_by_depth_[depth] = id;
  return id;
}

namespace {

void put(std::string* out, uint32_t v) { out->append(reinterpret_cast<const char*>(&v), sizeof(v)); }

void put_units(std::string* out, const Units& u) {
  put(out, static_cast<uint32_t>(u.size()));
  for (Unit x : u) put(out, x);
}

void put_ints(std::string* out, const std::vector<int32_t>& v) {
  put(out, static_cast<uint32_t>(v.size()));
  for (int32_t x : v) put(out, static_cast<uint32_t>(x));
}

// bound - counter, clamped to [0, reach + 1]: while at most `reach` increments can happen,
// every distance above reach compares alike ("never reached"), as does every one at or below 0.
uint32_t distance(int64_t bound, int64_t counter, uint32_t reach) {
  return static_cast<uint32_t>(std::clamp<int64_t>(bound - counter, 0, int64_t{reach} + 1));
}

}  // namespace

std::string Grammar::fingerprint() const {
  // Every Node field that step() reads must be here, or two different grammars could share masks.
  std::string out;
  put(&out, static_cast<uint32_t>(root));
  for (int32_t v : {limits.max_string_chars, limits.max_number_digits, limits.max_array_items,
                    limits.max_object_keys, limits.max_depth, limits.max_total_bytes})
    put(&out, static_cast<uint32_t>(v));
  put_ints(&out, symbols);
  put(&out, static_cast<uint32_t>(nodes.size()));
  for (const Node& n : nodes) {
    put(&out, static_cast<uint32_t>(n.kind));
    put(&out, static_cast<uint32_t>(n.cands.size()));
    for (const Units& c : n.cands) put_units(&out, c);
    put_ints(&out, n.conts);
    put_ints(&out, n.tags);
    put_ints(&out, n.children);
    put(&out, n.raw);
    put_units(&out, n.close);
    for (int32_t v : {n.min_len, n.max_len, n.item, n.min_items, n.max_items, n.key_node, n.depth})
      put(&out, static_cast<uint32_t>(v));
    put(&out, n.integer);
    put(&out, n.nonneg);
  }
  return out;
}

void MatchState::signature(const Grammar& g, uint32_t horizon, std::string* out) const {
  // fed_ only matters through closing(): one increment per unit consumed.
  put(out, distance(g.limits.max_total_bytes, fed_, horizon));
  put(out, static_cast<uint32_t>(frames_.size()));
  for (const Frame& f : frames_) {
    const Node& n = g.nodes[f.node];
    put(out, static_cast<uint32_t>(f.node));
    put(out, f.phase);
    switch (n.kind) {
      case NodeKind::kChoice:  // a, b, c index candidates and units: bounded, kept exactly
        put(out, f.a);
        put(out, f.b);
        put(out, f.c);
        break;
      case NodeKind::kSeq:
      case NodeKind::kObject:
        put(out, f.a);
        break;
      case NodeKind::kString: {
        // a counts characters; held closing units (raw, f.c) are re-counted as content all
        // at once, so they can add close.size() increments on top of one per unit.
        const uint32_t reach = horizon + static_cast<uint32_t>(n.close.size());
        put(out, distance(n.max_len, f.a, reach));
        put(out, distance(n.min_len, f.a, reach));
        put(out, f.c);
        put(out, f.lt);
        put(out, f.esc);
        put(out, f.esc == 3 ? f.b : 0);  // b: the \uD... surrogate flag, read at esc == 3 only
        put(out, f.need);
        if (f.need > 0) {  // cp, lo, hi describe the character being decoded, else stale
          put(out, f.cp);
          put(out, f.lo);
          put(out, f.hi);
        }
        break;
      }
      case NodeKind::kNumber: {
        const uint32_t cap = static_cast<uint32_t>(g.limits.max_number_digits);
        put(out, (f.phase == 2 || f.phase == 5) ? distance(cap, f.a, horizon) : 0);  // digit count
        put(out, f.phase == 8 ? f.b : 0);  // exponent digits
        break;
      }
      case NodeKind::kArray:
        put(out, distance(n.min_items, f.a, horizon));
        put(out, distance(n.max_items, f.a, horizon));
        break;
      case NodeKind::kFreeObject:
        put(out, distance(n.max_items, f.a, horizon));
        break;
      case NodeKind::kAny:
      case NodeKind::kUnion:  // replaced on their first unit: nothing but the node
        break;
    }
  }
}

MatchState::MatchState(const Grammar& g) {
  frames_.reserve(32);
  Frame f;
  f.node = g.root;
  frames_.push_back(f);
  push_init(g, frames_.back());
}

void MatchState::push_init(const Grammar& g, Frame& f) {
  const Node& n = g.nodes[f.node];
  if (n.kind == NodeKind::kChoice) f.b = static_cast<uint32_t>(n.cands.size());
  if (n.kind == NodeKind::kString && n.raw) f.phase = 1;
}

void MatchState::push(const Grammar& g, int32_t node) {
  Frame f;
  f.node = node;
  frames_.push_back(f);
  push_init(g, frames_.back());
}

void MatchState::replace_top(const Grammar& g, int32_t node) {
  frames_.pop_back();
  push(g, node);
}

void MatchState::notify_parent(const Grammar& g, int32_t tag) {
  if (frames_.size() < 2 || tag == -1) return;
  Frame& p = frames_[frames_.size() - 2];
  if (g.nodes[p.node].kind != NodeKind::kObject) return;
  if (tag == kCloseTag) p.phase = kDone;
  else p.a = static_cast<uint32_t>(tag) + 1;
}

bool MatchState::finished(const Grammar& g, const Frame& f) const {
  const Node& n = g.nodes[f.node];
  if (n.kind == NodeKind::kSeq) return f.a >= n.children.size();
  return f.phase == kDone;
}

void MatchState::settle(const Grammar& g) {
  while (!frames_.empty() && finished(g, frames_.back())) frames_.pop_back();
}

bool MatchState::feed(const Grammar& g, Unit u) {
  // Each pass either consumes u, rejects it, or pops/pushes a frame; pushes happen only on a
  // frame's first unit, so the loop is bounded by the stack depth plus the grammar's nesting.
  for (int guard = 0; guard < 4096; ++guard) {
    if (frames_.empty()) return false;
    switch (step(g, frames_.back(), u)) {
      case Step::kAccept:
        ++fed_;
        settle(g);
        return true;
      case Step::kReject:
        return false;
      case Step::kPop:
        frames_.pop_back();
        break;
      case Step::kRetry:
        break;
    }
  }
  DSEEK_CHECK(false, "guided grammar loops without consuming input");
  return false;
}

MatchState::Step MatchState::step(const Grammar& g, Frame& f, Unit u) {
  const Node& n = g.nodes[f.node];
  switch (n.kind) {
    case NodeKind::kChoice:
      return step_choice(g, n, f, u);
    case NodeKind::kSeq: {
      if (f.a >= n.children.size()) return Step::kPop;
      const int32_t child = n.children[f.a++];
      push(g, child);  // f is dangling from here on
      return Step::kRetry;
    }
    case NodeKind::kString:
      return step_string(g, n, f, u);
    case NodeKind::kNumber:
      return step_number(g, n, f, u);
    case NodeKind::kArray:
      return step_array(g, n, f, u);
    case NodeKind::kObject: {
      if (f.phase == kDone) return Step::kPop;
      push(g, n.children[f.a]);
      return Step::kRetry;
    }
    case NodeKind::kFreeObject:
      return step_free_object(g, n, f, u);
    case NodeKind::kAny: {
      int32_t next = -1;
      if (u == '"') next = n.children[0];
      else if (u == '-' || is_digit(u)) next = n.children[1];
      else if (u == 't' || u == 'f' || u == 'n') next = n.children[2];
      else if (u == '{' && !closing(g)) next = n.children[3];
      else if (u == '[' && !closing(g)) next = n.children[4];
      if (next < 0) return Step::kReject;
      replace_top(g, next);
      return Step::kRetry;
    }
    case NodeKind::kUnion: {
      const int32_t next = u < n.children.size() ? n.children[u] : -1;
      if (next < 0) return Step::kReject;
      replace_top(g, next);
      return Step::kRetry;
    }
  }
  return Step::kReject;
}

MatchState::Step MatchState::step_choice(const Grammar& g, const Node& n, Frame& f, Unit u) {
  const uint32_t lo = f.a, hi = f.b, pos = f.c;
  const uint32_t first = n.cands[lo].size() == pos ? lo + 1 : lo;
  // Candidates in [first, hi) share units [0, pos) and are sorted, so those with u at pos are
  // one contiguous run.
  auto begin = n.cands.begin() + first, end = n.cands.begin() + hi;
  auto run_lo = std::partition_point(begin, end, [&](const Units& c) { return c[pos] < u; });
  auto run_hi = std::partition_point(run_lo, end, [&](const Units& c) { return c[pos] == u; });
  if (run_lo != run_hi) {
    f.a = static_cast<uint32_t>(run_lo - n.cands.begin());
    f.b = static_cast<uint32_t>(run_hi - n.cands.begin());
    f.c = pos + 1;
    if (f.b - f.a == 1 && n.cands[f.a].size() == f.c) {
      const uint32_t k = f.a;
      notify_parent(g, n.tags[k]);
      if (n.conts[k] >= 0) replace_top(g, n.conts[k]);
      else f.phase = kDone;
    }
    return Step::kAccept;
  }
  if (n.cands[lo].size() == pos) {  // lo is complete; u belongs to what follows it
    notify_parent(g, n.tags[lo]);
    if (n.conts[lo] >= 0) {
      replace_top(g, n.conts[lo]);
      return Step::kRetry;
    }
    return Step::kPop;
  }
  return Step::kReject;
}

MatchState::Step MatchState::step_text(const Grammar& g, const Node& n, Frame& f, Unit u) {
  if (u >= kSymbolBase) return Step::kReject;
  if (f.need > 0) {
    if (u < f.lo || u > f.hi) return Step::kReject;
    f.cp = (f.cp << 6) | (u & 0x3F);
    f.lo = 0x80;
    f.hi = 0xBF;
    if (--f.need == 0) {
      if (f.cp == kFullwidthBar && f.lt) return Step::kReject;
      f.lt = 0;
    }
    return Step::kAccept;
  }
  const bool at_cap = static_cast<int32_t>(f.a) >= n.max_len || (closing(g) && static_cast<int32_t>(f.a) >= n.min_len);
  if (at_cap) return Step::kReject;
  if (u < 0x80) {
    if (u < 0x20 && !(n.raw && (u == '\n' || u == '\t'))) return Step::kReject;
    f.lt = u == '<' ? 1 : (u == '/' && f.lt == 1) ? 2 : 0;
    ++f.a;
    return Step::kAccept;
  }
  uint8_t lo = 0x80, hi = 0xBF;
  if (u >= 0xC2 && u <= 0xDF) {
    f.need = 1;
    f.cp = u & 0x1F;
  } else if (u >= 0xE0 && u <= 0xEF) {
    f.need = 2;
    f.cp = u & 0x0F;
    if (u == 0xE0) lo = 0xA0;
    if (u == 0xED) hi = 0x9F;  // no UTF-16 surrogates
  } else if (u >= 0xF0 && u <= 0xF4) {
    f.need = 3;
    f.cp = u & 0x07;
    if (u == 0xF0) lo = 0x90;
    if (u == 0xF4) hi = 0x8F;
  } else {
    return Step::kReject;
  }
  f.lo = lo;
  f.hi = hi;
  ++f.a;
  return Step::kAccept;
}

MatchState::Step MatchState::step_string(const Grammar& g, const Node& n, Frame& f, Unit u) {
  if (n.raw) {
    // Raw text ends with the closing literal. Units that start it are held as "maybe the close"
    // (f.c of them); if the literal breaks off they are content after all, and are re-checked
    // as such. Content never holds "<｜" or "</｜", so once those are seen it is the close.
    const Units& close = n.close;
    const bool may_close = f.c > 0 || static_cast<int32_t>(f.a) >= n.min_len;
    if (f.need == 0 && f.c < close.size() && u == close[f.c] && may_close) {
      if (++f.c == close.size()) f.phase = kDone;
      return Step::kAccept;
    }
    const uint32_t held = f.c;
    f.c = 0;
    for (uint32_t i = 0; i < held; ++i)
      if (step_text(g, n, f, close[i]) != Step::kAccept) return Step::kReject;
    return step_text(g, n, f, u);
  }
  if (f.phase == 0) {
    if (u != '"') return Step::kReject;
    f.phase = 1;
    return Step::kAccept;
  }
  if (f.esc == 1) {  // after a backslash (counted as the character)
    f.lt = 0;
    if (u == 'u') {
      f.esc = 2;
      return Step::kAccept;
    }
    if (u == '"' || u == '\\' || u == '/' || u == 'b' || u == 'f' || u == 'n' || u == 'r' || u == 't') {
      f.esc = 0;
      return Step::kAccept;
    }
    return Step::kReject;
  }
  if (f.esc >= 2) {  // \uXXXX: hex digit esc-2 of 4; no surrogates (raw UTF-8 covers them)
    if (!is_hex(u)) return Step::kReject;
    if (f.esc == 2) f.b = (u == 'd' || u == 'D');
    if (f.esc == 3 && f.b && !(u >= '0' && u <= '7')) return Step::kReject;
    f.esc = f.esc == 5 ? 0 : f.esc + 1;
    return Step::kAccept;
  }
  if (f.need == 0) {
    if (u == '"') {
      if (static_cast<int32_t>(f.a) < n.min_len) return Step::kReject;
      f.phase = kDone;
      return Step::kAccept;
    }
    if (u == '\\') {
      const bool at_cap =
          static_cast<int32_t>(f.a) >= n.max_len || (closing(g) && static_cast<int32_t>(f.a) >= n.min_len);
      if (at_cap) return Step::kReject;
      f.esc = 1;
      ++f.a;
      return Step::kAccept;
    }
  }
  return step_text(g, n, f, u);
}

MatchState::Step MatchState::step_number(const Grammar& g, const Node& n, Frame& f, Unit u) {
  const uint32_t cap = static_cast<uint32_t>(g.limits.max_number_digits);
  const bool more = !closing(g);
  switch (f.phase) {
    case 0:  // start
      if (u == '-' && !n.nonneg) {
        f.phase = 1;
        return Step::kAccept;
      }
      [[fallthrough]];
    case 1:  // after '-'
      if (u == '0') {
        f.phase = 3;
        return Step::kAccept;
      }
      if (u >= '1' && u <= '9') {
        f.phase = 2;
        f.a = 1;
        return Step::kAccept;
      }
      return Step::kReject;
    case 2:  // integer digits
      if (is_digit(u) && f.a < cap && more) {
        ++f.a;
        return Step::kAccept;
      }
      [[fallthrough]];
    case 3:  // integer part complete
      if (!n.integer && more && u == '.') {
        f.phase = 4;
        return Step::kAccept;
      }
      if (!n.integer && more && (u == 'e' || u == 'E')) {
        f.phase = 6;
        return Step::kAccept;
      }
      return Step::kPop;
    case 4:  // after '.'
      if (!is_digit(u)) return Step::kReject;
      f.phase = 5;
      f.a = 1;
      return Step::kAccept;
    case 5:  // fraction digits
      if (is_digit(u) && f.a < cap && more) {
        ++f.a;
        return Step::kAccept;
      }
      if (more && (u == 'e' || u == 'E')) {
        f.phase = 6;
        return Step::kAccept;
      }
      return Step::kPop;
    case 6:  // after 'e'
      if (u == '+' || u == '-') {
        f.phase = 7;
        return Step::kAccept;
      }
      [[fallthrough]];
    case 7:  // exponent sign
      if (!is_digit(u)) return Step::kReject;
      f.phase = 8;
      f.b = 1;
      return Step::kAccept;
    case 8:  // exponent digits: two at most keeps the value a finite double
      if (is_digit(u) && f.b < 2 && more) {
        ++f.b;
        return Step::kAccept;
      }
      return Step::kPop;
  }
  return Step::kReject;
}

MatchState::Step MatchState::step_array(const Grammar& g, const Node& n, Frame& f, Unit u) {
  const uint32_t count = f.a;
  const bool enough = static_cast<int32_t>(count) >= n.min_items;
  const bool room = static_cast<int32_t>(count) < n.max_items && !(closing(g) && enough);
  switch (f.phase) {
    case 0:
      if (u != '[') return Step::kReject;
      f.phase = 1;
      return Step::kAccept;
    case 1:  // after '['
      if (u == ']' && enough) {
        f.phase = kDone;
        return Step::kAccept;
      }
      if (!room) return Step::kReject;
      [[fallthrough]];
    case 4:  // after ", ": an item
      f.a = count + 1;
      f.phase = 2;
      push(g, n.item);
      return Step::kRetry;
    case 2:  // after an item
      if (u == ']' && enough) {
        f.phase = kDone;
        return Step::kAccept;
      }
      if (u == ',' && room) {
        f.phase = 3;
        return Step::kAccept;
      }
      return Step::kReject;
    case 3:
      if (u != ' ') return Step::kReject;
      f.phase = 4;
      return Step::kAccept;
  }
  return Step::kReject;
}

MatchState::Step MatchState::step_free_object(const Grammar& g, const Node& n, Frame& f, Unit u) {
  const bool room = static_cast<int32_t>(f.a) < n.max_items && !closing(g);
  switch (f.phase) {
    case 0:
      if (u != '{') return Step::kReject;
      f.phase = 1;
      return Step::kAccept;
    case 1:  // after '{'
      if (u == '}') {
        f.phase = kDone;
        return Step::kAccept;
      }
      if (u != '"' || !room) return Step::kReject;
      [[fallthrough]];
    case 7:  // after ", ": a key
      ++f.a;
      f.phase = 2;
      push(g, n.key_node);
      return Step::kRetry;
    case 2:  // after a key
      if (u != ':') return Step::kReject;
      f.phase = 3;
      return Step::kAccept;
    case 3:
      if (u != ' ') return Step::kReject;
      f.phase = 4;
      return Step::kAccept;
    case 4:  // the value
      f.phase = 5;
      push(g, n.item);
      return Step::kRetry;
    case 5:  // after a value
      if (u == '}') {
        f.phase = kDone;
        return Step::kAccept;
      }
      if (u == ',' && room) {
        f.phase = 6;
        return Step::kAccept;
      }
      return Step::kReject;
    case 6:
      if (u != ' ') return Step::kReject;
      f.phase = 7;
      return Step::kAccept;
  }
  return Step::kReject;
}

}  // namespace dseek::serve::guided
