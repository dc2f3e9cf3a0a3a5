// Running the dseek binary from tests: exit code, stdout and stderr of one command.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "scratch_dir.h"

namespace dseek::testing {

struct CommandResult {
  int exit_code = -1;  // -1: killed by a signal
  std::string out, err;
};

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs `dseek ARGS` (ARGS already shell-quoted) with stdin from /dev/null.
inline CommandResult run_dseek(const std::string& args) {
  const ScratchDir tmp("cmd");
  const std::string cmd = std::string(DSEEK_BINARY) + " " + args + " < /dev/null > " + (tmp / "out") + " 2> " +
                          (tmp / "err");
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(tmp / "out"), slurp(tmp / "err")};
}

// config.json of a tiny DeepSeek-V3 model for the 300-id tokenizers the training e2e tests
// learn (2 layers, 8 routed experts, one MTP layer) with `max_positions` positions.
inline std::string tiny_train_config(int max_positions) {
  return R"({"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
      "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16,
      "num_hidden_layers": 2, "num_nextn_predict_layers": 1, "first_k_dense_replace": 1, "num_attention_heads": 2,
      "num_key_value_heads": 2, "q_lora_rank": 24, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
      "qk_rope_head_dim": 8, "v_head_dim": 8, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 2,
      "topk_group": 2, "n_shared_experts": 1, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
      "topk_method": "noaux_tc", "norm_topk_prob": true, "hidden_act": "silu", "rms_norm_eps": 1e-06,
      "rope_theta": 10000, "max_position_embeddings": )" +
         std::to_string(max_positions) + R"(, "tie_word_embeddings": false,
      "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 1})";
}

inline std::string tokenizer_dir() {
  return std::string(DSEEK_SOURCE_DIR) + "/.deps/tokenizer-deepseek-v3/package/models";
}

// A small DeepSeek-V3-shaped model with the real DeepSeek-V3 tokenizer, made once per test
// binary with `dseek init` (tests/data/configs/tiny-chat.json).
inline std::string tiny_chat_model() {
  namespace fs = std::filesystem;
  static const ScratchDir scratch("tiny-chat");  // removed when the test binary ends
  static const std::string dir = [] {
    const fs::path d = scratch.path() / "model";
    const auto r = run_dseek("init " + std::string(DSEEK_TEST_DATA) + "/configs/tiny-chat.json " + d.string() +
                             " --seed 3 --test-init --tokenizer " + tokenizer_dir());
    if (r.exit_code != 0) return std::string("init failed: ") + r.err;
    return d.string();
  }();
  return dir;
}

}  // namespace dseek::testing
