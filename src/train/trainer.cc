#include "train/trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/float_types.h"
#include "base/timer.h"
#include "io/checkpoint.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "train/balance.h"
#include "train/indexer_backward.h"
#include "train/mtp.h"
#include "ops/linear.h"


namespace dseek::train {

namespace fs = std::filesystem;

namespace {

// Per-sequence gradient buffers cost one model's worth of floats each; above this, the
// sequences of a micro-batch accumulate into one buffer one after another (each still using
// the multi-threaded kernels). The choice depends on sizes only, never on the thread count.
constexpr uint64_t kMaxSequenceGradBytes = 2ull << 30;

// A main-model indexer tensor: the only ones the dense warm-up updates.
bool is_indexer_tensor(const model::TensorSpec& spec) {
  return spec.group == model::TensorGroup::kMain && spec.name.find(".self_attn.indexer.") != std::string::npos;
}

bool is_bias_name(const std::string& name) {
  return name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
}

// The initial value of element i of table row `stream`, as model/checkpoint_writer.cc draws
// it with InitStyle::kTraining (the unit test holds the two equal).
float initial_value(const model::ModelConfig& c, const model::TensorSpec& spec, uint64_t seed, uint64_t stream,
                    uint64_t i) {
  if (spec.kind == model::TensorKind::kNorm) return is_bias_name(spec.name) ? 0.0f : 1.0f;
  if (spec.kind == model::TensorKind::kBias) return 0.0f;
  return static_cast<float>(c.initializer_range) * model::random_normal(seed, stream, i);
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Max over MoE layers of (load of the most loaded expert / mean load).
template <typename Load>
double max_over_mean(const Load& load) {
  double worst = 0;
  for (const auto& layer : load.counts) {
    if (layer.empty()) continue;
    int64_t total = 0, most = 0;
    for (int64_t n : layer) {
      total += n;
      most = std::max(most, n);
    }
    if (total > 0) worst = std::max(worst, static_cast<double>(most) * static_cast<double>(layer.size()) / total);
  }
  return worst;
}

}  // namespace

struct Trainer::SequenceResult {
  double loss = 0, mtp_loss = 0, aux_loss = 0, indexer_loss = 0;
  ExpertLoad load;
};

std::string options_to_json(const TrainOptions& o) {
  nlohmann::json j = {{"steps", o.steps},
                      {"batch", o.batch},
                      {"grad_accum", o.grad_accum},
                      {"seq_len", o.seq_len},
                      {"lr", o.lr},
                      {"min_lr", o.min_lr},
                      {"warmup", o.warmup},
                      {"beta1", o.adam.beta1},
                      {"beta2", o.adam.beta2},
                      {"eps", o.adam.eps},
                      {"weight_decay", o.adam.weight_decay},
                      {"clip", o.clip},
                      {"seed", o.seed},
                      {"heldout_fraction", o.heldout_fraction},
                      {"dtype", o.dtype == model::StoredDType::kBF16 ? "bf16" : "f32"},
                      {"mtp_weight", o.mtp_weight},
                      {"bias_update_speed", o.bias_update_speed},
                      {"seq_aux_alpha", o.seq_aux_alpha},
                      {"indexer_warmup_steps", o.indexer_warmup_steps},
                      {"indexer_loss_weight", o.indexer_loss_weight}};
  return j.dump();
}

Expected<TrainOptions> options_from_json(const std::string& text, const std::string& where) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::errorf("{}: the saved training options are not a JSON object", where);
  TrainOptions o;
  try {
    o.steps = j.at("steps").get<int64_t>();
    o.batch = j.at("batch").get<int64_t>();
    o.grad_accum = j.at("grad_accum").get<int64_t>();
    o.seq_len = j.at("seq_len").get<int64_t>();
    o.lr = j.at("lr").get<double>();
    o.min_lr = j.at("min_lr").get<double>();
    o.warmup = j.at("warmup").get<int64_t>();
    o.adam.beta1 = j.at("beta1").get<double>();
    o.adam.beta2 = j.at("beta2").get<double>();
    o.adam.eps = j.at("eps").get<double>();
    o.adam.weight_decay = j.at("weight_decay").get<double>();
    o.clip = j.at("clip").get<double>();
    o.seed = j.at("seed").get<uint64_t>();
    o.heldout_fraction = j.at("heldout_fraction").get<double>();
    o.dtype = j.at("dtype").get<std::string>() == "bf16" ? model::StoredDType::kBF16 : model::StoredDType::kF32;
    o.mtp_weight = j.at("mtp_weight").get<float>();
    o.bias_update_speed = j.at("bias_update_speed").get<float>();
    o.seq_aux_alpha = j.at("seq_aux_alpha").get<float>();
    // Absent in states saved before V3.2 training existed: their defaults.
    o.indexer_warmup_steps = j.value("indexer_warmup_steps", int64_t{0});
    o.indexer_loss_weight = j.value("indexer_loss_weight", 1.0f);
  } catch (const nlohmann::json::exception& e) {
    return Status::errorf("{}: saved training options: {}", where, e.what());
  }
  return o;
}

Status check_train_options(const model::ModelConfig& c, const TrainOptions& o) {
  if (o.steps < 1) return Status::errorf("--steps {}: need at least 1", o.steps);
  if (o.batch < 1 || o.grad_accum < 1 || o.batch % o.grad_accum != 0)
    return Status::errorf("--batch {} must be a positive multiple of --grad-accum {}", o.batch, o.grad_accum);
  if (o.dtype != model::StoredDType::kF32 && o.dtype != model::StoredDType::kBF16)
    return Status::error("--dtype: training keeps the model in f32 or bf16");
  if (!(o.lr > 0) || o.min_lr < 0 || o.min_lr > o.lr)
    return Status::errorf("--lr {} / --min-lr {}: need 0 <= min-lr <= lr and lr > 0", o.lr, o.min_lr);
  if (o.indexer_warmup_steps < 0)
    return Status::errorf("--indexer-warmup-steps {}: must be >= 0", o.indexer_warmup_steps);
  if (o.indexer_warmup_steps > 0 && !c.has_indexer())
    return Status::errorf("--indexer-warmup-steps {}: the model ({}) has no lightning indexer (V3.2 only)",
                          o.indexer_warmup_steps, model::arch_name(c.arch));
  if (!(o.indexer_loss_weight >= 0))
    return Status::errorf("--indexer-loss-weight {}: must be >= 0", o.indexer_loss_weight);
  std::vector<int32_t> probe(static_cast<size_t>(o.seq_len), 0);
  DSEEK_RETURN_IF_ERROR(check_trainable(c, probe).with_context("--seq-len"));
  return {};
}

Trainer::~Trainer() = default;

Expected<std::unique_ptr<Trainer>> Trainer::make(const std::string& config_json, const TrainOptions& o,
                                                 const WindowSampler& data) {
  DSEEK_ASSIGN_OR_RETURN(model::ModelConfig c, model::parse_model_config(config_json, "config.json"));
  DSEEK_RETURN_IF_ERROR(check_train_options(c, o));
  if (o.seq_len != data.seq_len())
    return Status::errorf("--seq-len {} differs from the data windows' {}", o.seq_len, data.seq_len());

  auto t = std::unique_ptr<Trainer>(new Trainer());
  t->config_json_ = config_json;
  t->config_ = c;
  t->options_ = o;
  t->data_ = data;
  t->schedule_ = {o.lr, o.min_lr, o.warmup, o.steps};
  t->include_mtp_ = o.mtp_weight > 0 && c.num_nextn_predict_layers > 0;
  t->bind_config_ = c;
  if (!t->include_mtp_) t->bind_config_.num_nextn_predict_layers = 0;
  const std::vector<model::TensorSpec> table = model::build_tensor_table(c);
  for (size_t i = 0; i < table.size(); ++i) {
    const model::TensorSpec& spec = table[i];
    if (spec.group == model::TensorGroup::kMtp && !t->include_mtp_) continue;
    Parameter p;
    p.spec = spec;
    p.trainable = spec.kind != model::TensorKind::kBias;
    p.master.resize(static_cast<size_t>(numel(spec.shape)));
    const int64_t n = static_cast<int64_t>(p.master.size());
    float* m = p.master.data();
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < n; ++k) m[k] = initial_value(c, spec, o.seed, i, static_cast<uint64_t>(k));
    t->params_.push_back(std::move(p));
  }
  t->grads_ = std::make_unique<Gradients>(c, t->include_mtp_);
  return t;
}

