#include "train/lora.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/checkpoint_writer.h"
#include "model/tensor_table.h"

namespace dseek::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";

bool is_attention(const std::string& module) { return module.find(".self_attn.") != std::string::npos; }

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Decodes a 2-D tensor of any float dtype the linear decoder reads into float32.
std::vector<float> decode_matrix(const io::TensorView& t) {
  ops::LinearWeight w;
  w.dtype = t.dtype;
  w.out = t.shape[0];
  w.in = t.shape[1];
  w.data = t.data;
  std::vector<float> out(static_cast<size_t>(w.out * w.in));
  ops::decode_rows(w, 0, w.out, out.data());
  return out;
}

}  // namespace

Expected<uint32_t> lora_targets_from_name(const std::string& name) {
  if (name == "attn") return static_cast<uint32_t>(kLoraAttention);
  if (name == "experts") return static_cast<uint32_t>(kLoraExperts);
  if (name == "all") return static_cast<uint32_t>(kLoraAll);
  return Status::errorf("--lora-targets '{}': expected attn, experts or all", name);
}

std::string lora_a_name(const std::string& module) { return "base_model.model." + module + ".lora_A.weight"; }
std::string lora_b_name(const std::string& module) { return "base_model.model." + module + ".lora_B.weight"; }

std::vector<std::pair<std::string, const ops::LinearWeight*>> named_linears(const model::Weights& w) {
  std::vector<std::pair<std::string, const ops::LinearWeight*>> out;
  auto add = [&](const std::string& name, const ops::LinearWeight& lw) {
    if (!lw.empty()) out.emplace_back(name, &lw);
  };
  auto add_ffn = [&](const std::string& p, const model::FfnWeights& f) {
    add(p + "gate_proj", f.gate_proj);
    add(p + "up_proj", f.up_proj);
    add(p + "down_proj", f.down_proj);
  };
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const model::LayerWeights& lw = w.layers[l];
    const std::string p = model::layer_prefix(static_cast<int64_t>(l)), a = p + "self_attn.";
    add(a + "q_a_proj", lw.attn.q_a_proj);
    add(a + "q_b_proj", lw.attn.q_b_proj);
    add(a + "q_proj", lw.attn.q_proj);
    add(a + "kv_a_proj_with_mqa", lw.attn.kv_a_proj_with_mqa);
    add(a + "kv_b_proj", lw.attn.kv_b_proj);
    add(a + "o_proj", lw.attn.o_proj);
    if (lw.is_moe) {
      for (size_t e = 0; e < lw.moe.experts.size(); ++e) add_ffn(fmt::format("{}mlp.experts.{}.", p, e), lw.moe.experts[e]);
      if (lw.moe.has_shared) add_ffn(p + "mlp.shared_experts.", lw.moe.shared);
    } else {
      add_ffn(p + "mlp.", lw.mlp);
    }
  }
  return out;
}

Expected<std::unique_ptr<LoraAdapters>> LoraAdapters::create(const model::Weights& w, const LoraOptions& o) {
  if (o.rank < 1) return Status::errorf("--lora {}: the rank must be at least 1", o.rank);
  if (!(o.alpha > 0)) return Status::errorf("--lora-alpha {}: must be positive", o.alpha);
  std::unique_ptr<LoraAdapters> a(new LoraAdapters);
  a->rank_ = o.rank;
  a->alpha_ = o.alpha;
  uint64_t stream = 0;
  for (const auto& [module, lw] : named_linears(w)) {
    const uint32_t kind = is_attention(module) ? kLoraAttention : kLoraExperts;
    if ((o.targets & kind) == 0) continue;
    LoraTensor t;
    t.module = module;
    t.in = lw->in;
    t.out = lw->out;
    t.A.resize(static_cast<size_t>(o.rank * t.in));
    // A ~ N(0, 1/in): u = A x keeps the scale of x; B = 0 makes the first forward the base's.
    const float std = 1.0f / std::sqrt(static_cast<float>(t.in));
    for (size_t i = 0; i < t.A.size(); ++i) t.A[i] = std * model::random_normal(o.seed, stream, i);
    ++stream;
    t.B.assign(static_cast<size_t>(t.out * o.rank), 0.0f);
    a->tensors_.push_back(std::move(t));
  }
  if (a->tensors_.empty()) return Status::error("--lora-targets: the model has no linear of that kind to adapt");
  DSEEK_RETURN_IF_ERROR(a->bind(w, "<new adapters>"));
  return a;
}

