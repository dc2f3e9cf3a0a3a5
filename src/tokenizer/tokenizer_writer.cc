// tokenizer.json / tokenizer_config.json for a trained BPE (see tokenizer_writer.h).
#include "tokenizer/tokenizer_writer.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <unordered_set>

#include "base/check.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/chat_format.h"

namespace dseek::tokenizer {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

const std::vector<SpecialTokenSpec>& deepseek_special_tokens() {
  // Flags as in DeepSeek-V3's tokenizer.json: BOS/EOS/pad special and not normalized, the
  // markers normalized and not special (so skip_special keeps them), <|EOT|> both.
  static const std::vector<SpecialTokenSpec> kTokens = {
      {kBos, true, false},
      {kEos, true, false},
      {"<｜▁pad▁｜>", true, false},
      {"<｜fim▁hole｜>", false, true},
      {"<｜fim▁begin｜>", false, true},
      {"<｜fim▁end｜>", false, true},
      {kUser, false, true},
      {kAssistant, false, true},
      {"<|EOT|>", true, true},
      {kToolCallsBegin, false, true},
      {kToolCallsEnd, false, true},
      {kToolCallBegin, false, true},
      {kToolCallEnd, false, true},
      {kToolOutputsBegin, false, true},
      {kToolOutputsEnd, false, true},
      {kToolOutputBegin, false, true},
      {kToolOutputEnd, false, true},
      {kToolSep, false, true},
      {kThinkStart, false, true},
      {kThinkEnd, false, true},
  };
  return kTokens;
}

ordered_json deepseek_v3_pre_tokenizer_json() {
  auto split = [](const char* regex) {
    ordered_json s;
    s["type"] = "Split";
    s["pattern"] = ordered_json{{"Regex", regex}};
    s["behavior"] = "Isolated";
    s["invert"] = false;
    return s;
  };
  ordered_json byte_level;
  byte_level["type"] = "ByteLevel";
  byte_level["add_prefix_space"] = false;
  byte_level["trim_offsets"] = true;
  byte_level["use_regex"] = false;
  ordered_json seq;
  seq["type"] = "Sequence";
  seq["pretokenizers"] = ordered_json::array({
      split(R"(\p{N}{1,3})"),
      split("[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"),
      split("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?"
            "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"),
      byte_level,
  });
  return seq;
}

size_t trained_vocab_size(const BpeTrainResult& bpe) {
  return bpe.tokens.size() + deepseek_special_tokens().size();
}

namespace {

ordered_json byte_level_processor(bool trim_offsets) {
  ordered_json j;
  j["type"] = "ByteLevel";
  j["add_prefix_space"] = true;
  j["trim_offsets"] = trim_offsets;
  j["use_regex"] = true;
  return j;
}

ordered_json added_token_json(int32_t id, const SpecialTokenSpec& t) {
  ordered_json j;
  j["id"] = id;
  j["content"] = t.content;
  j["single_word"] = false;
  j["lstrip"] = false;
  j["rstrip"] = false;
  j["normalized"] = t.normalized;
  j["special"] = t.special;
  return j;
}

ordered_json config_token(const std::string& content) {
  ordered_json j;
  j["__type"] = "AddedToken";
  j["content"] = content;
  j["lstrip"] = false;
  j["normalized"] = true;
  j["rstrip"] = false;
  j["single_word"] = false;
  return j;
}

Status write_file_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return Status::errorf("{}: cannot create file", tmp.string());
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    f.close();
    if (!f) return Status::errorf("{}: write error", tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return Status::errorf("{}: cannot rename to {}: {}", tmp.string(), path.string(), ec.message());
  return Status();
}

}  // namespace

TokenizerFiles make_tokenizer_files(const BpeTrainResult& bpe, size_t model_max_length) {
  const auto& specials = deepseek_special_tokens();
  const ByteLevelMap& bl = ByteLevelMap::get();
  DSEEK_CHECK(bpe.tokens.size() >= 256, "a trained BPE starts with the 256 bytes");
  const int32_t first_trailing = static_cast<int32_t>(kLeadingSpecials + bpe.tokens.size());

  ordered_json added = ordered_json::array();
  for (size_t i = 0; i < specials.size(); ++i) {
    int32_t id = i < kLeadingSpecials ? static_cast<int32_t>(i)
                                      : first_trailing + static_cast<int32_t>(i - kLeadingSpecials);
    added.push_back(added_token_json(id, specials[i]));
  }

  // ordered_json's operator[] searches linearly (quadratic for a whole vocab), so entries are
  // appended to the underlying vector directly, in id order, after a uniqueness check.
  std::vector<std::string> names(bpe.tokens.size());
  ordered_json::object_t vocab;
  vocab.reserve(kLeadingSpecials + bpe.tokens.size());
  std::unordered_set<std::string> seen;
  for (int32_t i = 0; i < kLeadingSpecials; ++i) {
    vocab.emplace_back(specials[i].content, i);
    seen.insert(specials[i].content);
  }
  for (size_t k = 0; k < bpe.tokens.size(); ++k) {
    names[k] = bl.encode(bpe.tokens[k]);
    DSEEK_CHECK(seen.insert(names[k]).second, "duplicate token '{}'", names[k]);
    vocab.emplace_back(names[k], kLeadingSpecials + static_cast<int32_t>(k));
  }
  ordered_json merges = ordered_json::array();
  for (const auto& [a, b] : bpe.merges) merges.push_back(names[a] + " " + names[b]);

  ordered_json model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = nullptr;
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  model["vocab"] = std::move(vocab);
  model["merges"] = std::move(merges);

  ordered_json tok;
  tok["version"] = "1.0";
  tok["truncation"] = nullptr;
  tok["padding"] = nullptr;
  tok["added_tokens"] = std::move(added);
  tok["normalizer"] = ordered_json{{"type", "Sequence"}, {"normalizers", ordered_json::array()}};
  tok["pre_tokenizer"] = deepseek_v3_pre_tokenizer_json();
  tok["post_processor"] = byte_level_processor(/*trim_offsets=*/false);
  tok["decoder"] = byte_level_processor(/*trim_offsets=*/true);
  tok["model"] = std::move(model);

  // tokenizer_config.json as DeepSeek-V3 writes it (pad = EOS), without a chat_template.
  ordered_json cfg;
  cfg["add_bos_token"] = true;
  cfg["add_eos_token"] = false;
  cfg["bos_token"] = config_token(specials[0].content);
  cfg["clean_up_tokenization_spaces"] = false;
  cfg["eos_token"] = config_token(specials[1].content);
  cfg["legacy"] = true;
  cfg["model_max_length"] = model_max_length;
  cfg["pad_token"] = config_token(specials[1].content);
  cfg["sp_model_kwargs"] = ordered_json::object();
  cfg["unk_token"] = nullptr;
  cfg["tokenizer_class"] = "LlamaTokenizerFast";

  return {tok.dump(2) + "\n", cfg.dump(2) + "\n"};
}

Status check_output_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::errorf("{}: cannot create output directory: {}", dir, ec.message());
  if (!fs::is_directory(dir, ec)) return Status::errorf("{}: not a directory", dir);
  const fs::path probe = fs::path(dir) / (".dseek-write-test-" + std::to_string(::getpid()));
  {
    std::ofstream f(probe, std::ios::binary);
    if (!f) return Status::errorf("{}: output directory is not writable", dir);
  }
  fs::remove(probe, ec);
  return Status();
}

Status write_tokenizer_files(const std::string& dir, const TokenizerFiles& files) {
  DSEEK_RETURN_IF_ERROR(check_output_dir(dir));
  DSEEK_RETURN_IF_ERROR(write_file_atomically(fs::path(dir) / "tokenizer.json", files.tokenizer_json));
  return write_file_atomically(fs::path(dir) / "tokenizer_config.json", files.tokenizer_config_json);
}

}  // namespace dseek::tokenizer
