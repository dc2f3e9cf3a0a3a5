// A tiny chat model for the fine-tuning tests: a byte-level tokenizer (no merges: 256 bytes +
// DeepSeek's special tokens, BOS = 0, EOS = 1) and a random 2-layer MLA + dense/MoE model whose
// vocabulary matches it, written with model/checkpoint_writer.h in F32, BF16 or FP8; and a
// handful of short conversations in OpenAI message format.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <fmt/format.h>

#include "model/checkpoint_writer.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/tokenizer_writer.h"
#include "scratch_dir.h"

namespace dseek::testing {

inline std::string tiny_lora_config(int64_t vocab, bool fp8, int64_t hidden = 32) {
  std::string q = fp8 ? R"(, "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
      "activation_scheme": "dynamic", "weight_block_size": [128, 128]})" : "";
  return fmt::format(R"({{"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
      "vocab_size": {}, "hidden_size": {}, "intermediate_size": 48, "moe_intermediate_size": 16,
      "num_hidden_layers": 2, "num_nextn_predict_layers": 0, "first_k_dense_replace": 1, "num_attention_heads": 2,
      "num_key_value_heads": 2, "q_lora_rank": 24, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
      "qk_rope_head_dim": 8, "v_head_dim": 8, "n_routed_experts": 4, "num_experts_per_tok": 2, "n_group": 2,
      "topk_group": 2, "n_shared_experts": 1, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
      "topk_method": "noaux_tc", "norm_topk_prob": true, "hidden_act": "silu", "rms_norm_eps": 1e-06,
      "rope_theta": 10000, "max_position_embeddings": 512, "tie_word_embeddings": false,
      "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 1{}}})",
                     vocab, hidden, q);
}

// Writes the model and its tokenizer into dir; returns "" or the error.
inline std::string write_tiny_chat_model(const std::string& dir, model::StoredDType dtype, uint64_t seed,
                                         int64_t hidden = 32) {
  namespace fs = std::filesystem;
  fs::remove_all(dir);
  tokenizer::BpeTrainResult bpe;
  for (int b = 0; b < 256; ++b) bpe.tokens.push_back(std::string(1, static_cast<char>(b)));
  const int64_t vocab = static_cast<int64_t>(tokenizer::trained_vocab_size(bpe));
  model::RandomCheckpointOptions o;
  o.dtype = dtype;
  o.seed = seed;
  o.include_mtp = false;
  Status s = model::write_random_checkpoint(tiny_lora_config(vocab, dtype == model::StoredDType::kFP8, hidden), dir, o);
  if (!s.ok()) return s.message();
  s = tokenizer::write_tokenizer_files(dir, tokenizer::make_tokenizer_files(bpe, 512));
  return s.ok() ? "" : s.message();
}

// Four short conversations, one per line (system, multi-turn and a bare message array).
inline std::string tiny_chats_jsonl() {
  return R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}]}
{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
{"messages": [{"role": "user", "content": "name?"}, {"role": "assistant", "content": "dseek"}, {"role": "user", "content": "again"}, {"role": "assistant", "content": "dseek!"}]}
[{"role": "user", "content": "color?"}, {"role": "assistant", "content": "blue"}]
)";
}

inline std::string slurp_for_test(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// NAME inside this process's scratch directory, which goes when the test binary ends.
inline std::string temp_dir(const std::string& name) {
  static const ScratchDir scratch("lora");
  return (scratch.path() / name).string();
}

}  // namespace dseek::testing