Status LoraAdapters::bind(const model::Weights& w, const std::string& where) {
  std::map<std::string, const ops::LinearWeight*> linears;
  for (const auto& [name, lw] : named_linears(w)) linears[name] = lw;
  by_weight_.clear();
  for (size_t i = 0; i < tensors_.size(); ++i) {
    LoraTensor& t = tensors_[i];
    auto it = linears.find(t.module);
    if (it == linears.end())
      return Status::errorf("{}: tensor '{}' adapts '{}.weight', which the base model does not have (adapter for another model?)",
                            where, lora_a_name(t.module), t.module);
    const ops::LinearWeight& lw = *it->second;
    if (lw.in != t.in || lw.out != t.out)
      return Status::errorf("{}: tensors '{}' / '{}' have shapes {} / {}, the base model's '{}.weight' [{}, {}] needs "
                            "[{}, {}] / [{}, {}]",
                            where, lora_a_name(t.module), lora_b_name(t.module), shape_str({rank_, t.in}),
                            shape_str({t.out, rank_}), t.module, lw.out, lw.in, rank_, lw.in, lw.out, rank_);
    by_weight_[lw.data] = i;
    t.dA.assign(t.A.size(), 0.0f);
    t.dB.assign(t.B.size(), 0.0f);
  }
  return {};
}

LoraTensor* LoraAdapters::find(const ops::LinearWeight& w) {
  auto it = by_weight_.find(w.data);
  return it == by_weight_.end() ? nullptr : &tensors_[it->second];
}

int64_t LoraAdapters::parameter_count() const {
  int64_t n = 0;
  for (const LoraTensor& t : tensors_) n += static_cast<int64_t>(t.A.size() + t.B.size());
  return n;
}

void LoraAdapters::zero_grad() {
  for (LoraTensor& t : tensors_) {
    std::fill(t.dA.begin(), t.dA.end(), 0.0f);
    std::fill(t.dB.begin(), t.dB.end(), 0.0f);
  }
}

void LoraAdapters::forward(const ops::LinearWeight& w, const float* x, int64_t T, float* y) {
  LoraTensor* t = find(w);
  if (t == nullptr) return;
  const int64_t r = rank_, in = t->in, out = t->out;
  const float s = scale();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < T; ++i) {
    std::vector<float> u(static_cast<size_t>(r));  // [r] = A x
    const float* xi = x + i * in;
    for (int64_t j = 0; j < r; ++j) {
      const float* aj = t->A.data() + j * in;
      double acc = 0;
      for (int64_t k = 0; k < in; ++k) acc += static_cast<double>(aj[k]) * xi[k];
      u[j] = static_cast<float>(acc);
    }
    float* yi = y + i * out;
    for (int64_t o = 0; o < out; ++o) {
      const float* bo = t->B.data() + o * r;
      double acc = 0;
      for (int64_t j = 0; j < r; ++j) acc += static_cast<double>(bo[j]) * u[j];
      yi[o] += s * static_cast<float>(acc);
    }
  }
}

void LoraAdapters::backward(const ops::LinearWeight& w, const float* x, const float* dy, int64_t T, float* dx) {
  LoraTensor* t = find(w);
  if (t == nullptr) return;
  const int64_t r = rank_, in = t->in, out = t->out;
  const float s = scale();
  // u = A x [T, r] (recomputed: cheaper than storing it); du = scale * dy B [T, r].
  std::vector<float> u(static_cast<size_t>(T * r)), du(static_cast<size_t>(T * r));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < T; ++i) {
    for (int64_t j = 0; j < r; ++j) {
      const float* aj = t->A.data() + j * in;
      double acc = 0, dacc = 0;
      for (int64_t k = 0; k < in; ++k) acc += static_cast<double>(aj[k]) * x[i * in + k];
      for (int64_t o = 0; o < out; ++o) dacc += static_cast<double>(dy[i * out + o]) * t->B[o * r + j];
      u[i * r + j] = static_cast<float>(acc);
      du[i * r + j] = s * static_cast<float>(dacc);
    }
  }
  // dB [out, r] += scale * dy^T u
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < out; ++o)
    for (int64_t j = 0; j < r; ++j) {
      double acc = 0;
      for (int64_t i = 0; i < T; ++i) acc += static_cast<double>(dy[i * out + o]) * u[i * r + j];
      t->dB[o * r + j] += s * static_cast<float>(acc);
    }
  // dA [r, in] += du^T x
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < r; ++j)
    for (int64_t k = 0; k < in; ++k) {
      double acc = 0;
      for (int64_t i = 0; i < T; ++i) acc += static_cast<double>(du[i * r + j]) * x[i * in + k];
      t->dA[j * in + k] += static_cast<float>(acc);
    }
  // dx [T, in] += du A
  if (dx != nullptr) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < r; ++j) {
        const float d = du[i * r + j];
        const float* aj = t->A.data() + j * in;
        for (int64_t k = 0; k < in; ++k) dx[i * in + k] += d * aj[k];
      }
  }
}

