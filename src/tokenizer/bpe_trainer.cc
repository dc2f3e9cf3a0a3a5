// Word counting and BPE merge learning (see bpe_trainer.h).
#include "tokenizer/bpe_trainer.h"

#include <algorithm>
#include <atomic>
#include <queue>
#include <thread>

#include "base/check.h"
#include "base/timer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace dseek::tokenizer {

// ---------------------------------------------------------------------------------------------
// Word counting

// Why a chunk may end after '\n' when the next byte X is printable, non-space ASCII: in
// DeepSeek-V3's rules no match contains '\n' followed by a non-space character (\p{N}{1,3} and
// the CJK rule contain no '\n'; in the main rule only ` ?[\p{P}\p{S}]+[\r\n]*`, `\s*[\r\n]+` and
// the whitespace alternatives contain '\n', and they end at it or continue with whitespace
// only), so a piece always starts at X. The pieces before X are the same when the text is cut
// there: the only lookahead, `\s+(?!\S)`, is never reached for a whitespace run ending in '\n'
// because `\s*[\r\n]+` is tried first and matches it. Tested by counting with tiny chunks.
std::vector<size_t> chunk_ends(std::string_view text, size_t chunk_bytes) {
  std::vector<size_t> ends;
  size_t start = 0;
  chunk_bytes = std::max<size_t>(chunk_bytes, 1);
  while (text.size() - start > chunk_bytes) {
    size_t pos = start + chunk_bytes;
    size_t cut = std::string_view::npos;
    while (true) {
      size_t nl = text.find('\n', pos - 1);
      if (nl == std::string_view::npos || nl + 1 >= text.size()) break;
      unsigned char x = static_cast<unsigned char>(text[nl + 1]);
      if (x > 0x20 && x < 0x7F) {
        cut = nl + 1;
        break;
      }
      pos = nl + 2;
    }
    if (cut == std::string_view::npos) break;
    ends.push_back(cut);
    start = cut;
  }
  ends.push_back(text.size());
  return ends;
}

