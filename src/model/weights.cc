#include "model/weights.h"

#include <cmath>
#include <set>

#include "base/float_types.h"
#include "base/log.h"

namespace dseek::model {

namespace {

std::string shape_str(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

std::string where(const io::TensorView& t) { return t.file ? *t.file : std::string("?"); }

std::vector<float> decode_vector(const io::TensorView& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    switch (t.dtype) {
      case DType::kF32: v[i] = load_f32(t.data + 4 * i); break;
      case DType::kBF16: v[i] = bf16_to_f32(load_u16(t.data + 2 * i)); break;
      case DType::kF16: v[i] = f16_to_f32(load_u16(t.data + 2 * i)); break;
      default: break;  // excluded by dtype_allowed
    }
  }
  return v;
}

struct Bound {
  const io::TensorView* view = nullptr;
  LinearWeight linear;
};

class Binder {
 public:
  Binder(const ModelConfig& c, const io::Checkpoint& ckpt, std::deque<std::vector<float>>* scales)
      : c_(c), ckpt_(ckpt), scales_(scales) {}

  Status bind_all(const std::vector<TensorSpec>& table) {
    bool mtp_present = false;
    for (const auto& spec : table)
      if (spec.group == TensorGroup::kMtp && ckpt_.find(spec.name)) mtp_present = true;
    mtp_present_ = mtp_present;
    std::set<std::string> claimed;
    for (const auto& spec : table) {
      const io::TensorView* t = ckpt_.find(spec.name);
      if (!t) {
        if (spec.optional || (spec.group == TensorGroup::kMtp && !mtp_present)) continue;
        return Status::errorf("{}: tensor '{}' is missing (config.json implies shape {})", ckpt_.listing(), spec.name,
                              shape_str(spec.shape));
      }
      claimed.insert(spec.name);
      const bool int_quantized = t->dtype == DType::kI8 || t->dtype == DType::kU8;
      if (int_quantized) {
        DSEEK_RETURN_IF_ERROR(check_int_quantized(spec, *t));
      } else {
        if (!dtype_allowed(spec.kind, t->dtype))
          return Status::errorf("{}: tensor '{}' has dtype {}, expected {}", where(*t), spec.name,
                                dtype_name(t->dtype), allowed_dtypes(spec.kind));
        if (t->shape != spec.shape)
          return Status::errorf("{}: tensor '{}' has shape {}, expected {} from config.json", where(*t), spec.name,
                                shape_str(t->shape), shape_str(spec.shape));
      }
      Bound b;
      b.view = t;
      if (spec.kind == TensorKind::kLinear || spec.kind == TensorKind::kEmbedding) {
        b.linear.dtype = t->dtype;
        b.linear.out = spec.shape[0];
        b.linear.in = spec.shape[1];
        b.linear.data = t->data;
        if (t->dtype == DType::kF8E4M3) {
          DSEEK_RETURN_IF_ERROR(bind_scale(spec, b.linear));
          claimed.insert(spec.name + "_scale_inv");
        }
        if (int_quantized) {
          DSEEK_RETURN_IF_ERROR(bind_group_scales(spec, b.linear));
          claimed.insert(group_scale_name(spec.name));
        }
      }
      bound_[spec.name] = b;
    }
    size_t unknown = 0;
    std::string first_unknown;
    for (const auto& [name, t] : ckpt_.tensors()) {
      if (claimed.count(name)) continue;
      if (unknown++ == 0) first_unknown = name;
    }
    if (unknown)
      log_warn("{}: ignoring {} tensor(s) the config does not use, e.g. '{}'", ckpt_.dir(), unknown, first_unknown);
    return {};
  }

  bool mtp_present() const { return mtp_present_; }

  std::map<std::string, LinearWeight> all_linears() const {
    std::map<std::string, LinearWeight> out;
    for (const auto& [name, b] : bound_)
      if (!b.linear.empty()) out[name] = b.linear;
    return out;
  }

  LinearWeight linear(const std::string& name) const {
    auto it = bound_.find(name);
    return it == bound_.end() ? LinearWeight{} : it->second.linear;
  }
  std::vector<float> vec(const std::string& name) const {
    auto it = bound_.find(name);
    return it == bound_.end() ? std::vector<float>{} : decode_vector(*it->second.view);
  }

