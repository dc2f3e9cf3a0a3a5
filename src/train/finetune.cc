#include "train/finetune.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <numbers>
#include <numeric>
#include <random>

#include "base/check.h"
#include "io/checkpoint.h"
#include "io/safetensors_writer.h"
#include "model/tensor_table.h"
#include "train/indexer_backward.h"

namespace dseek::train {

namespace fs = std::filesystem;

struct Finetuner::Master {
  std::string name;
  std::vector<int64_t> shape;
  model::TensorKind kind = model::TensorKind::kLinear;
  std::vector<float> values;  // float32, row-major
};

double masked_next_token_loss(const Activations& act, std::span<const uint8_t> mask, int64_t vocab,
                              std::vector<float>* dlogits) {
  const int64_t T = act.T();
  DSEEK_CHECK(static_cast<int64_t>(mask.size()) == T, "loss mask of {} for {} tokens", mask.size(), T);
  dlogits->assign(static_cast<size_t>(T * vocab), 0.0f);
  int64_t n = 0;
  for (int64_t t = 1; t < T; ++t) n += mask[t] != 0;
  if (n == 0) return 0.0;
  double loss = 0;
  const float inv_n = 1.0f / static_cast<float>(n);
  for (int64_t t = 1; t < T; ++t) {
    if (mask[t] == 0) continue;
    // Row t - 1 predicts token t.
    const float* row = act.logits.data() + (t - 1) * vocab;
    const int32_t target = act.tokens[t];
    loss += cross_entropy_forward(row, &target, 1, vocab);
    cross_entropy_backward(row, &target, 1, vocab, inv_n, dlogits->data() + (t - 1) * vocab);
  }
  return loss / static_cast<double>(n);
}

Finetuner::~Finetuner() = default;

Expected<std::unique_ptr<Finetuner>> Finetuner::create(const std::string& model_dir, const FinetuneOptions& o) {
  std::unique_ptr<Finetuner> ft(new Finetuner);
  ft->model_dir_ = model_dir;
  ft->options_ = o;
  if (ft->options_.lr <= 0) ft->options_.lr = o.lora_rank > 0 ? 1e-3 : 1e-4;
  DSEEK_ASSIGN_OR_RETURN(ft->base_, model::load_weights(model_dir));
  const model::ModelConfig& c = ft->base_->config();
  if (c.int_quantization.enabled && o.lora_rank == 0)
    return Status::errorf("{}: full fine-tuning needs float or FP8 weights, not group-quantized (q8/q4) ones; "
                          "use --lora R on this model, or fine-tune the original checkpoint",
                          model_dir);
  if (o.lora_rank > 0) {
    LoraOptions lo;
    lo.rank = o.lora_rank;
    lo.alpha = o.lora_alpha > 0 ? o.lora_alpha : 2.0 * static_cast<double>(o.lora_rank);
    lo.targets = o.lora_targets;
    lo.seed = o.seed;
    DSEEK_ASSIGN_OR_RETURN(ft->adapters_, LoraAdapters::create(*ft->base_, lo));
    ft->weights_ = ft->base_.get();
    return ft;
  }

  // Full: a float32 master of every trainable tensor, bound over the base's other tensors.
  std::map<std::string, const ops::LinearWeight*> linears;
  for (const auto& [name, lw] : named_linears(*ft->base_)) linears[name + ".weight"] = lw;
  const Gradients layout(c);
  ft->masters_.reserve(layout.tensors().size());
  std::map<std::string, model::TensorKind> kinds;
  for (const model::TensorSpec& s : model::build_tensor_table(c)) kinds[s.name] = s.kind;
  const io::Checkpoint& ckpt = ft->base_->checkpoint();
  std::map<std::string, io::TensorView> views;
  for (const auto& [name, t] : ckpt.tensors()) views[name] = *t;
  for (const auto& [name, g] : layout.tensors()) {
    const io::TensorView* t = ckpt.find(name);
    if (t == nullptr) continue;  // an optional tensor this checkpoint does not have
    Master m{name, g.shape, kinds.at(name), std::vector<float>(g.values.size())};
    ops::LinearWeight lw;
    if (t->dtype == DType::kF8E4M3) {
      auto it = linears.find(name);
      if (it == linears.end()) return Status::errorf("{}: FP8 tensor '{}' cannot be fine-tuned in full", ckpt.listing(), name);
      lw = *it->second;
    } else {
      lw.dtype = t->dtype;
      lw.in = g.shape.back();
      lw.out = static_cast<int64_t>(m.values.size()) / lw.in;
      lw.data = t->data;
    }
    ops::decode_rows(lw, 0, lw.out, m.values.data());
    ft->masters_.push_back(std::move(m));
  }
  for (const Master& m : ft->masters_) {
    io::TensorView v;
    v.name = m.name;
    v.dtype = DType::kF32;
    v.shape = m.shape;
    v.data = reinterpret_cast<const uint8_t*>(m.values.data());
    v.nbytes = m.values.size() * sizeof(float);
    views[m.name] = v;
    views.erase(m.name + "_scale_inv");
  }
  std::vector<io::TensorView> list;
  for (auto& [name, v] : views) list.push_back(std::move(v));
  DSEEK_ASSIGN_OR_RETURN(ft->full_, model::Weights::bind(c, io::Checkpoint::from_memory("<fine-tuned masters>", std::move(list))));
  ft->weights_ = ft->full_.get();
  ft->grads_ = std::make_unique<Gradients>(c);
  return ft;
}

int64_t Finetuner::trainable_parameters() const {
  if (adapters_) return adapters_->parameter_count();
  int64_t n = 0;
  for (const Master& m : masters_) n += static_cast<int64_t>(m.values.size());
  return n;
}

Expected<double> Finetuner::loss(const ChatExample& ex) {
  DSEEK_RETURN_IF_ERROR(check_trainable(weights_->config(), ex.tokens));
  const Activations act = train_forward(*weights_, ex.tokens, adapters_.get());
  std::vector<float> dlogits;
  return masked_next_token_loss(act, ex.loss_mask, weights_->config().vocab_size, &dlogits);
}

Expected<double> Finetuner::step(const ChatExample& ex) {
  const ChatExample* one[] = {&ex};
  return step(one);
}

Expected<double> Finetuner::step(std::span<const ChatExample* const> batch, double lr_scale) {
  const model::ModelConfig& c = weights_->config();
  DSEEK_CHECK(!batch.empty(), "a fine-tuning step without conversations");
  for (const ChatExample* ex : batch) DSEEK_RETURN_IF_ERROR(check_trainable(c, ex->tokens));
  if (adapters_) {
    adapters_->zero_grad();
  } else {
    grads_->zero();
  }
  // Gradients of the batch's mean loss: each conversation's backward adds 1/B of its own.
  const float inv_batch = 1.0f / static_cast<float>(batch.size());
  double loss = 0;
  for (const ChatExample* ex : batch) {
    const Activations act = train_forward(*weights_, ex->tokens, adapters_.get());
    std::vector<float> dlogits;  // [T, V]
    loss += masked_next_token_loss(act, ex->loss_mask, c.vocab_size, &dlogits);
    for (float& d : dlogits) d *= inv_batch;
    if (adapters_) {
      Gradients frozen = Gradients::frozen();
      model_backward(*weights_, act, {dlogits.data(), nullptr}, &frozen, adapters_.get());
    } else {
      model_backward(*weights_, act, {dlogits.data(), nullptr}, grads_.get());
      // V3.2: the indexer learns from its own KL loss (the chat loss does not reach it).
      model_indexer_loss(*weights_, act, inv_batch, grads_.get());
    }
  }
  ++step_;
  AdamWHyper h;
  h.weight_decay = options_.weight_decay;
  const double lr = options_.lr * lr_scale;
  if (adapters_) {
    std::vector<std::span<const float>> all;
    for (const LoraTensor& t : adapters_->tensors()) {
      all.emplace_back(t.dA);
      all.emplace_back(t.dB);
    }
    const double factor = clip_factor(global_norm(all), options_.clip);
    for (LoraTensor& t : adapters_->tensors()) {
      for (auto [w, g, tag] : {std::tuple{&t.A, &t.dA, ".A"}, std::tuple{&t.B, &t.dB, ".B"}}) {
        AdamState::Moments& m = adam_.at(t.module + tag, w->size());
        adamw_update(*w, *g, m.m, m.v, h, lr, factor, step_, h.weight_decay > 0);
      }
    }
    return loss / static_cast<double>(batch.size());
  }
  std::vector<std::span<const float>> all;
  for (const Master& m : masters_) all.emplace_back(grads_->tensors().at(m.name).values);
  const double factor = clip_factor(global_norm(all), options_.clip);
  for (Master& m : masters_) {
    AdamState::Moments& mo = adam_.at(m.name, m.values.size());
    adamw_update(m.values, grads_->tensors().at(m.name).values, mo.m, mo.v, h, lr, factor, step_,
                 h.weight_decay > 0 && decays(m.kind));
  }
  return loss / static_cast<double>(batch.size());
}

Status copy_model_files(const std::string& model_dir, const std::string& out_dir) {
  std::error_code ec;
  for (const char* name : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"}) {
    const fs::path src = fs::path(model_dir) / name;
    if (!fs::exists(src, ec)) continue;
    fs::copy_file(src, fs::path(out_dir) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return Status::errorf("{}: cannot copy into {}: {}", src.string(), out_dir, ec.message());
  }
  return {};
}

Status Finetuner::save(const std::string& out_dir, bool merge) const {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return Status::errorf("{}: cannot create directory: {}", out_dir, ec.message());
  const std::string base_path = fs::absolute(model_dir_, ec).string();
  if (adapters_ && !merge) return adapters_->save(out_dir, base_path);

  std::vector<std::vector<float>> merged;
  std::vector<io::TensorView> views;
  if (adapters_) {
    views = merged_views(*base_, *adapters_, &merged);
  } else {
    for (const auto& [name, t] : full_->checkpoint().tensors()) views.push_back(*t);
  }
  io::SafetensorsWriter file;
  file.set_metadata("format", "pt");
  for (const io::TensorView& v : views) file.add(v.name, v.dtype, v.shape, v.data, v.nbytes);
  DSEEK_RETURN_IF_ERROR(file.write((fs::path(out_dir) / "model.safetensors").string()));
  // A sharded base leaves an index naming its shards; the output is one file.
  fs::remove(fs::path(out_dir) / "model.safetensors.index.json", ec);
  return copy_model_files(model_dir_, out_dir);
}

double finetune_lr_scale(const FinetuneOptions& o, int64_t step, int64_t steps) {
  if (step < o.warmup) return static_cast<double>(step + 1) / static_cast<double>(o.warmup + 1);
  if (!o.cosine || steps - o.warmup <= 1) return 1.0;
  constexpr double kFloor = 0.1;  // the last step runs at lr / 10
  const double progress = static_cast<double>(step - o.warmup) / static_cast<double>(steps - o.warmup - 1);
  return kFloor + (1.0 - kFloor) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

Status run_finetune(Finetuner& ft, const std::vector<ChatExample>& data, int64_t steps, uint64_t seed,
                    const std::function<void(const FinetuneProgress&)>& progress) {
  DSEEK_CHECK(!data.empty(), "run_finetune without data");
  const FinetuneOptions& o = ft.options();
  const int64_t batch = std::max<int64_t>(1, o.batch);
  std::vector<size_t> order(data.size());
  int64_t seen = 0;  // conversations taken so far: epochs are passes over the data in a fresh order
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<const ChatExample*> items;
    for (int64_t b = 0; b < batch; ++b, ++seen) {
      const size_t k = static_cast<size_t>(seen) % data.size();
      if (k == 0) {  // a new epoch: a fresh order, a pure function of (seed, epoch)
        std::iota(order.begin(), order.end(), 0);
        std::mt19937_64 rng(seed * 1000003u + static_cast<uint64_t>(seen) / data.size());
        std::shuffle(order.begin(), order.end(), rng);
      }
      items.push_back(&data[order[k]]);
    }
    for (const ChatExample* ex : items)
      if (Status st = check_trainable(ft.weights().config(), ex->tokens); !st.ok())
        return Status::errorf("conversation at line {}: {}", ex->line, st.message());
    Expected<double> loss = ft.step(items, finetune_lr_scale(o, s, steps));
    if (!loss.ok()) return Status::errorf("step {}: {}", s + 1, loss.status().message());
    if (progress) progress({s + 1, steps, loss.value(), items.back()->line});
  }
  return {};
}

}  // namespace dseek::train
