// Byte-level BPE training (`dseek tokenizer-train`), in two phases:
//  1. WordCounter: every corpus is cut into the pieces of a PreTokenizer (DeepSeek-V3's rules)
//     and each distinct piece ("word") is counted. Files are cut into chunks at points where the
//     DeepSeek pre-tokenizer always splits, so chunks are counted on several threads and the
//     counts do not depend on the chunking.
//  2. learn_bpe: starting from the 256 single bytes, repeatedly merges the most frequent
//     adjacent pair of tokens over all words (weighted by word count). Pair counts are updated
//     incrementally from the words that contain the merged pair, and a max-heap with lazy
//     deletion picks the next pair.
// Rules (the test's naive trainer implements the same ones independently):
//  - ids: byte b is id b; the k-th new token is id 256 + k.
//  - the pair with the highest count wins; ties go to the smaller left id, then the smaller
//    right id (deterministic, independent of threads and word order).
//  - an occurrence is counted at every adjacent position ("a a a" has two (a, a)); a merge
//    replaces non-overlapping occurrences left to right, as BPE encoding does.
//  - training stops at `max_tokens` tokens or when the best count is below `min_frequency`.
//  - every merge makes a new token: its bytes can never equal an earlier token's (a span that
//    ends up as tokens [X, Y] evolves exactly as the word X+Y alone would, and so would the
//    span where an earlier token T = X+Y was made: both reach T at the same merge). Checked.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/status.h"
#include "tokenizer/pre_tokenizer.h"

namespace dseek::tokenizer {

// A distinct pre-token (raw bytes) and its number of occurrences.
struct WordCount {
  std::string bytes;
  uint64_t count = 0;
};

class WordCounter {
 public:
  // `pre` must outlive the counter. threads <= 0: all hardware threads.
  explicit WordCounter(const PreTokenizer& pre, int threads = 0, size_t chunk_bytes = 1 << 20);

  // Reads a corpus file and counts its pieces. Errors (missing, empty, not UTF-8) name the file.
  Status add_file(const std::string& path);
  // Counts the pieces of `text` (must be valid UTF-8; `source` names it in errors).
  Status add_text(std::string_view text, const std::string& source = "text");

  // The counts so far, sorted by bytes.
  std::vector<WordCount> words() const;
  uint64_t bytes_counted() const { return bytes_; }
  uint64_t pieces_counted() const { return pieces_; }
  size_t distinct_words() const { return counts_.size(); }

 private:
  const PreTokenizer& pre_;
  int threads_;
  size_t chunk_bytes_;
  std::unordered_map<std::string, uint64_t> counts_;
  uint64_t bytes_ = 0, pieces_ = 0;
};

// Where a chunk may end: offsets of `text` after which the DeepSeek-V3 pre-tokenizer always
// starts a new piece, at most about `chunk_bytes` apart ('\n' followed by a printable
// non-space ASCII byte; see bpe_trainer.cc). Always ends with text.size().
std::vector<size_t> chunk_ends(std::string_view text, size_t chunk_bytes);

struct BpeProgress {
  size_t merges = 0;       // merges done so far
  size_t tokens = 0;       // tokens (256 bytes + learned) so far
  size_t max_tokens = 0;
  uint64_t last_count = 0;  // count of the pair merged last
  double seconds = 0;       // since learn_bpe started
  bool finished = false;    // the last report
};

struct BpeTrainOptions {
  size_t max_tokens = 16384;   // 256 bytes + learned tokens (special tokens not included)
  uint64_t min_frequency = 2;  // pairs seen fewer times are never merged
  // Called every `progress_every` merges and once at the end.
  std::function<void(const BpeProgress&)> on_progress;
  size_t progress_every = 256;
};

struct BpeTrainResult {
  std::vector<std::string> tokens;                  // id -> bytes (0..255 single bytes first)
  std::vector<std::pair<int32_t, int32_t>> merges;  // in rank order, ids into `tokens`
  uint64_t last_count = 0;                          // count of the last merge (0 if none)
  bool reached_max_tokens = false;                  // false: ran out of pairs >= min_frequency
};

// Learns merges from `words`. Errors: max_tokens < 256.
Expected<BpeTrainResult> learn_bpe(const std::vector<WordCount>& words,
                                   const BpeTrainOptions& options);

}  // namespace dseek::tokenizer
