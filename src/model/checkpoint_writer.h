// Writes a checkpoint with random weights in exactly the Hugging Face layout DeepSeek uses
// (config.json, model.safetensors.index.json, model-0000N-of-0000M.safetensors, HF tensor
// names, FP8 e4m3 linears with 128x128 `weight_scale_inv` blocks when asked). Every tensor
// comes from the tensor table, so whatever the loader expects is what gets written. Shards are
// planned up front and written one at a time, so memory stays at one shard however big the model.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "base/status.h"
#include "model/config.h"

namespace dseek::model {

// kQ8 / kQ4: dseek group-quantized linears (model/quantize.h, group 32, output heads q8), the
// rest BF16; config.json gets the matching quantization_config (replacing an FP8 one).
enum class StoredDType { kBF16, kF32, kFP8, kQ8, kQ4 };

enum class InitStyle {
  // As DeepSeek trains from scratch: every weight ~ N(0, initializer_range), norm weights 1,
  // biases 0. Activations shrink through an untrained stack; that is what training starts from.
  kTraining,
  // For tests of the forward pass: linears ~ N(0, 1/fan_in) so activations stay O(1), norm
  // weights and biases perturbed around 1 and 0 so that every tensor influences the logits.
  kTest,
};

struct RandomCheckpointOptions {
  StoredDType dtype = StoredDType::kBF16;  // FP8 applies to linears inside decoder blocks
  InitStyle init = InitStyle::kTest;
  uint64_t seed = 0;
  bool include_mtp = true;                // write the num_nextn_predict_layers MTP layers
  uint64_t max_shard_bytes = 4ull << 30;  // shards of at most this size (one tensor may exceed it)
  // Called after each tensor is drawn: (bytes drawn so far, total bytes). A shard's file is
  // written once all its tensors are drawn, so per shard (gigabytes) alone it said nothing for
  // minutes on a q4 init.
  std::function<void(uint64_t, uint64_t)> progress;
};

// `config_json` is written verbatim as config.json and must parse as a valid ModelConfig.
Status write_random_checkpoint(const std::string& config_json, const std::string& out_dir,
                               const RandomCheckpointOptions& options);

// The value the generator draws for element i of the tensor numbered `stream`: a standard
// normal from a counter-based hash, so any thread may compute any element.
float random_normal(uint64_t seed, uint64_t stream, uint64_t i);

}  // namespace dseek::model
