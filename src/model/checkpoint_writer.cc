#include "model/checkpoint_writer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "base/float_types.h"
#include "io/safetensors_writer.h"
#include "model/quantize.h"
#include "model/tensor_table.h"

namespace dseek::model {

namespace fs = std::filesystem;

float random_normal(uint64_t seed, uint64_t stream, uint64_t i) {
  // splitmix64 of (seed, stream, i) gives two uniforms; Box-Muller turns them into a normal.
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  const uint64_t h = mix(mix(seed ^ mix(stream)) + i);
  const double u1 = (static_cast<double>(h >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
  const double u2 = static_cast<double>(mix(h) >> 11) * 0x1.0p-53;      // [0, 1)
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

namespace {

// Linears that DeepSeek's FP8 checkpoints store in FP8: everything inside decoder blocks
// except the router and the indexer's head weights; embeddings, lm_head and norms stay BF16.
bool stored_as_fp8(const TensorSpec& spec) {
  if (spec.kind != TensorKind::kLinear) return false;
  if (spec.name == "lm_head.weight") return false;
  if (spec.name.find("shared_head.head") != std::string::npos) return false;
  if (spec.name.find(".mlp.gate.weight") != std::string::npos) return false;
  if (spec.name.find("indexer.weights_proj") != std::string::npos) return false;
  return true;
}

bool is_bias(const TensorSpec& spec) {
  return spec.kind == TensorKind::kBias ||
         (spec.name.size() >= 5 && spec.name.compare(spec.name.size() - 5, 5, ".bias") == 0);
}

// What one table row becomes on disk: the tensor, plus its scale grid when stored as FP8.
struct Planned {
  const TensorSpec* spec;
  uint64_t stream;  // RNG stream: the row's index in the table, independent of dtype/sharding
  DType dtype;
  int64_t numel;
  std::vector<int64_t> scale_shape;  // FP8 only
  std::optional<IntWeightType> int_type = std::nullopt;  // q8 / q4 only
  int64_t group_size = 32;
  uint64_t bytes() const {
    if (int_type)
      return int_codes_bytes(*int_type, spec->shape[0], spec->shape[1]) +
             int_scales_bytes(spec->shape[0], spec->shape[1], group_size);
    uint64_t b = static_cast<uint64_t>(numel) * dtype_size(dtype);
    if (!scale_shape.empty()) b += static_cast<uint64_t>(scale_shape[0] * scale_shape[1]) * 4;
    return b;
  }
};

std::vector<float> draw(const ModelConfig& c, const RandomCheckpointOptions& o, const Planned& p) {
  const TensorSpec& spec = *p.spec;
  std::vector<float> v(static_cast<size_t>(p.numel));
  double std = 0, mean = 0;
  if (o.init == InitStyle::kTraining) {
    if (spec.kind == TensorKind::kNorm) mean = is_bias(spec) ? 0.0 : 1.0;
    else if (spec.kind != TensorKind::kBias) std = c.initializer_range;
  } else {
    switch (spec.kind) {
      case TensorKind::kLinear: std = 1.0 / std::sqrt(static_cast<double>(spec.shape[1])); break;
      case TensorKind::kEmbedding: std = 1.0; break;
      case TensorKind::kNorm: mean = is_bias(spec) ? 0.0 : 1.0; std = 0.1; break;
      case TensorKind::kBias: std = 0.05; break;
    }
  }
  const float fstd = static_cast<float>(std), fmean = static_cast<float>(mean);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < p.numel; ++i)
    v[i] = fstd == 0.0f ? fmean : fmean + fstd * random_normal(o.seed, p.stream, static_cast<uint64_t>(i));
  return v;
}

// Block-wise FP8: scale = amax / 448 per [block_rows, block_cols] block (edges partial).
void quantize_fp8(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t br, int64_t bc,
                  std::vector<uint8_t>* q, std::vector<float>* scales) {
  const int64_t sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
  scales->assign(static_cast<size_t>(sr * sc), 1.0f);
  q->resize(static_cast<size_t>(rows * cols));
#pragma omp parallel for schedule(dynamic)
  for (int64_t bi = 0; bi < sr; ++bi) {
    for (int64_t bj = 0; bj < sc; ++bj) {
      const int64_t i1 = std::min(rows, (bi + 1) * br), j1 = std::min(cols, (bj + 1) * bc);
      float amax = 0.0f;
      for (int64_t i = bi * br; i < i1; ++i)
        for (int64_t j = bj * bc; j < j1; ++j) amax = std::max(amax, std::fabs(w[i * cols + j]));
      const float s = amax > 0 ? amax / kFp8E4M3Max : 1.0f;
      (*scales)[bi * sc + bj] = s;
      for (int64_t i = bi * br; i < i1; ++i)
        for (int64_t j = bj * bc; j < j1; ++j) (*q)[i * cols + j] = f32_to_fp8e4m3(w[i * cols + j] / s);
    }
  }
}

void add_floats(io::SafetensorsWriter& w, const std::string& name, const std::vector<int64_t>& shape, DType dtype,
                const std::vector<float>& v) {
  if (dtype == DType::kF32) {
    w.add(name, dtype, shape, v.data(), v.size() * 4);
    return;
  }
  std::vector<uint16_t> h(v.size());
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < v.size(); ++i) h[i] = f32_to_bf16(v[i]);
  w.add(name, dtype, shape, h.data(), h.size() * 2);
}

}  // namespace

Status write_random_checkpoint(const std::string& config_json, const std::string& out_dir,
                               const RandomCheckpointOptions& options) {
  const bool int_quant = options.dtype == StoredDType::kQ8 || options.dtype == StoredDType::kQ4;
  std::string config_text = config_json;
  if (int_quant) {
    IntQuantization q;
    q.weight_type = options.dtype == StoredDType::kQ8 ? IntWeightType::kQ8 : IntWeightType::kQ4;
    DSEEK_ASSIGN_OR_RETURN(ModelConfig plain, parse_model_config(config_json, out_dir + "/config.json"));
    std::vector<std::string> kept;
    for (const TensorSpec& spec : build_tensor_table(plain))
      if (spec.quantizable && !stored_int_type(spec, q)) kept.push_back(spec.name);
    DSEEK_ASSIGN_OR_RETURN(config_text, with_int_quantization_config(config_json, out_dir + "/config.json", q, kept));
  }
  DSEEK_ASSIGN_OR_RETURN(ModelConfig c, parse_model_config(config_text, out_dir + "/config.json"));
  if (options.dtype == StoredDType::kFP8 && !c.quantization.enabled)
    return Status::errorf("{}/config.json: FP8 weights need a quantization_config (quant_method fp8)", out_dir);
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return Status::errorf("{}: cannot create directory: {}", out_dir, ec.message());
  {
    std::ofstream f(fs::path(out_dir) / "config.json");
    f << config_text;
    if (!f) return Status::errorf("{}/config.json: write failed", out_dir);
  }

  // Plan: every row's dtype and size, then greedy shards in table order.
  const std::vector<TensorSpec> table = build_tensor_table(c);
  const DType float_dtype = options.dtype == StoredDType::kF32 ? DType::kF32 : DType::kBF16;
  std::vector<std::vector<Planned>> shards(1);
  uint64_t shard_bytes = 0, total = 0;
  for (size_t i = 0; i < table.size(); ++i) {
    const TensorSpec& spec = table[i];
    if (spec.group == TensorGroup::kMtp && !options.include_mtp) continue;
    Planned p{&spec, i, float_dtype, 1, {}};
    for (int64_t d : spec.shape) p.numel *= d;
    if (options.dtype == StoredDType::kFP8 && stored_as_fp8(spec)) {
      p.dtype = DType::kF8E4M3;
      p.scale_shape = {(spec.shape[0] + c.quantization.block_rows - 1) / c.quantization.block_rows,
                       (spec.shape[1] + c.quantization.block_cols - 1) / c.quantization.block_cols};
    } else if (int_quant && stored_int_type(spec, c.int_quantization)) {
      p.int_type = stored_int_type(spec, c.int_quantization);
      p.group_size = c.int_quantization.group_size;
    } else if (spec.kind == TensorKind::kBias || spec.name.find("indexer.k_norm") != std::string::npos) {
      p.dtype = DType::kF32;  // as DeepSeek stores the router bias and the indexer LayerNorm
    }
    if (shard_bytes > 0 && shard_bytes + p.bytes() > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(p);
    shard_bytes += p.bytes();
    total += p.bytes();
  }

  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t drawn = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
    io::SafetensorsWriter writer;
    writer.set_metadata("format", "pt");
    for (const Planned& p : shards[s]) {
      const std::vector<float> v = draw(c, options, p);
      if (p.dtype == DType::kF8E4M3) {
        std::vector<uint8_t> q;
        std::vector<float> scales;
        quantize_fp8(v, p.spec->shape[0], p.spec->shape[1], c.quantization.block_rows, c.quantization.block_cols, &q,
                     &scales);
        writer.add(p.spec->name, DType::kF8E4M3, p.spec->shape, q.data(), q.size());
        writer.add_f32(p.spec->name + "_scale_inv", p.scale_shape, scales);
        weight_map[p.spec->name + "_scale_inv"] = file;
      } else if (p.int_type) {
        const int64_t out = p.spec->shape[0], in = p.spec->shape[1];
        std::vector<uint8_t> codes(int_codes_bytes(*p.int_type, out, in));
        std::vector<uint16_t> scales(int_scales_bytes(out, in, p.group_size) / 2);
        DSEEK_RETURN_IF_ERROR(quantize_rows(*p.int_type, p.group_size, v.data(), out, in, codes.data(), scales.data())
                                  .with_context(p.spec->name));
        const bool q8 = *p.int_type == IntWeightType::kQ8;
        writer.add(p.spec->name, q8 ? DType::kI8 : DType::kU8, {out, q8 ? in : in / 2}, codes.data(), codes.size());
        writer.add(group_scale_name(p.spec->name), DType::kF16, {out, in / p.group_size}, scales.data(),
                   scales.size() * 2);
        weight_map[group_scale_name(p.spec->name)] = file;
      } else {
        add_floats(writer, p.spec->name, p.spec->shape, p.dtype, v);
      }
      weight_map[p.spec->name] = file;
      drawn += p.bytes();
      if (options.progress) options.progress(drawn, total);
    }
    DSEEK_RETURN_IF_ERROR(writer.write((fs::path(out_dir) / file).string()));
  }
  nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::ofstream f(fs::path(out_dir) / "model.safetensors.index.json");
  f << index.dump(2) << "\n";
  if (!f) return Status::errorf("{}/model.safetensors.index.json: write failed", out_dir);
  return {};
}

}  // namespace dseek::model
