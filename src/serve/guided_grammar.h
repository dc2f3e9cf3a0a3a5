// The byte-level pushdown matcher behind guided decoding (guided.h). A grammar is a small graph
// of nodes (literal/choice strings, JSON strings, numbers, arrays, objects, free-form values);
// a MatchState is a stack of frames walking it. Input is a stream of units: a byte (0..255) or
// a symbol (kSymbolBase + token id) for an added token such as <｜tool▁sep｜>, which is only
// ever matched as that single token, never spelled out in bytes.
//
// Every state accepts at least one unit (the grammar has no dead ends), and every unbounded
// choice has a cap: at a cap, and everywhere once the total budget is spent, only the shortest
// way to close the value is accepted, so any token sequence the matcher allows ends.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dseek::serve::guided {

using Unit = uint32_t;
inline constexpr Unit kSymbolBase = 256;
using Units = std::basic_string<Unit>;

inline Units bytes_to_units(std::string_view s) {
  Units u;
  for (unsigned char c : s) u.push_back(c);
  return u;
}

enum class NodeKind : uint8_t {
  kChoice,      // one of several unit strings, each with an optional continuation node
  kSeq,         // children in order
  kString,      // JSON string "..." (or raw text up to a closing literal)
  kNumber,      // JSON number or integer
  kArray,       // [item, item] with Python-style ", " separators
  kObject,      // schema object: keys chosen by per-position choice nodes
  kFreeObject,  // {"any key": value, ...}
  kAny,         // any JSON value (free-form), dispatched on its first byte
  kUnion,       // children[b] = the alternative that starts with byte b (-1: none)
};

struct Limits {
  int32_t max_string_chars = 1024;  // characters of one string (an escape counts as one)
  int32_t max_number_digits = 15;   // integer digits, and fraction digits
  int32_t max_array_items = 64;     // items of one array (raised to minItems when larger)
  int32_t max_object_keys = 32;     // keys of one free-form object
  int32_t max_depth = 6;            // nesting of free-form values
  int32_t max_total_bytes = 16384;  // after this many units, every value closes the shortest way
};

struct Node {
  NodeKind kind = NodeKind::kAny;
  // kChoice: candidates sorted, distinct; conts[i] = node to continue with (-1: none); tags[i]
  // is reported to the parent frame when candidate i is chosen (kObject uses it).
  std::vector<Units> cands;
  std::vector<int32_t> conts;
  std::vector<int32_t> tags;
  // kSeq: children. kObject: choice node per position (0 = before the first key; k = after the
  // key with tag k-1 was chosen).
  std::vector<int32_t> children;
  // kString: raw = no quotes or escapes, ends with `close` (units); min/max content bytes.
  bool raw = false;
  Units close;
  int32_t min_len = 0, max_len = 0;  // characters
  // kNumber.
  bool integer = false;
  bool nonneg = false;  // no leading '-' (schema minimum >= 0)
  // kArray / kFreeObject: item/value node; counts.
  int32_t item = -1;
  int32_t min_items = 0, max_items = 0;
  int32_t key_node = -1;  // kFreeObject: the key string node
  // kAny: nesting depth of this value.
  int32_t depth = 0;
};

inline constexpr int32_t kCloseTag = -2;

struct Grammar {
  std::vector<Node> nodes;
  int32_t root = -1;
  Limits limits;
  std::vector<int32_t> symbols;  // token ids the grammar uses as symbol units

  int32_t add(Node n) {
    nodes.push_back(std::move(n));
    return static_cast<int32_t>(nodes.size()) - 1;
  }
  // A choice node; sorts and de-duplicates candidates (first one of equal strings wins).
  int32_t add_choice(std::vector<Units> cands, std::vector<int32_t> conts, std::vector<int32_t> tags);
  int32_t add_literal(Units u) { return add_choice({std::move(u)}, {-1}, {-1}); }
  int32_t add_seq(std::vector<int32_t> children);
  // The free-form value node at `depth` (memoized).
  int32_t any_at(int32_t depth);
  // Everything matching depends on (nodes, root, limits, symbols) as bytes: equal fingerprints
  // match alike, so masks cached for one grammar serve every request that builds the same.
  std::string fingerprint() const;

 private:
  std::vector<int32_t> any_by_depth_;
};

struct Frame {
  int32_t node = 0;
  uint32_t a = 0, b = 0, c = 0;  // node-specific counters
  uint32_t cp = 0;               // kString: code point being decoded
  uint8_t phase = 0;
  uint8_t need = 0, lo = 0, hi = 0;  // kString: UTF-8 continuation bytes left, next byte range
  uint8_t lt = 0;                    // kString: 1 after '<', 2 after "</" (markers start so)
  uint8_t esc = 0;                   // kString: escape phase
};

class MatchState {
 public:
  MatchState() = default;
  explicit MatchState(const Grammar& g);
  // Consumes one unit; false (and the state is then unspecified) if the grammar rejects it.
  bool feed(const Grammar& g, Unit u);
  bool done() const { return frames_.empty(); }
  size_t depth() const { return frames_.size(); }
  // Copy without reallocating when capacity allows (the mask walk copies states a lot).
  void assign(const MatchState& o) {
    frames_.assign(o.frames_.begin(), o.frames_.end());
    fed_ = o.fed_;
  }
  // Appends to *out a canonical key of this state such that states with equal keys accept
  // exactly the same unit strings of at most `horizon` units (a token is at most that long):
  // a counter that is only ever compared with a bound is kept as its distance to the bound,
  // clamped where no such string can reach the bound, and fields left over from an earlier
  // character or escape are dropped. Inside a long free string the key then stops changing,
  // which is what lets the mask cache (guided.cc) hit.
  void signature(const Grammar& g, uint32_t horizon, std::string* out) const;

 private:
  enum class Step : uint8_t { kAccept, kReject, kPop, kRetry };
  Step step(const Grammar& g, Frame& f, Unit u);
  Step step_choice(const Grammar& g, const Node& n, Frame& f, Unit u);
  Step step_string(const Grammar& g, const Node& n, Frame& f, Unit u);
  Step step_text(const Grammar& g, const Node& n, Frame& f, Unit u);  // one content unit of a string
  Step step_number(const Grammar& g, const Node& n, Frame& f, Unit u);
  Step step_array(const Grammar& g, const Node& n, Frame& f, Unit u);
  Step step_free_object(const Grammar& g, const Node& n, Frame& f, Unit u);
  void push_init(const Grammar& g, Frame& f);
  void push(const Grammar& g, int32_t node);
  void replace_top(const Grammar& g, int32_t node);
  // A choice reports its chosen candidate's tag to the frame below it (a kObject).
  void notify_parent(const Grammar& g, int32_t tag);
  bool finished(const Grammar& g, const Frame& f) const;
  void settle(const Grammar& g);
  bool closing(const Grammar& g) const { return fed_ >= static_cast<uint32_t>(g.limits.max_total_bytes); }

  std::vector<Frame> frames_;
  uint32_t fed_ = 0;
};

}  // namespace dseek::serve::guided
