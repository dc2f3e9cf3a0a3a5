// Writes a trained byte-level BPE as Hugging Face files (tokenizer.json, tokenizer_config.json)
// laid out like DeepSeek-V3's: same normalizer, pre-tokenizer (the three Split rules +
// ByteLevel), post-processor and decoder, the same special-token strings and flags.
//
// Id layout of a trained tokenizer (total = vocab_size):
//   0, 1, 2        <｜begin▁of▁sentence｜>, <｜end▁of▁sentence｜>, <｜▁pad▁｜>: in model.vocab and
//                  in added_tokens, as in DeepSeek-V3 (so BOS = 0, EOS = 1)
//   3 .. 258       the 256 single bytes, byte b at id 3 + b
//   259 ..         learned tokens in merge order (BpeTrainResult id k >= 256 at id 3 + k)
//   last 17 ids    the other added tokens, in deepseek_special_tokens() order (fim, User,
//                  Assistant, <|EOT|>, tool markers, <think>, </think>)
// No chat_template is written: dseek picks the V3 format for a directory without one (with a
// deepseek_v3 config.json), see chat_format.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "tokenizer/bpe_trainer.h"

namespace dseek::tokenizer {

struct SpecialTokenSpec {
  std::string content;
  bool special;     // tokenizer.json "special" (skipped by decode(skip_special_tokens))
  bool normalized;  // tokenizer.json "normalized", as DeepSeek-V3 sets it
};

// BOS, EOS, pad first, then the chat/tool/FIM markers (DeepSeek-V3's added tokens without its
// placeholders, plus R1's <think> and </think>).
const std::vector<SpecialTokenSpec>& deepseek_special_tokens();
// Number of the leading special tokens stored at ids 0.. (BOS, EOS, pad).
inline constexpr int32_t kLeadingSpecials = 3;

// DeepSeek-V3's tokenizer.json "pre_tokenizer" value.
nlohmann::ordered_json deepseek_v3_pre_tokenizer_json();

// Total ids of the written tokenizer: learned tokens (bytes included) + special tokens.
size_t trained_vocab_size(const BpeTrainResult& bpe);

struct TokenizerFiles {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
};
TokenizerFiles make_tokenizer_files(const BpeTrainResult& bpe, size_t model_max_length);

// Writes DIR/tokenizer.json and DIR/tokenizer_config.json (creating DIR). Each file is written
// to a temporary name and renamed, so a failed run leaves no half-written file.
Status write_tokenizer_files(const std::string& dir, const TokenizerFiles& files);

// Creates `dir` if needed and checks that files can be created in it (to fail before a long
// training run rather than after). Errors name the directory.
Status check_output_dir(const std::string& dir);

}  // namespace dseek::tokenizer
