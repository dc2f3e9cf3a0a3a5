// Fine-tuning an existing checkpoint on chat data (`dseek finetune`): the loss is the mean
// next-token cross-entropy over the assistant-turn tokens only (chat_data.h's mask), one
// conversation per AdamW step (optimizer.h; global-norm clipping), constant learning rate.
// Two modes:
//   LoRA (rank > 0): the base stays as stored (FP8 included) and frozen; only the adapters
//     (lora.h) train. Output: a PEFT adapter directory, or with merge a full checkpoint.
//   full (rank 0): FP32 master copies of every main-model tensor, bound as the model
//     (Checkpoint::from_memory), all trained.
// Output checkpoints: config.json and the tokenizer files copied from the base; one
// model.safetensors with every trained or merged tensor in float32 (bit-exact with what
// `dseek run --lora` computes) and every other tensor byte for byte as stored, FP8 scales
// included. Not here: multi-conversation batches, schedules, resume (see trainer.h).
// V3.2 models train with sparse attention (the indexer's top-k, as inference); in full mode the
// indexer learns from its KL loss L_I (indexer_backward.h), with LoRA it stays frozen.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/weights.h"
#include "train/chat_data.h"
#include "train/lora.h"
#include "train/model_grad.h"
#include "train/optimizer.h"

namespace dseek::train {

struct FinetuneOptions {
  int64_t lora_rank = 0;        // 0: full fine-tuning
  double lora_alpha = 0;        // 0: 2 x rank
  uint32_t lora_targets = kLoraAll;
  double lr = 0;                // 0: 1e-3 for LoRA, 1e-4 for full (the peak of the schedule)
  int64_t batch = 1;            // conversations per optimizer step (gradients averaged)
  int64_t warmup = 0;           // linear warm-up steps
  bool cosine = true;           // after warm-up, cosine decay to lr / 10 at the last step; else constant
  double clip = 1.0;            // global gradient norm; <= 0 off
  double weight_decay = 0.0;    // AdamW's decoupled decay (matrices only)
  uint64_t seed = 0;            // adapter initialization and data order
};

// Mean cross-entropy over the targets t with mask[t] = 1, predicted from position t - 1;
// *dlogits [T, V] (zeroed here) receives its gradient. Returns 0 (and a zero gradient) when no
// target is masked in.
double masked_next_token_loss(const Activations& act, std::span<const uint8_t> mask, int64_t vocab,
                              std::vector<float>* dlogits);

class Finetuner {
 public:
  static Expected<std::unique_ptr<Finetuner>> create(const std::string& model_dir, const FinetuneOptions& options);
  ~Finetuner();

  // Masked loss of one conversation under the current weights (no update).
  Expected<double> loss(const ChatExample& ex);
  // One AdamW step on one conversation; returns its masked loss before the update.
  Expected<double> step(const ChatExample& ex);
  // One AdamW step on the mean gradient of a batch of conversations, at lr * lr_scale; returns
  // their mean masked loss before the update.
  Expected<double> step(std::span<const ChatExample* const> batch, double lr_scale = 1.0);

  // adapter_dir for LoRA without merge; else a full checkpoint (see the file comment).
  Status save(const std::string& out_dir, bool merge) const;

  bool lora() const { return adapters_ != nullptr; }
  LoraAdapters* adapters() { return adapters_.get(); }
  // The weights the training forward runs on (the base for LoRA, the masters for full).
  const model::Weights& weights() const { return *weights_; }
  int64_t trainable_parameters() const;
  int64_t steps_done() const { return step_; }
  const FinetuneOptions& options() const { return options_; }

 private:
  Finetuner() = default;
  struct Master;

  std::string model_dir_;
  FinetuneOptions options_;
  std::unique_ptr<model::Weights> base_;     // the checkpoint as stored
  std::unique_ptr<LoraAdapters> adapters_;   // LoRA only
  std::vector<Master> masters_;              // full only
  std::unique_ptr<model::Weights> full_;     // full only: bound over masters_
  const model::Weights* weights_ = nullptr;
  std::unique_ptr<Gradients> grads_;         // full only
  AdamState adam_;
  int64_t step_ = 0;
};

struct FinetuneProgress {
  int64_t step = 0, total = 0;
  double loss = 0;
  int64_t line = 0;  // the conversation's JSONL line
};

// The learning-rate multiplier of optimizer step `step` (0-based) of `steps`: linear warm-up
// over o.warmup steps, then cosine decay to 0.1 at the last step (or constant without o.cosine).
double finetune_lr_scale(const FinetuneOptions& o, int64_t step, int64_t steps);

// Runs `steps` optimizer steps of options().batch conversations each over `data` (shuffled by
// seed per epoch, conversations in turn) under finetune_lr_scale's schedule.
Status run_finetune(Finetuner& ft, const std::vector<ChatExample>& data, int64_t steps, uint64_t seed,
                    const std::function<void(const FinetuneProgress&)>& progress);

// Copies config.json, generation_config.json and the tokenizer files of model_dir into out_dir.
Status copy_model_files(const std::string& model_dir, const std::string& out_dir);

}  // namespace dseek::train
