// What `dseek info` reports about a model, computed from the tensor table and the checkpoint.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "model/weights.h"

namespace dseek::model {

struct ModelInfo {
  std::string architecture, model_type;
  int64_t layers = 0, dense_layers = 0, moe_layers = 0, mtp_layers = 0;
  // Parameters of the main model (MTP excluded). Active per token: what one token reads, i.e.
  // everything but the routed experts it is not sent to and all but one embedding row; this
  // is how DeepSeek's published figures count (V3 36.7B of 671B, V2-Lite 2.4B of 15.7B).
  int64_t params_total = 0;
  int64_t params_active = 0;
  int64_t params_mtp = 0;  // the MTP layer(s) present in the checkpoint
  std::map<std::string, uint64_t> bytes_by_dtype;  // every tensor bound, FP8 scales included
  // quantization_config in words ("fp8 e4m3, 128x128 blocks", "dseek q4, group 32, heads q8"),
  // empty when there is none, and the table's linears by how they are stored ("q4", "q8",
  // "F8_E4M3", "BF16"...): what `dseek quantize` actually did.
  std::string quantization;
  std::map<std::string, int64_t> linears_by_type;
  uint64_t bytes_total = 0;
  // KV cache per token: latent values per layer, and bytes over all layers.
  int64_t kv_values_per_layer = 0;
  int64_t kv_bytes_per_token_bf16 = 0;   // as DeepSeek deploys it
  int64_t kv_bytes_per_token_f32 = 0;    // as this engine stores it in reference precision
  int64_t indexer_bytes_per_token = 0;   // V3.2 indexer keys (FP8 + scales), over all layers
};

ModelInfo compute_model_info(const Weights& w);
std::string format_model_info(const ModelInfo& info, const std::string& dir);
std::string model_info_json(const ModelInfo& info);

}  // namespace dseek::model
