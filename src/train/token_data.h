// Training data as one flat file of token ids, memory-mapped: built once from text (.txt:
// documents split on blank lines, or the whole file one document) or JSONL ({"text": ...} per
// line), each document followed by EOS (document packing without cross-document masking, as
// DeepSeek-V3 pre-trains, V3 paper §4.2). Training reads fixed-length windows at positions
// drawn by a counter-based RNG (window k of seed s is the same on every run and after a resume);
// the last part of the file is held out for evaluation. The tokenizer is passed in as a
// function so that this library does not depend on it.
//
// File layout (little-endian), header 64 bytes:
//   0  "DSEEKTOK"   8  u32 version (1)   12 u32 header bytes (64)   16 i64 n_tokens
//   24 i32 vocab_size (every id < it)    28 i32 eos_id              32 u64 source fingerprint
//   40 i64 n_documents                   48 16 bytes zero           64 i32 ids[n_tokens]
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "io/mapped_file.h"

namespace dseek::train {

struct TokenizerHooks {
  std::function<Expected<std::vector<int32_t>>(std::string_view)> encode;
  int32_t vocab_size = 0;
  int32_t eos_id = -1;
  // Text files: true = documents are separated by blank lines; false = one document per file.
  bool split_blank_lines = true;
};

// Identifies the inputs (paths, sizes, modification times) plus `salt` (e.g. the tokenizer's
// vocabulary size), so a token file can be reused only when built from the same sources.
Expected<uint64_t> fingerprint_sources(const std::vector<std::string>& inputs, uint64_t salt);

struct TokenFileStats {
  int64_t documents = 0;
  int64_t tokens = 0;
};

// Tokenizes every input (documents encoded in parallel, concatenated in input order) and
// writes `out_path` (to a temporary name first, then renamed).
Expected<TokenFileStats> build_token_file(const std::vector<std::string>& inputs, const TokenizerHooks& tok,
                                          uint64_t fingerprint, const std::string& out_path);

class TokenData {
 public:
  // Checks the header, the size and that every id is in [0, vocab_size).
  static Expected<std::unique_ptr<TokenData>> open(const std::string& path);

  std::span<const int32_t> tokens() const { return tokens_; }
  int32_t vocab_size() const { return vocab_size_; }
  int32_t eos_id() const { return eos_id_; }
  uint64_t fingerprint() const { return fingerprint_; }
  int64_t documents() const { return documents_; }
  const std::string& path() const { return file_->path(); }

 private:
  std::unique_ptr<io::MappedFile> file_;
  std::span<const int32_t> tokens_;
  int32_t vocab_size_ = 0, eos_id_ = -1;
  uint64_t fingerprint_ = 0;
  int64_t documents_ = 0;
};

// Training windows and held-out windows of `seq_len` tokens over a TokenData.
class WindowSampler {
 public:
  // The held-out part is the last max(seq_len, heldout_fraction x n) tokens; the training part
  // (the rest) must hold at least 2 x seq_len tokens. Errors name the token file.
  static Expected<WindowSampler> make(const TokenData& data, int64_t seq_len, double heldout_fraction, uint64_t seed);

  // The index-th training window drawn (a uniform start in the training part).
  std::span<const int32_t> train_window(uint64_t index) const;
  // Consecutive non-overlapping held-out windows, cycling when i >= heldout_windows().
  std::span<const int32_t> heldout_window(int64_t i) const;
  int64_t heldout_windows() const { return (heldout_end_ - heldout_begin_) / seq_len_; }
  int64_t train_tokens() const { return train_end_; }
  int64_t heldout_tokens() const { return heldout_end_ - heldout_begin_; }
  int64_t seq_len() const { return seq_len_; }

 private:
  std::span<const int32_t> tokens_;
  int64_t seq_len_ = 0, train_end_ = 0, heldout_begin_ = 0, heldout_end_ = 0;
  uint64_t seed_ = 0;
};

}  // namespace dseek::train