WordCounter::WordCounter(const PreTokenizer& pre, int threads, size_t chunk_bytes)
    : pre_(pre), threads_(threads), chunk_bytes_(chunk_bytes) {
  if (threads_ <= 0) threads_ = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

Status WordCounter::add_file(const std::string& path) {
  DSEEK_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  if (text.empty()) return Status::errorf("{}: empty corpus file", path);
  return add_text(text, path);
}

Status WordCounter::add_text(std::string_view text, const std::string& source) {
  size_t bad = utf8_find_invalid(text);
  if (bad != std::string_view::npos)
    return Status::errorf("{}: not valid UTF-8 (byte 0x{:02X} at offset {})", source,
                          static_cast<unsigned char>(text[bad]), bad);
  const std::vector<size_t> ends = chunk_ends(text, chunk_bytes_);
  const int n_threads = static_cast<int>(std::min<size_t>(threads_, ends.size()));
  // Per-thread counts keyed by views into `text`; folded into counts_ once at the end.
  std::vector<std::unordered_map<std::string_view, uint64_t>> local(n_threads);
  std::vector<uint64_t> local_pieces(n_threads, 0);
  std::atomic<size_t> next{0};
  auto work = [&](int t) {
    std::vector<Span> pieces;
    auto& counts = local[t];
    for (size_t c; (c = next.fetch_add(1)) < ends.size();) {
      const size_t begin = c == 0 ? 0 : ends[c - 1];
      std::string_view chunk = text.substr(begin, ends[c] - begin);
      pieces.clear();
      pre_.split(chunk, &pieces);
      for (const Span& p : pieces) ++counts[chunk.substr(p.begin, p.end - p.begin)];
      local_pieces[t] += pieces.size();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < n_threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& th : pool) th.join();
  for (int t = 0; t < n_threads; ++t) {
    for (const auto& [word, n] : local[t]) counts_[std::string(word)] += n;
    pieces_ += local_pieces[t];
  }
  bytes_ += text.size();
  return Status();
}

std::vector<WordCount> WordCounter::words() const {
  std::vector<WordCount> out;
  out.reserve(counts_.size());
  for (const auto& [w, n] : counts_) out.push_back({w, n});
  std::sort(out.begin(), out.end(), [](const WordCount& a, const WordCount& b) { return a.bytes < b.bytes; });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Merge learning

namespace {

uint64_t pack(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// Count of one pair and the words it may occur in (ascending when built, then appended to;
// may hold words that no longer contain the pair: they are skipped when the pair is merged).
struct PairStat {
  int32_t a = 0, b = 0;
  int64_t count = 0;
  uint32_t touched = 0;  // last merge (1-based) that raised the count
  std::vector<uint32_t> words;
};

// Open-addressing map pair -> index into the PairStat table. Pairs are never removed.
class PairIndex {
 public:
  PairIndex() { rehash(1 << 16); }
  // Index of (a, b), or `fresh` (which the caller then appends) when the pair is new.
  uint32_t find_or_insert(int32_t a, int32_t b, uint32_t fresh) {
    if ((size_ + 1) * 2 > keys_.size()) rehash(keys_.size() * 2);
    const uint64_t key = pack(a, b);
    size_t i = slot(key);
    while (keys_[i] != kEmpty) {
      if (keys_[i] == key) return vals_[i];
      i = (i + 1) & (keys_.size() - 1);
    }
    keys_[i] = key;
    vals_[i] = fresh;
    ++size_;
    return fresh;
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  size_t slot(uint64_t key) const {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 17) & (keys_.size() - 1);
  }
  void rehash(size_t cap) {
    std::vector<uint64_t> old_keys = std::move(keys_);
    std::vector<uint32_t> old_vals = std::move(vals_);
    keys_.assign(cap, kEmpty);
    vals_.assign(cap, 0);
    for (size_t j = 0; j < old_keys.size(); ++j) {
      if (old_keys[j] == kEmpty) continue;
      size_t i = slot(old_keys[j]);
      while (keys_[i] != kEmpty) i = (i + 1) & (cap - 1);
      keys_[i] = old_keys[j];
      vals_[i] = old_vals[j];
    }
  }
  std::vector<uint64_t> keys_;
  std::vector<uint32_t> vals_;
  size_t size_ = 0;
};

struct HeapEntry {
  int64_t count;
  int32_t a, b;
};
// std::priority_queue pops the greatest: higher count first, then smaller (a, b).
struct HeapLess {
  bool operator()(const HeapEntry& x, const HeapEntry& y) const {
    if (x.count != y.count) return x.count < y.count;
    if (x.a != y.a) return x.a > y.a;
    return x.b > y.b;
  }
};

class Trainer {
 public:
  Trainer(const std::vector<WordCount>& words, const BpeTrainOptions& opt) : opt_(opt) {
    tokens_.reserve(opt.max_tokens);
    for (int b = 0; b < 256; ++b) {
      tokens_.push_back(std::string(1, static_cast<char>(b)));
      token_ids_.emplace(tokens_.back(), b);
    }
    words_.reserve(words.size());
    for (const WordCount& w : words) {
      if (w.bytes.empty() || w.count == 0) continue;
      words_.push_back({static_cast<uint32_t>(syms_.size()), static_cast<uint32_t>(w.bytes.size()),
                        static_cast<int64_t>(w.count)});
      for (unsigned char c : w.bytes) syms_.push_back(c);
    }
  }

  BpeTrainResult run() {
    Stopwatch sw;
    count_initial_pairs();
    BpeTrainResult res;
    size_t merges_since_report = 0;
    auto report = [&](bool finished) {
      if (!opt_.on_progress) return;
      opt_.on_progress({res.merges.size(), tokens_.size(), opt_.max_tokens, res.last_count, sw.seconds(), finished});
    };
    while (tokens_.size() < opt_.max_tokens) {
      HeapEntry top{};
      if (!pop_best(&top)) break;
      if (top.count < static_cast<int64_t>(std::max<uint64_t>(opt_.min_frequency, 1))) break;
      const int32_t c = static_cast<int32_t>(tokens_.size());
      tokens_.push_back(tokens_[top.a] + tokens_[top.b]);
      DSEEK_CHECK(token_ids_.emplace(tokens_.back(), c).second, "merge {} repeats a token", res.merges.size());
      apply_merge(top.a, top.b, c);
      res.merges.push_back({top.a, top.b});
      res.last_count = static_cast<uint64_t>(top.count);
      if (++merges_since_report >= std::max<size_t>(opt_.progress_every, 1)) {
        merges_since_report = 0;
        report(false);
      }
    }
    res.reached_max_tokens = tokens_.size() >= opt_.max_tokens;
    report(true);
    res.tokens = std::move(tokens_);
    return res;
  }

 private:
  struct Word {
    uint32_t begin, len;
    int64_t count;
  };

  PairStat& stat_of(int32_t a, int32_t b) {
    uint32_t i = index_.find_or_insert(a, b, static_cast<uint32_t>(stats_.size()));
    if (i == stats_.size()) {
      stats_.emplace_back();
      stats_.back().a = a;
      stats_.back().b = b;
    }
    return stats_[i];
  }

  void count_initial_pairs() {
    for (uint32_t w = 0; w < words_.size(); ++w) {
      const Word& wd = words_[w];
      const int32_t* s = &syms_[wd.begin];
      for (uint32_t i = 0; i + 1 < wd.len; ++i) {
        PairStat& st = stat_of(s[i], s[i + 1]);
        st.count += wd.count;
        if (st.words.empty() || st.words.back() != w) st.words.push_back(w);
      }
    }
    std::vector<HeapEntry> entries;
    entries.reserve(stats_.size());
    for (const PairStat& st : stats_) entries.push_back({st.count, st.a, st.b});
    heap_ = std::priority_queue<HeapEntry, std::vector<HeapEntry>, HeapLess>(HeapLess(), std::move(entries));
  }

  // Pops until the top entry is current. Every pair with a positive count has an entry whose
  // count is >= its current count (raised counts are pushed; lowered ones are re-pushed here when
  // their stale entry surfaces), so the first current top is the true best pair.
  bool pop_best(HeapEntry* out) {
    while (!heap_.empty()) {
      HeapEntry e = heap_.top();
      heap_.pop();
      const PairStat& st = stat_of(e.a, e.b);
      if (st.count == e.count && e.count > 0) {
        *out = e;
        return true;
      }
      if (st.count < e.count && st.count > 0) heap_.push({st.count, e.a, e.b});
    }
    return false;
  }

  void apply_merge(int32_t a, int32_t b, int32_t c) {
    ++merge_no_;
    std::vector<uint32_t> affected = std::move(stat_of(a, b).words);
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    std::vector<uint32_t> raised;
    for (uint32_t w : affected) {
      Word& wd = words_[w];
      int32_t* s = &syms_[wd.begin];
      bool found = false;
      for (uint32_t i = 0; i + 1 < wd.len && !found; ++i) found = s[i] == a && s[i + 1] == b;
      if (!found) continue;
      // Words are short pieces: remove all their pairs, merge, add all pairs back.
      for (uint32_t i = 0; i + 1 < wd.len; ++i) stat_of(s[i], s[i + 1]).count -= wd.count;
      uint32_t n = 0;
      for (uint32_t i = 0; i < wd.len;) {
        if (i + 1 < wd.len && s[i] == a && s[i + 1] == b) {
          s[n++] = c;
          i += 2;
        } else {
          s[n++] = s[i++];
        }
      }
      wd.len = n;
      for (uint32_t i = 0; i + 1 < n; ++i) {
        PairStat& st = stat_of(s[i], s[i + 1]);
        st.count += wd.count;
        // Only pairs with c can be new or raised: any other pair of the merged word was at the
        // same place in the old word.
        if (s[i] != c && s[i + 1] != c) continue;
        if (st.words.empty() || st.words.back() != w) st.words.push_back(w);
        if (st.touched != merge_no_) {
          st.touched = merge_no_;
          raised.push_back(static_cast<uint32_t>(&st - stats_.data()));
        }
      }
    }
    DSEEK_CHECK(stat_of(a, b).count == 0, "pair ({}, {}) left after its merge", a, b);
    for (uint32_t i : raised)
      if (stats_[i].count > 0) heap_.push({stats_[i].count, stats_[i].a, stats_[i].b});
  }

  const BpeTrainOptions& opt_;
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t> token_ids_;
  std::vector<Word> words_;
  std::vector<int32_t> syms_;
  PairIndex index_;
  std::vector<PairStat> stats_;
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, HeapLess> heap_;
  uint32_t merge_no_ = 0;
};

}  // namespace

Expected<BpeTrainResult> learn_bpe(const std::vector<WordCount>& words, const BpeTrainOptions& options) {
  if (options.max_tokens < 256)
    return Status::errorf("max_tokens {} is below the 256 byte tokens", options.max_tokens);
  return Trainer(words, options).run();
}

}  // namespace dseek::tokenizer