 private:
  // A dseek q8 (I8 [out, in]) or q4 (U8 [out, in / 2]) tensor where the table and config allow one.
  Status check_int_quantized(const TensorSpec& spec, const io::TensorView& t) const {
    const char* type = t.dtype == DType::kI8 ? "q8" : "q4";
    if (!spec.quantizable)
      return Status::errorf("{}: tensor '{}' has dtype {}, expected {} (it is never quantized to q8/q4)", where(t),
                            spec.name, dtype_name(t.dtype), allowed_dtypes(spec.kind));
    if (!c_.int_quantization.enabled)
      return Status::errorf(
          "{}: tensor '{}' has dtype {} ({}) but config.json has no quantization_config with quant_method 'dseek'",
          where(t), spec.name, dtype_name(t.dtype), type);
    const int64_t out = spec.shape[0], in = spec.shape[1], g = c_.int_quantization.group_size;
    if (in % g != 0)
      return Status::errorf("{}: tensor '{}' is {} but its {} inputs are not a multiple of group_size {}", where(t),
                            spec.name, type, in, g);
    const std::vector<int64_t> expect = {out, t.dtype == DType::kI8 ? in : in / 2};
    if (t.shape != expect)
      return Status::errorf("{}: tensor '{}' has shape {}, expected {} ({} of {} from config.json)", where(t),
                            spec.name, shape_str(t.shape), shape_str(expect), type, shape_str(spec.shape));
    return {};
  }

  Status bind_group_scales(const TensorSpec& spec, LinearWeight& w) {
    const std::string scale_name = group_scale_name(spec.name);
    const char* type = w.dtype == DType::kI8 ? "q8" : "q4";
    const io::TensorView* s = ckpt_.find(scale_name);
    if (!s)
      return Status::errorf("{}: tensor '{}' is {} ({}) but '{}' is missing", ckpt_.listing(), spec.name,
                            dtype_name(w.dtype), type, scale_name);
    if (s->dtype != DType::kF16)
      return Status::errorf("{}: tensor '{}' has dtype {}, expected F16", where(*s), scale_name, dtype_name(s->dtype));
    const int64_t g = c_.int_quantization.group_size;
    const std::vector<int64_t> expect = {w.out, w.in / g};
    if (s->shape != expect)
      return Status::errorf("{}: tensor '{}' has shape {}, expected {} (one scale per {} inputs of {})", where(*s),
                            scale_name, shape_str(s->shape), shape_str(expect), g, shape_str(spec.shape));
    w.group_scales = s->data;
    w.group_size = g;
    return {};
  }

  Status bind_scale(const TensorSpec& spec, LinearWeight& w) {
    const std::string scale_name = spec.name + "_scale_inv";
    const io::TensorView* s = ckpt_.find(scale_name);
    if (!s)
      return Status::errorf("{}: tensor '{}' is F8_E4M3 but '{}' is missing", ckpt_.listing(), spec.name, scale_name);
    const int64_t br = c_.quantization.block_rows, bc = c_.quantization.block_cols;
    const std::vector<int64_t> expect = {(w.out + br - 1) / br, (w.in + bc - 1) / bc};
    if (s->shape != expect)
      return Status::errorf("{}: tensor '{}' has shape {}, expected {} ({}x{} blocks over {})", where(*s), scale_name,
                            shape_str(s->shape), shape_str(expect), br, bc, shape_str(spec.shape));
    if (!dtype_allowed(TensorKind::kNorm, s->dtype))
      return Status::errorf("{}: tensor '{}' has dtype {}, expected {}", where(*s), scale_name, dtype_name(s->dtype),
                            allowed_dtypes(TensorKind::kNorm));
    std::vector<float> values = decode_vector(*s);
    for (float v : values)
      if (!std::isfinite(v) || v <= 0.0f)
        return Status::errorf("{}: tensor '{}' holds a non-positive or non-finite scale ({})", where(*s), scale_name, v);
    scales_->push_back(std::move(values));
    w.scale_inv = scales_->back().data();
    w.block_rows = br;
    w.block_cols = bc;
    return {};
  }

