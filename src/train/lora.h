// LoRA adapters (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", eq. 3):
// beside a frozen linear W [out, in], y = x W^T + scale (x A^T) B^T with A [r, in], B [out, r],
// scale = lora_alpha / r; B starts at zero (so the adapted model starts as the base) and A
// small random (seeded). The base is never copied or written: it stays in its stored dtype
// (FP8 included) and the adapters ride along the training pass as a LinearHook.
// Files are PEFT's: adapter_config.json (r, lora_alpha, target_modules, base_model_name_or_path)
// and adapter_model.safetensors with `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`,
// where <module> is the HF linear name without ".weight".
// Not here: the training loop (finetune.h), data (chat_data.h).
//
// Legend: T = tokens, r = rank, in/out = the adapted weight's input/output features.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "model/config.h"
#include "model/weights.h"
#include "train/linear_hook.h"

namespace dseek::train {

// Which linears get adapters: kAttention = every self_attn projection (q_a/q_b or q, kv_a, kv_b,
// o); kExperts = every FFN projection (gate/up/down of routed experts, shared experts and the
// dense layers' MLPs). The router and the embedding/head are never adapted.
enum LoraTargets : uint32_t { kLoraAttention = 1, kLoraExperts = 2, kLoraAll = 3 };

// "attn", "experts" or "all"; errors name the flag value.
Expected<uint32_t> lora_targets_from_name(const std::string& name);

struct LoraOptions {
  int64_t rank = 8;
  double alpha = 16;  // scale = alpha / rank
  uint32_t targets = kLoraAll;
  uint64_t seed = 0;  // A's initialization
};

struct LoraTensor {
  std::string module;            // "model.layers.0.self_attn.q_a_proj"
  int64_t in = 0, out = 0;
  std::vector<float> A;          // [r, in]
  std::vector<float> B;          // [out, r]
  std::vector<float> dA, dB;     // gradients, same shapes (+= by backward)
};

// Every decoder linear of a bound model with its module name (HF name without ".weight").
std::vector<std::pair<std::string, const ops::LinearWeight*>> named_linears(const model::Weights& w);

class LoraAdapters final : public LinearHook {
 public:
  // Fresh adapters for every targeted linear of the model (B = 0, A ~ N(0, 1/in) seeded).
  static Expected<std::unique_ptr<LoraAdapters>> create(const model::Weights& w, const LoraOptions& o);
  // Reads a PEFT adapter directory written by save() (or PEFT itself, F32/BF16/F16 tensors) and
  // binds it to w: every tensor must name a linear of w with matching shapes.
  static Expected<std::unique_ptr<LoraAdapters>> load(const std::string& dir, const model::Weights& w);

  // adapter_config.json + adapter_model.safetensors (F32) into dir (created).
  Status save(const std::string& dir, const std::string& base_model_path) const;

  int64_t rank() const { return rank_; }
  double alpha() const { return alpha_; }
  float scale() const { return static_cast<float>(alpha_ / static_cast<double>(rank_)); }
  std::vector<LoraTensor>& tensors() { return tensors_; }
  const std::vector<LoraTensor>& tensors() const { return tensors_; }
  int64_t parameter_count() const;
  void zero_grad();

  // W + scale B A as float32 [out, in] for the adapter of tensors()[i], W decoded from base.
  std::vector<float> merged(size_t i, const ops::LinearWeight& base) const;

  // LinearHook: adapters found by the base weight's data pointer (bound at create/load).
  void forward(const ops::LinearWeight& w, const float* x, int64_t T, float* y) override;
  void backward(const ops::LinearWeight& w, const float* x, const float* dy, int64_t T, float* dx) override;

 private:
  LoraAdapters() = default;
  Status bind(const model::Weights& w, const std::string& where);
  LoraTensor* find(const ops::LinearWeight& w);

  int64_t rank_ = 0;
  double alpha_ = 0;
  std::vector<LoraTensor> tensors_;
  std::unordered_map<const uint8_t*, size_t> by_weight_;  // base data pointer -> index
};

// PEFT tensor names of an adapter.
std::string lora_a_name(const std::string& module);
std::string lora_b_name(const std::string& module);

// A model directory's weights with the adapters of adapter_dir merged in at load: each adapted
// tensor becomes a float32 copy W + scale B A bound over the base (whose other tensors stay
// mapped in their stored dtype, FP8 included). Errors (adapter for another model or shape,
// missing tensors) name the adapter file and the tensor.
struct AdaptedWeights {
  std::unique_ptr<model::Weights> weights;
  std::shared_ptr<void> keep_alive;  // the base checkpoint and merged copies: outlive `weights`
};
Expected<AdaptedWeights> load_weights_with_lora(const std::string& model_dir, const std::string& adapter_dir);

// The merged tensors of adapters (bound to base) over base's checkpoint as an in-memory
// checkpoint view set: base tensors as stored, adapted ones float32 (their FP8 scales dropped).
// *merged owns the float32 copies and must outlive the views.
std::vector<io::TensorView> merged_views(const model::Weights& base, const LoraAdapters& adapters,
                                         std::vector<std::vector<float>>* merged);

}  // namespace dseek::train