Expected<std::unique_ptr<Trainer>> Trainer::create(const std::string& config_json, const TrainOptions& options,
                                                   const WindowSampler& data) {
  DSEEK_ASSIGN_OR_RETURN(auto t, make(config_json, options, data));
  t->refresh_weights();
  return t;
}

Expected<std::unique_ptr<Trainer>> Trainer::init(const std::string& model_dir, const TrainOptions& options,
                                                 const WindowSampler& data) {
  const std::string config_path = (fs::path(model_dir) / "config.json").string();
  DSEEK_ASSIGN_OR_RETURN(std::string text, io::read_text_file(config_path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::errorf("{}: not a JSON object", config_path);
  DSEEK_ASSIGN_OR_RETURN(model::ModelConfig stored, model::parse_model_config(text, config_path));
  if (stored.int_quantization.enabled)
    return Status::errorf("{}: group-quantized (q8/q4) weights cannot be trained; start from the original checkpoint",
                          config_path);
  j.erase("quantization_config");  // the trainer's copies are f32/bf16
  auto made = make(j.dump(2), options, data);
  if (!made.ok()) return made.status().with_context(config_path);
  std::unique_ptr<Trainer> t = std::move(made).value();
  DSEEK_ASSIGN_OR_RETURN(auto ckpt, io::Checkpoint::open(model_dir));
  for (Parameter& p : t->params_) {
    const io::TensorView* v = ckpt->find(p.spec.name);
    if (v == nullptr)
      return Status::errorf("{}: tensor '{}' is missing{}", ckpt->listing(), p.spec.name,
                            p.spec.group == model::TensorGroup::kMtp ? " (train without MTP: --mtp-weight 0)" : "");
    if (v->shape != p.spec.shape)
      return Status::errorf("{}: tensor '{}' is [{}], expected [{}]", ckpt->listing(), p.spec.name,
                            fmt::join(v->shape, ", "), fmt::join(p.spec.shape, ", "));
    ops::LinearWeight lw;  // decoded as the model reads it, one row of `in` values at a time
    lw.dtype = v->dtype;
    lw.in = p.spec.shape.back();
    lw.out = numel(p.spec.shape) / lw.in;
    lw.data = v->data;
    std::vector<float> scales;
    if (v->dtype == DType::kF8E4M3) {
      const std::string sname = p.spec.name + "_scale_inv";
      const io::TensorView* sv = ckpt->find(sname);
      if (sv == nullptr || sv->dtype != DType::kF32)
        return Status::errorf("{}: FP8 tensor '{}' needs an F32 '{}'", ckpt->listing(), p.spec.name, sname);
      lw.block_rows = stored.quantization.block_rows;
      lw.block_cols = stored.quantization.block_cols;
      const int64_t want = ((lw.out + lw.block_rows - 1) / lw.block_rows) * lw.scale_cols();
      if (static_cast<int64_t>(sv->nbytes / 4) != want)
        return Status::errorf("{}: '{}' has {} scales, expected {}", ckpt->listing(), sname, sv->nbytes / 4, want);
      scales.resize(static_cast<size_t>(want));
      std::memcpy(scales.data(), sv->data, scales.size() * 4);
      lw.scale_inv = scales.data();
    } else if (v->dtype != DType::kF32 && v->dtype != DType::kBF16 && v->dtype != DType::kF16) {
      return Status::errorf("{}: tensor '{}' is {}, expected F32, BF16, F16 or F8_E4M3", ckpt->listing(), p.spec.name,
                            dtype_name(v->dtype));
    }
    ops::decode_rows(lw, 0, lw.out, p.master.data());
  }
  t->refresh_weights();
  return t;
}

Expected<std::unique_ptr<Trainer>> Trainer::resume(const std::string& dir, const TrainOptions& options,
                                                   const WindowSampler& data) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  DSEEK_ASSIGN_OR_RETURN(std::string config_json, io::read_text_file(config_path));
  DSEEK_ASSIGN_OR_RETURN(auto t, make(config_json, options, data));
  const std::string state_path = (fs::path(dir) / "trainer_state.safetensors").string();
  DSEEK_ASSIGN_OR_RETURN(auto state, io::SafetensorsFile::open(state_path));
  DSEEK_ASSIGN_OR_RETURN(auto model, io::Checkpoint::open(dir));

  auto meta = [&](const std::string& key) -> Expected<std::string> {
    auto it = state->metadata().find(key);
    if (it == state->metadata().end()) return Status::errorf("{}: metadata '{}' is missing", state_path, key);
    return it->second;
  };
  DSEEK_ASSIGN_OR_RETURN(std::string step, meta("step"));
  DSEEK_ASSIGN_OR_RETURN(std::string drawn, meta("sequences_drawn"));
  DSEEK_ASSIGN_OR_RETURN(std::string saved_dtype, meta("dtype"));
  t->step_ = std::stoll(step);
  t->sequences_drawn_ = std::stoull(drawn);
  const bool saved_bf16 = saved_dtype == "bf16";
  if (saved_bf16 != (options.dtype == model::StoredDType::kBF16))
    return Status::errorf("{}: the checkpoint was trained with --dtype {}; resume it with the same", state_path,
                          saved_dtype);

  // Reads a float32 tensor of the expected shape into `out`.
  auto read_f32 = [](const io::TensorView* v, const std::string& where, const std::string& name,
                     const std::vector<int64_t>& shape, std::vector<float>* out) -> Status {
    if (!v) return Status::errorf("{}: tensor '{}' is missing", where, name);
    if (v->dtype != DType::kF32 || v->shape != shape)
      return Status::errorf("{}: tensor '{}' is {} {}, expected F32 [{}]", where, name, dtype_name(v->dtype),
                            fmt::format("[{}]", fmt::join(v->shape, ", ")), fmt::join(shape, ", "));
    out->resize(static_cast<size_t>(numel(shape)));
    std::memcpy(out->data(), v->data, out->size() * 4);
    return {};
  };
  for (Parameter& p : t->params_) {
    // Masters: model.safetensors holds them exactly in F32 runs (and the F32 router biases);
    // BF16 runs keep them in the state file.
    if (saved_bf16 && p.spec.kind != model::TensorKind::kBias)
      DSEEK_RETURN_IF_ERROR(read_f32(state->find("master." + p.spec.name), state_path, "master." + p.spec.name,
                                     p.spec.shape, &p.master));
    else
      DSEEK_RETURN_IF_ERROR(read_f32(model->find(p.spec.name), model->listing(), p.spec.name, p.spec.shape,
                                     &p.master));
    if (!p.trainable) continue;
    AdamState::Moments& mo = t->adam_.at(p.spec.name, p.master.size());
    DSEEK_RETURN_IF_ERROR(read_f32(state->find("adam.m." + p.spec.name), state_path, "adam.m." + p.spec.name,
                                   p.spec.shape, &mo.m));
    DSEEK_RETURN_IF_ERROR(read_f32(state->find("adam.v." + p.spec.name), state_path, "adam.v." + p.spec.name,
                                   p.spec.shape, &mo.v));
  }
  t->refresh_weights();
  return t;
}

int64_t Trainer::parameter_count() const {
  int64_t n = 0;
  for (const Parameter& p : params_) n += p.trainable ? static_cast<int64_t>(p.master.size()) : 0;
  return n;
}

void Trainer::refresh_weights() {
  const bool bf16 = options_.dtype == model::StoredDType::kBF16;
  std::vector<io::TensorView> views;
  views.reserve(params_.size());
  for (Parameter& p : params_) {
    io::TensorView v;
    v.name = p.spec.name;
    v.shape = p.spec.shape;
    if (bf16 && p.spec.kind != model::TensorKind::kBias) {
      p.bf16.resize(p.master.size());
      const int64_t n = static_cast<int64_t>(p.master.size());
#pragma omp parallel for schedule(static) if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i) p.bf16[i] = f32_to_bf16(p.master[i]);
      v.dtype = DType::kBF16;
      v.data = reinterpret_cast<const uint8_t*>(p.bf16.data());
      v.nbytes = p.bf16.size() * 2;
    } else {
      v.dtype = DType::kF32;
      v.data = reinterpret_cast<const uint8_t*>(p.master.data());
      v.nbytes = p.master.size() * 4;
    }
    views.push_back(std::move(v));
  }
  // Binding is cheap (pointers, plus copies of the small norm vectors) and keeps model/ free
  // of any notion of mutable weights, so the model is simply rebound after each update.
  auto bound = model::Weights::bind(bind_config_, io::Checkpoint::from_memory("<trainer parameters>", std::move(views)));
  DSEEK_CHECK(bound.ok(), "binding the trainer's own parameters failed: {}", bound.status().message());
  weights_ = std::move(bound).value();
}

void Trainer::run_sequence(std::span<const int32_t> tokens, Gradients* grads, SequenceResult* out) const {
  const model::Weights& w = *weights_;
  const bool warmup = in_indexer_warmup();
  const Activations act = train_forward(w, tokens, nullptr, warmup ? AttentionStage::kDense : AttentionStage::kSparse);
  std::vector<float> dlogits;  // [T, V]
  out->loss = next_token_loss(act, config_.vocab_size, &dlogits);
  out->load = expert_load(config_, act);
  if (config_.has_indexer()) {
    const float weight = options_.indexer_loss_weight;
    out->indexer_loss = model_indexer_loss(w, act, weight, weight > 0 ? grads : nullptr);
  }
  if (warmup) return;  // the main model is frozen: L_I alone, no other loss or gradient
  std::vector<float> d_hidden;  // [T, D] from the MTP loss
  if (include_mtp_) {
    d_hidden.assign(act.hidden.size(), 0.0f);
    out->mtp_loss = mtp_loss_and_backward(w, act, options_.mtp_weight, grads, &d_hidden);
  }
  if (options_.seq_aux_alpha > 0) out->aux_loss = seq_balance_loss_and_backward(w, act, options_.seq_aux_alpha, grads);
  model_backward(w, act, {dlogits.data(), d_hidden.empty() ? nullptr : d_hidden.data()}, grads);
}

StepStats Trainer::train_step() {
  Stopwatch clock;
  StepStats s;
  s.lr = schedule_.at(step_);
  const bool warmup = in_indexer_warmup();
  s.indexer_warmup = warmup;
  const int64_t micro = options_.batch / options_.grad_accum;
  uint64_t grad_bytes = 0;
  for (const auto& [name, g] : grads_->tensors()) grad_bytes += g.values.size() * 4;
  const bool per_sequence = micro > 1 && grad_bytes * static_cast<uint64_t>(micro) <= kMaxSequenceGradBytes;
  if (per_sequence && static_cast<int64_t>(seq_grads_.size()) < micro)
    for (int64_t j = static_cast<int64_t>(seq_grads_.size()); j < micro; ++j)
      seq_grads_.push_back(std::make_unique<Gradients>(config_, include_mtp_));

  grads_->zero();
  std::vector<SequenceResult> results(static_cast<size_t>(options_.batch));
  for (int64_t a = 0; a < options_.grad_accum; ++a) {
    const int64_t first = a * micro;
    if (per_sequence) {
      // One sequence per thread, each into its own buffer (inner kernels run single-threaded
      // inside the region), then summed in sequence order: the same bits for any thread count.
#pragma omp parallel for schedule(dynamic, 1)
      for (int64_t j = 0; j < micro; ++j) {
        seq_grads_[j]->zero();
        run_sequence(data_.train_window(sequences_drawn_ + first + j), seq_grads_[j].get(), &results[first + j]);
      }
      for (auto& [name, g] : grads_->tensors()) {
        float* dst = grads_->at(name);
        const int64_t n = static_cast<int64_t>(g.values.size());
        for (int64_t j = 0; j < micro; ++j) {
          const float* src = seq_grads_[j]->at(name);
#pragma omp parallel for schedule(static) if (n > (1 << 16))
          for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
        }
      }
    } else {
      for (int64_t j = 0; j < micro; ++j)
        run_sequence(data_.train_window(sequences_drawn_ + first + j), grads_.get(), &results[first + j]);
    }
  }
  sequences_drawn_ += static_cast<uint64_t>(options_.batch);

  for (const SequenceResult& r : results) {
    s.loss += r.loss / static_cast<double>(options_.batch);
    s.mtp_loss += r.mtp_loss / static_cast<double>(options_.batch);
    s.aux_loss += r.aux_loss / static_cast<double>(options_.batch);
    s.indexer_loss += r.indexer_loss / static_cast<double>(options_.batch);
  }
  // The batch gradient is the mean over sequences: 1/batch folded into the update's scale.
  std::vector<std::span<const float>> all;
  for (const auto& [name, g] : grads_->tensors()) all.emplace_back(g.values);
  const double inv_batch = 1.0 / static_cast<double>(options_.batch);
  s.grad_norm = global_norm(all) * inv_batch;
  const double scale = inv_batch * clip_factor(s.grad_norm, options_.clip);
  ++step_;
  // V3.2: the warm-up updates the indexer alone; the other tensors start their AdamW steps
  // (bias correction) when the sparse stage starts.
  const int64_t frozen_steps = config_.has_indexer() ? std::min(options_.indexer_warmup_steps, step_) : 0;
  for (Parameter& p : params_) {
    if (!p.trainable) continue;
    const bool indexer = is_indexer_tensor(p.spec);
    if (warmup && !indexer) continue;
    const GradTensor& g = grads_->tensors().at(p.spec.name);
    AdamState::Moments& mo = adam_.at(p.spec.name, p.master.size());
    adamw_update(p.master, g.values, mo.m, mo.v, options_.adam, s.lr, scale, indexer ? step_ : step_ - frozen_steps,
                 decays(p.spec.kind));
  }
  // Auxiliary-loss-free balancing (V3 paper §2.1.2): after the step, from the step's loads.
  ExpertLoad load = results.front().load;
  for (size_t j = 1; j < results.size(); ++j) add_expert_load(results[j].load, &load);
  s.max_over_mean_load = max_over_mean(load);
  if (!warmup && options_.bias_update_speed > 0 && config_.topk_method == model::TopkMethod::kNoauxTc && !load.counts.empty()) {
    update_expert_bias(load, options_.bias_update_speed, weights_.get());
    for (Parameter& p : params_) {
      if (p.spec.kind != model::TensorKind::kBias) continue;
      for (int64_t l = 0; l < config_.num_hidden_layers; ++l)
        if (p.spec.name == model::layer_prefix(l) + "mlp.gate.e_score_correction_bias")
          p.master = weights_->layers[l].moe.e_score_correction_bias;
    }
  }
  refresh_weights();
  s.step = step_;
  s.tokens = options_.batch * options_.seq_len;
  s.seconds = clock.seconds();
  return s;
}

Trainer::Heldout Trainer::heldout(int64_t windows) {
  windows = std::max<int64_t>(1, std::min(windows, data_.heldout_windows()));
  const AttentionStage stage = in_indexer_warmup() ? AttentionStage::kDense : AttentionStage::kSparse;
  std::vector<double> losses(static_cast<size_t>(windows)), indexer(static_cast<size_t>(windows));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < windows; ++i) {
    const Activations act = train_forward(*weights_, data_.heldout_window(i), nullptr, stage);
    std::vector<float> dlogits;
    losses[i] = next_token_loss(act, config_.vocab_size, &dlogits);
    indexer[i] = model_indexer_loss(*weights_, act, 0.0f, nullptr);
  }
  Heldout out;
  for (int64_t i = 0; i < windows; ++i) {
    out.loss += losses[i] / static_cast<double>(windows);
    out.indexer_loss += indexer[i] / static_cast<double>(windows);
  }
  return out;
}

