// The training loop behind `dseek train`: FP32 master copies of every trainable tensor, bound
// as a model::Weights (directly for F32, through BF16 copies refreshed after each step for
// BF16) so the existing forward/backward run on them; AdamW (optimizer.h) with warm-up +
// cosine decay and global-norm clipping; gradient accumulation over micro-batches; the
// DeepSeek-V3 extras (MTP loss, auxiliary-loss-free expert bias, sequence-wise balance loss);
// held-out evaluation; and checkpoints in the Hugging Face layout that `dseek run` loads, plus
// trainer_state.safetensors so that a resumed run continues bit for bit.
//
// Reproducibility: window k of the data is a pure function of (seed, k); sequences of a
// micro-batch run in parallel (OpenMP) into their own gradient buffers, summed in sequence
// order; so a run is a function of its options, independent of the thread count.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/checkpoint_writer.h"
#include "model/config.h"
#include "model/tensor_table.h"
#include "model/weights.h"
#include "train/model_grad.h"
#include "train/optimizer.h"
#include "train/token_data.h"

namespace dseek::train {

struct TrainOptions {
  int64_t steps = 100;          // optimizer steps in the whole run (the schedule's length)
  int64_t batch = 8;            // sequences per optimizer step
  int64_t grad_accum = 1;       // micro-batches per step (batch must divide evenly)
  int64_t seq_len = 128;        // tokens per sequence
  double lr = 1e-3, min_lr = 1e-4;
  int64_t warmup = 10;
  AdamWHyper adam;              // betas 0.9/0.95, weight decay 0.1
  double clip = 1.0;            // global gradient norm; <= 0 off
  uint64_t seed = 0;            // initialization and data order
  double heldout_fraction = 0.1;
  model::StoredDType dtype = model::StoredDType::kF32;  // kF32 or kBF16 (the model's copy)
  float mtp_weight = 0.3f;      // lambda; 0 or no MTP layer in the config: no MTP loss
  float bias_update_speed = 0.001f;  // gamma of the expert-bias rule (noaux_tc routers)
  float seq_aux_alpha = 0.0001f;     // alpha of the sequence-wise balance loss; 0 off
  // V3.2 (DeepSeek Sparse Attention, V3.2 paper §2.1): the first indexer_warmup_steps steps
  // are the indexer's dense warm-up (dense attention, every other weight frozen, only L_I);
  // then sparse training (top-k attention, every weight, L_I on the selected keys).
  int64_t indexer_warmup_steps = 0;
  float indexer_loss_weight = 1.0f;  // scales L_I's gradients (the indexer's tensors only)
};

// Serialized into trainer_state.safetensors' metadata, read back by --resume.
std::string options_to_json(const TrainOptions& o);
Expected<TrainOptions> options_from_json(const std::string& json, const std::string& where);

// The options' own consistency and their fit to the model (sequence length vs context, a
// trainable architecture); errors name the flag.
Status check_train_options(const model::ModelConfig& c, const TrainOptions& o);

struct StepStats {
  int64_t step = 0;           // steps done after this one (1 after the first)
  double loss = 0;            // mean next-token cross-entropy of the batch
  double mtp_loss = 0;        // unweighted MTP loss (0 when off)
  double aux_loss = 0;        // sequence-wise balance loss (0 when off)
  double indexer_loss = 0;    // V3.2: L_I, mean over the batch (0 for other models)
  bool indexer_warmup = false;  // V3.2: this step was a dense warm-up step (main model frozen)
  double lr = 0;              // learning rate used
  double grad_norm = 0;       // global norm before clipping
  double seconds = 0;
  int64_t tokens = 0;         // tokens processed (batch x seq_len)
  double max_over_mean_load = 0;  // routed-token load of the most loaded expert / mean, worst MoE layer (0: no MoE)
};

class Trainer {
 public:
  // A fresh model from a config.json text, initialized as `dseek init` does (normal,
  // std initializer_range, seed options.seed; bit-equal to `dseek init --dtype f32`).
  static Expected<std::unique_ptr<Trainer>> create(const std::string& config_json, const TrainOptions& options,
                                                   const WindowSampler& data);
  // Starts from a trained checkpoint's weights (`dseek train --init`; any stored dtype dseek
  // loads: F32, BF16, F16, FP8 e4m3 with its scales): its config.json (without a
  // quantization_config: the trainer keeps f32/bf16), fresh optimizer state, step 0.
  static Expected<std::unique_ptr<Trainer>> init(const std::string& model_dir, const TrainOptions& options,
                                                 const WindowSampler& data);
  // Continues from a directory written by save(): weights, moments, step and data position.
  static Expected<std::unique_ptr<Trainer>> resume(const std::string& dir, const TrainOptions& options,
                                                   const WindowSampler& data);
  ~Trainer();

  StepStats train_step();
  struct Heldout {
    double loss = 0;          // mean next-token loss
    double indexer_loss = 0;  // V3.2: mean L_I
  };
  // Over the first `windows` held-out windows, with the attention of the current stage.
  Heldout heldout(int64_t windows);
  double heldout_loss(int64_t windows) { return heldout(windows).loss; }
  // Writes `dir` (via dir.partial, renamed): config.json, model.safetensors, trainer_state.
  // safetensors and the tokenizer files found in tokenizer_dir ("" for none).
  Status save(const std::string& dir, const std::string& tokenizer_dir) const;

  int64_t steps_done() const { return step_; }
  const TrainOptions& options() const { return options_; }
  const model::Weights& weights() const { return *weights_; }
  const model::ModelConfig& config() const { return config_; }
  bool trains_mtp() const { return include_mtp_; }
  // V3.2: whether the next step is a dense warm-up step.
  bool in_indexer_warmup() const { return config_.has_indexer() && step_ < options_.indexer_warmup_steps; }
  int64_t parameter_count() const;

 private:
  struct Parameter {
    model::TensorSpec spec;
    std::vector<float> master;    // float32 master copy
    std::vector<uint16_t> bf16;   // the model's BF16 copy (BF16 runs only)
    bool trainable = true;        // false: e_score_correction_bias (set by the bias rule)
  };
  struct SequenceResult;

  Trainer() = default;
  static Expected<std::unique_ptr<Trainer>> make(const std::string& config_json, const TrainOptions& options,
                                                 const WindowSampler& data);
  void refresh_weights();  // model copies from masters, then rebinds weights_
  void run_sequence(std::span<const int32_t> tokens, Gradients* grads, SequenceResult* out) const;

  std::string config_json_;
  model::ModelConfig config_;       // as written in config.json
  model::ModelConfig bind_config_;  // without MTP layers when they are not trained
  TrainOptions options_;
  WindowSampler data_;
  LrSchedule schedule_;
  bool include_mtp_ = false;
  std::vector<Parameter> params_;   // tensor-table order
  AdamState adam_;
  std::unique_ptr<model::Weights> weights_;
  int64_t step_ = 0;
  uint64_t sequences_drawn_ = 0;    // the data position: windows 0.. are used up
  std::unique_ptr<Gradients> grads_;
  std::vector<std::unique_ptr<Gradients>> seq_grads_;  // per-sequence buffers of a micro-batch
};

}  // namespace dseek::train