std::vector<float> LoraAdapters::merged(size_t i, const ops::LinearWeight& base) const {
  const LoraTensor& t = tensors_[i];
  DSEEK_CHECK(base.out == t.out && base.in == t.in, "merging adapter '{}' into a [{}, {}] weight", t.module, base.out,
              base.in);
  const int64_t r = rank_;
  const float s = scale();
  std::vector<float> w(static_cast<size_t>(t.out * t.in));
  ops::decode_rows(base, 0, t.out, w.data());
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < t.out; ++o)
    for (int64_t k = 0; k < t.in; ++k) {
      double acc = 0;
      for (int64_t j = 0; j < r; ++j) acc += static_cast<double>(t.B[o * r + j]) * t.A[j * t.in + k];
      w[o * t.in + k] += s * static_cast<float>(acc);
    }
  return w;
}

Status LoraAdapters::save(const std::string& dir, const std::string& base_model_path) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::errorf("{}: cannot create directory: {}", dir, ec.message());
  std::set<std::string> short_names;
  io::SafetensorsWriter file;
  file.set_metadata("format", "pt");
  for (const LoraTensor& t : tensors_) {
    short_names.insert(t.module.substr(t.module.rfind('.') + 1));
    file.add_f32(lora_a_name(t.module), {rank_, t.in}, t.A);
    file.add_f32(lora_b_name(t.module), {t.out, rank_}, t.B);
  }
  nlohmann::ordered_json cfg;
  cfg["peft_type"] = "LORA";
  cfg["task_type"] = "CAUSAL_LM";
  cfg["base_model_name_or_path"] = base_model_path;
  cfg["r"] = rank_;
  cfg["lora_alpha"] = alpha_;
  cfg["lora_dropout"] = 0.0;
  cfg["bias"] = "none";
  cfg["target_modules"] = std::vector<std::string>(short_names.begin(), short_names.end());
  const std::string path = (fs::path(dir) / kConfigFile).string();
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << cfg.dump(2) << "\n";
    if (!f) return Status::errorf("{}: write failed", path);
  }
  return file.write((fs::path(dir) / kWeightsFile).string());
}