Status Trainer::save(const std::string& dir, const std::string& tokenizer_dir) const {
  const fs::path final_dir(dir), partial(dir + ".partial");
  std::error_code ec;
  fs::remove_all(partial, ec);
  fs::create_directories(partial, ec);
  if (ec) return Status::errorf("{}: cannot create directory: {}", partial.string(), ec.message());
  {
    std::FILE* f = std::fopen((partial / "config.json").c_str(), "wb");
    const bool ok = f && std::fwrite(config_json_.data(), 1, config_json_.size(), f) == config_json_.size();
    if (f) std::fclose(f);
    if (!ok) return Status::errorf("{}/config.json: write failed", partial.string());
  }
  const bool bf16 = options_.dtype == model::StoredDType::kBF16;
  io::SafetensorsWriter model_file, state;
  model_file.set_metadata("format", "pt");
  for (const Parameter& p : params_) {
    if (bf16 && p.spec.kind != model::TensorKind::kBias) {
      model_file.add(p.spec.name, DType::kBF16, p.spec.shape, p.bf16.data(), p.bf16.size() * 2);
      state.add_f32("master." + p.spec.name, p.spec.shape, p.master);
    } else {
      model_file.add_f32(p.spec.name, p.spec.shape, p.master);
    }
    if (!p.trainable) continue;
    const AdamState::Moments* mo = nullptr;
    auto it = adam_.tensors.find(p.spec.name);
    if (it != adam_.tensors.end()) mo = &it->second;
    const std::vector<float> zeros(mo ? 0 : p.master.size(), 0.0f);  // before the first step
    state.add_f32("adam.m." + p.spec.name, p.spec.shape, mo ? mo->m : zeros);
    state.add_f32("adam.v." + p.spec.name, p.spec.shape, mo ? mo->v : zeros);
  }
  state.set_metadata("step", std::to_string(step_));
  state.set_metadata("sequences_drawn", std::to_string(sequences_drawn_));
  state.set_metadata("dtype", bf16 ? "bf16" : "f32");
  state.set_metadata("options", options_to_json(options_));
  DSEEK_RETURN_IF_ERROR(model_file.write((partial / "model.safetensors").string()));
  DSEEK_RETURN_IF_ERROR(state.write((partial / "trainer_state.safetensors").string()));
  if (!tokenizer_dir.empty()) {
    for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
      const fs::path src = fs::path(tokenizer_dir) / name;
      if (!fs::exists(src, ec)) continue;
      fs::copy_file(src, partial / name, fs::copy_options::overwrite_existing, ec);
      if (ec) return Status::errorf("{}: cannot copy into {}: {}", src.string(), partial.string(), ec.message());
    }
  }
  fs::remove_all(final_dir, ec);
  fs::rename(partial, final_dir, ec);
  if (ec) return Status::errorf("{}: cannot rename to {}: {}", partial.string(), dir, ec.message());
  return {};
}

}  // namespace dseek::train