  const ModelConfig& c_;
  const io::Checkpoint& ckpt_;
  std::deque<std::vector<float>>* scales_;
  std::map<std::string, Bound> bound_;
  bool mtp_present_ = false;
};

FfnWeights bind_ffn(const Binder& b, const std::string& p) {
  return {b.linear(p + "gate_proj.weight"), b.linear(p + "up_proj.weight"), b.linear(p + "down_proj.weight")};
}

LayerWeights bind_layer(const Binder& b, const ModelConfig& c, int64_t layer) {
  const std::string p = layer_prefix(layer);
  LayerWeights w;
  w.input_layernorm = b.vec(p + "input_layernorm.weight");
  w.post_attention_layernorm = b.vec(p + "post_attention_layernorm.weight");
  const std::string a = p + "self_attn.";
  AttentionWeights& at = w.attn;
  at.q_a_proj = b.linear(a + "q_a_proj.weight");
  at.q_a_layernorm = b.vec(a + "q_a_layernorm.weight");
  at.q_b_proj = b.linear(a + "q_b_proj.weight");
  at.q_proj = b.linear(a + "q_proj.weight");
  at.kv_a_proj_with_mqa = b.linear(a + "kv_a_proj_with_mqa.weight");
  at.kv_a_layernorm = b.vec(a + "kv_a_layernorm.weight");
  at.kv_b_proj = b.linear(a + "kv_b_proj.weight");
  at.o_proj = b.linear(a + "o_proj.weight");
  if (c.has_indexer()) {
    const std::string ix = a + "indexer.";
    at.indexer.wq_b = b.linear(ix + "wq_b.weight");
    at.indexer.wk = b.linear(ix + "wk.weight");
    at.indexer.k_norm_weight = b.vec(ix + "k_norm.weight");
    at.indexer.k_norm_bias = b.vec(ix + "k_norm.bias");
    at.indexer.weights_proj = b.linear(ix + "weights_proj.weight");
  }
  const std::string m = p + "mlp.";
  w.is_moe = c.is_moe_layer(layer);
  if (!w.is_moe) {
    w.mlp = bind_ffn(b, m);
    return w;
  }
  w.moe.gate = b.linear(m + "gate.weight");
  w.moe.e_score_correction_bias = b.vec(m + "gate.e_score_correction_bias");
  for (int64_t e = 0; e < c.n_routed_experts; ++e) w.moe.experts.push_back(bind_ffn(b, fmt::format("{}experts.{}.", m, e)));
  w.moe.has_shared = c.n_shared_experts > 0;
  if (w.moe.has_shared) w.moe.shared = bind_ffn(b, m + "shared_experts.");
  return w;
}

}  // namespace

Expected<std::unique_ptr<Weights>> Weights::bind(const ModelConfig& config, std::unique_ptr<io::Checkpoint> ckpt) {
  auto w = std::unique_ptr<Weights>(new Weights());
  w->config_ = config;
  w->ckpt_ = std::move(ckpt);
  Binder b(config, *w->ckpt_, &w->owned_scales_);
  DSEEK_RETURN_IF_ERROR(b.bind_all(build_tensor_table(config)));
  w->linears_ = b.all_linears();

  w->embed_tokens = b.linear("model.embed_tokens.weight");
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) w->layers.push_back(bind_layer(b, config, l));
  w->norm = b.vec("model.norm.weight");
  w->lm_head = config.tie_word_embeddings ? w->embed_tokens : b.linear("lm_head.weight");
  if (b.mtp_present()) {
    for (int64_t k = 0; k < config.num_nextn_predict_layers; ++k) {
      const int64_t layer = config.num_hidden_layers + k;
      const std::string p = layer_prefix(layer);
      MtpWeights m;
      m.enorm = b.vec(p + "enorm.weight");
      m.hnorm = b.vec(p + "hnorm.weight");
      m.eh_proj = b.linear(p + "eh_proj.weight");
      m.embed_tokens = b.linear(p + "embed_tokens.weight");
      m.shared_head_norm = b.vec(p + "shared_head.norm.weight");
      m.shared_head_head = b.linear(p + "shared_head.head.weight");
      m.block = bind_layer(b, config, layer);
      w->mtp.push_back(std::move(m));
    }
  } else if (config.num_nextn_predict_layers > 0) {
    log_info("{}: config declares {} MTP layer(s) but the checkpoint has none", w->ckpt_->dir(),
             config.num_nextn_predict_layers);
  }
  return w;
}

namespace {

void mark(FfnWeights& f) { f.gate_proj.finite = f.up_proj.finite = f.down_proj.finite = true; }

void mark(LayerWeights& l) {
  AttentionWeights& a = l.attn;
  for (LinearWeight* w : {&a.q_a_proj, &a.q_b_proj, &a.q_proj, &a.kv_a_proj_with_mqa, &a.kv_b_proj, &a.o_proj,
                          &a.indexer.wq_b, &a.indexer.wk, &a.indexer.weights_proj, &l.moe.gate})
    w->finite = true;
  mark(l.mlp);
  mark(l.moe.shared);
  for (FfnWeights& e : l.moe.experts) mark(e);
}

}  // namespace

void Weights::mark_finite() {
  embed_tokens.finite = lm_head.finite = true;
  for (LayerWeights& l : layers) mark(l);
  for (MtpWeights& m : mtp) {
    m.eh_proj.finite = m.embed_tokens.finite = m.shared_head_head.finite = true;
    mark(m.block);
  }
  for (auto& [name, w] : linears_) w.finite = true;
}

const LinearWeight* Weights::find_linear(const std::string& name) const {
  auto it = linears_.find(name);
  return it == linears_.end() ? nullptr : &it->second;
}

Expected<std::unique_ptr<Weights>> load_weights(const std::string& model_dir) {
  DSEEK_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(model_dir));
  DSEEK_ASSIGN_OR_RETURN(auto ckpt, io::Checkpoint::open(model_dir));
  return Weights::bind(config, std::move(ckpt));
}

}  // namespace dseek::model
