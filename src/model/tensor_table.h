// The tensor table: every tensor a DeepSeek checkpoint holds for a given config, declared
// once, with its Hugging Face name, shape [out, in] and kind. Loading, shape and dtype checks,
// `dseek info` counts, and later gradients, optimizer state and saving all walk this table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "model/config.h"

namespace dseek::model {

enum class TensorKind {
  kLinear,     // [out, in] projection; may be FP8 e4m3 + `weight_scale_inv`, or q8/q4 + `weight_scale`
  kEmbedding,  // [vocab, hidden] lookup table; BF16/F16/F32
  kNorm,       // RMSNorm / LayerNorm weight or bias vector; BF16/F16/F32
  kBias,       // router correction bias, float (F32 in DeepSeek's checkpoints)
};

// Which part of the model a tensor belongs to: the main stack or a multi-token-prediction
// layer (`model.layers.{num_hidden_layers + k}.*`), which the forward pass does not use.
enum class TensorGroup { kMain, kMtp };

// What role the weights of a linear play in a token's forward pass, for active-parameter counts.
enum class Usage { kAlways, kRoutedExpert };

struct TensorSpec {
  std::string name;            // "model.layers.3.self_attn.kv_b_proj.weight"
  std::vector<int64_t> shape;  // [out, in] for linears
  TensorKind kind = TensorKind::kLinear;
  TensorGroup group = TensorGroup::kMain;
  Usage usage = Usage::kAlways;
  bool optional = false;  // may be absent even when its group is present
  // May be stored as dseek q8/q4 (I8 or U8 + F16 `weight_scale`, see ops/linear.h): every 2-D
  // linear except the MoE router (`mlp.gate`) and the V3.2 indexer's `weights_proj`, which are
  // small and steer discrete choices (expert and key selection), so they stay in float.
  bool quantizable = false;
  bool output_head = false;  // lm_head or an MTP shared_head.head: quantized as lm_head_type
};

std::vector<TensorSpec> build_tensor_table(const ModelConfig& c);

// Prefixes of the per-layer blocks, shared by the table and the weight binder.
std::string layer_prefix(int64_t layer);

bool dtype_allowed(TensorKind kind, DType dtype);
const char* allowed_dtypes(TensorKind kind);

// Name of a q8/q4 weight's scale companion: "X.weight" -> "X.weight_scale".
std::string group_scale_name(const std::string& weight_name);

}  // namespace dseek::model