Expected<std::unique_ptr<LoraAdapters>> LoraAdapters::load(const std::string& dir, const model::Weights& w) {
  const std::string cfg_path = (fs::path(dir) / kConfigFile).string();
  const std::string st_path = (fs::path(dir) / kWeightsFile).string();
  DSEEK_ASSIGN_OR_RETURN(const io::Json cfg, io::read_json_file(cfg_path));
  if (!cfg.is_object() || !cfg.contains("r") || !cfg["r"].is_number_integer() || cfg["r"].get<int64_t>() < 1)
    return Status::errorf("{}: field 'r' must be a positive integer", cfg_path);
  std::unique_ptr<LoraAdapters> a(new LoraAdapters);
  a->rank_ = cfg["r"].get<int64_t>();
  a->alpha_ = static_cast<double>(a->rank_);  // PEFT's default lora_alpha is 8; absent here means scale 1
  if (cfg.contains("lora_alpha")) {
    if (!cfg["lora_alpha"].is_number() || !(cfg["lora_alpha"].get<double>() > 0))
      return Status::errorf("{}: field 'lora_alpha' must be a positive number", cfg_path);
    a->alpha_ = cfg["lora_alpha"].get<double>();
  }
  DSEEK_ASSIGN_OR_RETURN(auto file, io::SafetensorsFile::open(st_path));
  const std::string prefix = "base_model.model.", a_suffix = ".lora_A.weight", b_suffix = ".lora_B.weight";
  auto ends_with = [](const std::string& s, const std::string& suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  for (const auto& [name, view] : file->tensors()) {
    const bool is_a = ends_with(name, a_suffix), is_b = ends_with(name, b_suffix);
    if (name.rfind(prefix, 0) != 0 || (!is_a && !is_b))
      return Status::errorf("{}: tensor '{}' is not a LoRA tensor (base_model.model.<module>.lora_A/B.weight)",
                            st_path, name);
    if (is_b) continue;  // found through its A
    const std::string module = name.substr(prefix.size(), name.size() - prefix.size() - a_suffix.size());
    const io::TensorView* b = file->find(lora_b_name(module));
    if (b == nullptr) return Status::errorf("{}: tensor '{}' is missing (its lora_A is there)", st_path, lora_b_name(module));
    for (const io::TensorView* t : {&view, b}) {
      if (t->shape.size() != 2 || (t->dtype != DType::kF32 && t->dtype != DType::kBF16 && t->dtype != DType::kF16))
        return Status::errorf("{}: tensor '{}' must be a 2-D F32/BF16/F16 matrix, got {} {}", st_path, t->name,
                              dtype_name(t->dtype), shape_str(t->shape));
    }
    if (view.shape[0] != a->rank_ || b->shape[1] != a->rank_)
      return Status::errorf("{}: tensors '{}' {} / '{}' {} do not have rank r = {} ({})", st_path, name,
                            shape_str(view.shape), b->name, shape_str(b->shape), a->rank_, cfg_path);
    LoraTensor t;
    t.module = module;
    t.in = view.shape[1];
    t.out = b->shape[0];
    t.A = decode_matrix(view);
    t.B = decode_matrix(*b);
    a->tensors_.push_back(std::move(t));
  }
  for (const auto& [name, view] : file->tensors()) {
    if (!ends_with(name, b_suffix)) continue;
    const std::string module = name.substr(prefix.size(), name.size() - prefix.size() - b_suffix.size());
    if (file->find(lora_a_name(module)) == nullptr)
      return Status::errorf("{}: tensor '{}' is missing (its lora_B is there)", st_path, lora_a_name(module));
  }
  if (a->tensors_.empty()) return Status::errorf("{}: no LoRA tensors", st_path);
  DSEEK_RETURN_IF_ERROR(a->bind(w, st_path));
  return a;
}

std::vector<io::TensorView> merged_views(const model::Weights& base, const LoraAdapters& adapters,
                                         std::vector<std::vector<float>>* merged) {
  std::map<std::string, const ops::LinearWeight*> linears;
  for (const auto& [name, lw] : named_linears(base)) linears[name] = lw;
  std::map<std::string, io::TensorView> views;
  for (const auto& [name, t] : base.checkpoint().tensors()) views[name] = *t;
  merged->clear();
  merged->reserve(adapters.tensors().size());  // views point into these vectors: no reallocation
  for (size_t i = 0; i < adapters.tensors().size(); ++i) {
    const LoraTensor& t = adapters.tensors()[i];
    const std::string name = t.module + ".weight";
    merged->push_back(adapters.merged(i, *linears.at(t.module)));
    io::TensorView v;
    v.name = name;
    v.dtype = DType::kF32;
    v.shape = {t.out, t.in};
    v.data = reinterpret_cast<const uint8_t*>(merged->back().data());
    v.nbytes = merged->back().size() * sizeof(float);
    views[name] = v;
    views.erase(name + "_scale_inv");  // the merged copy is float32: no FP8 block scales
  }
  std::vector<io::TensorView> out;
  for (auto& [name, v] : views) out.push_back(std::move(v));
  return out;
}

Expected<AdaptedWeights> load_weights_with_lora(const std::string& model_dir, const std::string& adapter_dir) {
  struct Owned {
    std::unique_ptr<model::Weights> base;
    std::vector<std::vector<float>> merged;
  };
  auto owned = std::make_shared<Owned>();
  DSEEK_ASSIGN_OR_RETURN(owned->base, model::load_weights(model_dir));
  DSEEK_ASSIGN_OR_RETURN(auto adapters, LoraAdapters::load(adapter_dir, *owned->base));
  std::vector<io::TensorView> views = merged_views(*owned->base, *adapters, &owned->merged);
  auto ckpt = io::Checkpoint::from_memory(model_dir + " + " + adapter_dir, std::move(views));
  AdaptedWeights out;
  DSEEK_ASSIGN_OR_RETURN(out.weights, model::Weights::bind(owned->base->config(), std::move(ckpt)));
  out.keep_alive = owned;
  return out;
}

}  // namespace dseek::train
