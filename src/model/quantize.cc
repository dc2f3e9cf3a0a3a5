#include "model/quantize.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/float_types.h"
#include "io/json_file.h"
#include "io/mapped_file.h"
#include "model/weights.h"

namespace dseek::model {

namespace fs = std::filesystem;

namespace {

constexpr float kF16Max = 65504.0f;
// Fewer weights than this are done on one thread: a parallel region costs more than they do
// (and much more on a loaded machine, where a descheduled thread holds up the barrier).
constexpr int64_t kParallelMin = int64_t{1} << 18;

// Round half away from zero, as std::round, in a form compilers vectorize: rint, then ties
// (exactly .5 away, an exact subtraction for |x| < 2^23) pushed outwards.
inline float round_away(float x) {
  const float r = std::nearbyint(x);
  return std::fabs(x - r) == 0.5f ? x + std::copysign(0.5f, x) : r;
}

inline float code(float w, float s, float lo, float hi) { return std::min(hi, std::max(lo, round_away(w / s))); }

// Squared error of a group's codes for scale s, and the sums a least-squares refit needs.
struct Fit {
  float err = 0, wq = 0, qq = 0;
};

Fit fit(const float* w, int64_t g, float s, float lo, float hi) {
  float err = 0, wq = 0, qq = 0;
#pragma omp simd reduction(+ : err, wq, qq)
  for (int64_t i = 0; i < g; ++i) {
    const float q = code(w[i], s, lo, hi);
    const float d = w[i] - q * s;
    err += d * d;
    wq += w[i] * q;
    qq += q * q;
  }
  return {err, wq, qq};
}

// One group: codes q[g] and the F16 scale bits. amax = max |w|, finite and small enough for an
// F16 scale. The q4 search only scores scales (no stores); codes are made once at the end.
void quantize_group(IntWeightType type, const float* w, int64_t g, float amax, int8_t* q, uint16_t* scale) {
  const bool q8 = type == IntWeightType::kQ8;
  const float lo = q8 ? -127.0f : -8.0f, hi = q8 ? 127.0f : 7.0f;
  uint16_t best_bits = 0;  // F16 +0: the group decodes as zeros (all zero, or too small for any scale)
  auto usable = [](float s) { return s > 0.0f && std::isfinite(s); };
  if (amax > 0.0f && q8) {
    best_bits = f32_to_f16(amax / 127.0f);
    if (!usable(f16_to_f32(best_bits))) best_bits = 0;
  } else if (amax > 0.0f) {
    float best = std::numeric_limits<float>::infinity();
    for (float d : kQ4Divisors) {
      const uint16_t bits = f32_to_f16(amax / d);
      const float s = f16_to_f32(bits);
      if (!usable(s)) continue;
      const Fit f = fit(w, g, s, lo, hi);
      if (f.err < best) {
        best = f.err;
        best_bits = bits;
      }
      // Least-squares refit of this candidate's codes: s = sum(w q) / sum(q^2).
      if (f.qq <= 0.0f) continue;
      const uint16_t refit_bits = f32_to_f16(f.wq / f.qq);
      const float r = f16_to_f32(refit_bits);
      if (!usable(r)) continue;
      const float e = fit(w, g, r, lo, hi).err;
      if (e < best) {
        best = e;
        best_bits = refit_bits;
      }
    }
  }
  *scale = best_bits;
  const float s = f16_to_f32(best_bits);
  for (int64_t i = 0; i < g; ++i) q[i] = best_bits == 0 ? int8_t{0} : static_cast<int8_t>(code(w[i], s, lo, hi));
}

}  // namespace

uint64_t int_codes_bytes(IntWeightType type, int64_t out, int64_t in) {
  return static_cast<uint64_t>(out) * static_cast<uint64_t>(type == IntWeightType::kQ8 ? in : in / 2);
}

uint64_t int_scales_bytes(int64_t out, int64_t in, int64_t group_size) {
  return static_cast<uint64_t>(out) * static_cast<uint64_t>(in / group_size) * 2;
}

Status quantize_rows(IntWeightType type, int64_t group_size, const float* src, int64_t n, int64_t in,
                     uint8_t* codes, uint16_t* scales) {
  DSEEK_CHECK(group_size > 0 && group_size % 2 == 0 && in % group_size == 0, "group size {} for {} inputs",
              group_size, in);
  const int64_t groups = in / group_size;
  const int64_t row_bytes = type == IntWeightType::kQ8 ? in : in / 2;
  const float max_amax = kF16Max * (type == IntWeightType::kQ8 ? 127.0f : kQ4Divisors[0]);
  int64_t bad_row = -1, bad_col = -1;
  float bad_value = 0.0f;
#pragma omp parallel if (n * in >= kParallelMin)
  {
    std::vector<int8_t> q(static_cast<size_t>(group_size));
#pragma omp for schedule(dynamic, 8)
    for (int64_t r = 0; r < n; ++r) {
      const float* row = src + r * in;
      for (int64_t gi = 0; gi < groups; ++gi) {
        const float* w = row + gi * group_size;
        float amax = 0.0f;
        int64_t arg = 0;
        for (int64_t i = 0; i < group_size; ++i) {
          if (!std::isfinite(w[i])) {
            amax = w[i];
            arg = i;
            break;
          }
          if (std::fabs(w[i]) > amax) {
            amax = std::fabs(w[i]);
            arg = i;
          }
        }
        if (!std::isfinite(amax) || amax > max_amax) {
#pragma omp critical
          if (bad_row < 0 || r < bad_row) {
            bad_row = r;
            bad_col = gi * group_size + arg;
            bad_value = w[arg];
          }
          continue;
        }
        quantize_group(type, w, group_size, amax, q.data(), scales + r * groups + gi);
        uint8_t* out = codes + r * row_bytes;
        if (type == IntWeightType::kQ8) {
          std::memcpy(out + gi * group_size, q.data(), static_cast<size_t>(group_size));
        } else {
          for (int64_t i = 0; i < group_size; i += 2)
            out[(gi * group_size + i) / 2] = static_cast<uint8_t>((q[i] + 8) | ((q[i + 1] + 8) << 4));
        }
      }
    }
  }
  if (bad_row >= 0) {
    if (!std::isfinite(bad_value))
      return Status::errorf("row {}, column {}: non-finite value {}", bad_row, bad_col, bad_value);
    return Status::errorf("row {}, column {}: |{}| is too large for an F16 scale (at most {})", bad_row, bad_col,
                          bad_value, max_amax);
  }
  return {};
}

std::optional<IntWeightType> stored_int_type(const TensorSpec& spec, const IntQuantization& q) {
  if (!spec.quantizable || spec.shape.size() != 2 || spec.shape[1] % q.group_size != 0) return std::nullopt;
  return spec.output_head ? q.lm_head_type : q.weight_type;
}

Expected<std::string> with_int_quantization_config(const std::string& config_json, const std::string& source,
                                                   const IntQuantization& q, const std::vector<std::string>& kept) {
  DSEEK_ASSIGN_OR_RETURN(io::Json j, io::parse_json(config_json, source));
  if (!j.is_object()) return Status::errorf("{}: expected a JSON object", source);
  // Module names, as Hugging Face's quantizers list what they leave alone.
  std::vector<std::string> not_converted = {"model.embed_tokens", "mlp.gate", "indexer.weights_proj"};
  for (const std::string& name : kept) not_converted.push_back(name.substr(0, name.rfind(".weight")));
  j["quantization_config"] = {{"quant_method", "dseek"},
                              {"weight_type", int_weight_type_name(q.weight_type)},
                              {"lm_head_type", int_weight_type_name(q.lm_head_type)},
                              {"group_size", q.group_size},
                              {"scale_dtype", "float16"},
                              {"modules_to_not_convert", not_converted}};
  return j.dump(2) + "\n";
}

namespace {

// One tensor of the output and where its bytes come from.
struct OutTensor {
  enum class How { kCopy, kCodes, kScales, kToBF16 };
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
  How how = How::kCopy;
  const io::TensorView* view = nullptr;   // kCopy
  const LinearWeight* linear = nullptr;   // kCodes, kToBF16
  IntWeightType type = IntWeightType::kQ4;
  uint64_t source_bytes = 0;  // read for this tensor (progress)
};

// Writes one safetensors shard whose header is known before its data: tensors are streamed
// in, in plan order, so no shard is ever held in memory. Temporary name, renamed when done.
class ShardStream {
 public:
  static Expected<std::unique_ptr<ShardStream>> open(const std::string& path, const std::vector<OutTensor*>& tensors) {
    nlohmann::json header = nlohmann::json::object();
    header["__metadata__"] = {{"format", "pt"}};
    uint64_t offset = 0;
    for (const OutTensor* t : tensors) {
      header[t->name] = {{"dtype", std::string(dtype_name(t->dtype))},
                         {"shape", t->shape},
                         {"data_offsets", {offset, offset + t->bytes}}};
      offset += t->bytes;
    }
    std::string text = header.dump();
    while (text.size() % 8 != 0) text.push_back(' ');
    auto s = std::unique_ptr<ShardStream>(new ShardStream());
    s->path_ = path;
    s->tmp_ = path + ".tmp";
    s->expected_ = offset;
    s->f_ = std::fopen(s->tmp_.c_str(), "wb");
    if (!s->f_) return Status::errorf("{}: cannot create: {}", s->tmp_, std::strerror(errno));
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
    s->ok_ = std::fwrite(len, 1, 8, s->f_) == 8 && std::fwrite(text.data(), 1, text.size(), s->f_) == text.size();
    return s;
  }
  ~ShardStream() {
    if (f_) {
      std::fclose(f_);
      std::remove(tmp_.c_str());
    }
  }
  void write(const void* p, size_t n) {
    if (n == 0) return;
    ok_ = ok_ && std::fwrite(p, 1, n, f_) == n;
    written_ += n;
  }
  Status close() {
    DSEEK_CHECK(written_ == expected_, "{}: wrote {} data bytes, planned {}", path_, written_, expected_);
    ok_ = std::fclose(f_) == 0 && ok_;
    f_ = nullptr;
    if (!ok_) {
      std::remove(tmp_.c_str());
      return Status::errorf("{}: write failed (disk full?)", path_);
    }
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      std::remove(tmp_.c_str());
      return Status::errorf("{}: cannot rename from {}: {}", path_, tmp_, std::strerror(errno));
    }
    return {};
  }

 private:
  ShardStream() = default;
  std::string path_, tmp_;
  FILE* f_ = nullptr;
  bool ok_ = false;
  uint64_t written_ = 0, expected_ = 0;
};

// Rows per chunk so a chunk of decoded float rows is about 16 MB.
int64_t chunk_rows(int64_t in) { return std::max<int64_t>(1, (int64_t{4} << 20) / std::max<int64_t>(in, 1)); }

// Streams codes into the shard and keeps the tensor's scales for the companion that follows.
Status write_codes(const OutTensor& t, int64_t group_size, ShardStream& out, std::vector<uint16_t>* scales) {
  const LinearWeight& w = *t.linear;
  const int64_t rows = chunk_rows(w.in);
  const int64_t groups = w.in / group_size;
  scales->assign(static_cast<size_t>(w.out * groups), 0);
  std::vector<float> x;
  std::vector<uint8_t> codes;
  for (int64_t r0 = 0; r0 < w.out; r0 += rows) {
    const int64_t n = std::min(rows, w.out - r0);
    x.resize(static_cast<size_t>(n * w.in));
#pragma omp parallel for schedule(dynamic, 8) if (n * w.in >= kParallelMin)
    for (int64_t r = 0; r < n; ++r) ops::decode_rows(w, r0 + r, 1, x.data() + r * w.in);
    codes.resize(int_codes_bytes(t.type, n, w.in));
    Status s = quantize_rows(t.type, group_size, x.data(), n, w.in, codes.data(), scales->data() + r0 * groups);
    if (!s.ok()) return Status::errorf("tensor '{}': {}", t.name, s.message());
    out.write(codes.data(), codes.size());
  }
  return {};
}

Status write_bf16(const OutTensor& t, ShardStream& out) {
  const LinearWeight& w = *t.linear;
  const int64_t rows = chunk_rows(w.in);
  std::vector<float> x;
  std::vector<uint16_t> h;
  for (int64_t r0 = 0; r0 < w.out; r0 += rows) {
    const int64_t n = std::min(rows, w.out - r0);
    x.resize(static_cast<size_t>(n * w.in));
    h.resize(x.size());
#pragma omp parallel for schedule(dynamic, 8) if (n * w.in >= kParallelMin)
    for (int64_t r = 0; r < n; ++r) {
      ops::decode_rows(w, r0 + r, 1, x.data() + r * w.in);
      for (int64_t i = 0; i < w.in; ++i) h[r * w.in + i] = f32_to_bf16(x[r * w.in + i]);
    }
    out.write(h.data(), h.size() * 2);
  }
  return {};
}

Status copy_side_files(const std::string& from, const std::string& to) {
  std::error_code ec;
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}) {
    const fs::path src = fs::path(from) / name;
    if (!fs::exists(src, ec)) continue;
    fs::copy_file(src, fs::path(to) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return Status::errorf("{}: cannot copy into {}: {}", src.string(), to, ec.message());
  }
  return {};
}

Expected<QuantizeSummary> quantize_into(const std::string& model_dir, const std::string& out_dir,
                                        const QuantizeOptions& o) {
  const std::string config_path = (fs::path(model_dir) / "config.json").string();
  DSEEK_ASSIGN_OR_RETURN(std::string config_json, io::read_text_file(config_path));
  DSEEK_ASSIGN_OR_RETURN(ModelConfig config, parse_model_config(config_json, config_path));
  if (config.int_quantization.enabled)
    return Status::errorf("{}: the model is already quantized by dseek ({}, group size {}); quantize the original "
                          "checkpoint instead",
                          config_path, int_weight_type_name(config.int_quantization.weight_type),
                          config.int_quantization.group_size);
  DSEEK_ASSIGN_OR_RETURN(auto ckpt, io::Checkpoint::open(model_dir));
  DSEEK_ASSIGN_OR_RETURN(auto weights, Weights::bind(config, std::move(ckpt)));
  const io::Checkpoint& in = weights->checkpoint();

  // Plan every output tensor: table rows first (quantized, kept, or FP8 made BF16), then any
  // tensor the table does not know, copied as is.
  IntQuantization q = o.quant;
  q.enabled = true;
  std::vector<OutTensor> plan;
  std::vector<std::string> kept;
  std::map<std::string, bool> consumed;
  QuantizeSummary summary;
  for (const TensorSpec& spec : build_tensor_table(config)) {
    const io::TensorView* t = in.find(spec.name);
    if (t == nullptr) continue;
    consumed[spec.name] = true;
    const io::TensorView* fp8_scale = in.find(spec.name + "_scale_inv");
    if (t->dtype == DType::kF8E4M3 && fp8_scale) consumed[spec.name + "_scale_inv"] = true;
    const uint64_t source_bytes = t->nbytes + (t->dtype == DType::kF8E4M3 && fp8_scale ? fp8_scale->nbytes : 0);
    const std::optional<IntWeightType> type = stored_int_type(spec, q);
    const LinearWeight* lw = weights->find_linear(spec.name);
    if (type) {
      DSEEK_CHECK(lw != nullptr, "bound linear {}", spec.name);
      const int64_t out = spec.shape[0], cols = spec.shape[1];
      OutTensor c{spec.name, *type == IntWeightType::kQ8 ? DType::kI8 : DType::kU8,
                  {out, *type == IntWeightType::kQ8 ? cols : cols / 2}, int_codes_bytes(*type, out, cols),
                  OutTensor::How::kCodes, nullptr, lw, *type, source_bytes};
      OutTensor s{group_scale_name(spec.name), DType::kF16, {out, cols / q.group_size},
                  int_scales_bytes(out, cols, q.group_size), OutTensor::How::kScales, nullptr, lw, *type, 0};
      plan.push_back(std::move(c));
      plan.push_back(std::move(s));
      ++summary.quantized;
      continue;
    }
    if (spec.quantizable) kept.push_back(spec.name);
    if (t->dtype == DType::kF8E4M3) {
      DSEEK_CHECK(lw != nullptr, "bound linear {}", spec.name);
      plan.push_back({spec.name, DType::kBF16, spec.shape, static_cast<uint64_t>(t->numel()) * 2,
                      OutTensor::How::kToBF16, nullptr, lw, IntWeightType::kQ4, source_bytes});
    } else {
      plan.push_back({spec.name, t->dtype, t->shape, t->nbytes, OutTensor::How::kCopy, t, nullptr,
                      IntWeightType::kQ4, t->nbytes});
    }
  }
  for (const auto& [name, t] : in.tensors())
    if (!consumed.count(name))
      plan.push_back({name, t->dtype, t->shape, t->nbytes, OutTensor::How::kCopy, t, nullptr, IntWeightType::kQ4,
                      t->nbytes});
  summary.kept_linears = static_cast<int64_t>(kept.size());

  std::vector<std::vector<OutTensor*>> shards(1);
  uint64_t shard_bytes = 0, total_in = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    OutTensor& t = plan[i];
    // A quantized tensor and its scales stay in one shard: the scales are written from memory
    // right after the codes.
    uint64_t bytes = t.bytes;
    if (t.how == OutTensor::How::kCodes) bytes += plan[i + 1].bytes;
    if (t.how != OutTensor::How::kScales && shard_bytes > 0 && shard_bytes + bytes > o.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&t);
    shard_bytes += t.bytes;
    total_in += t.source_bytes;
    summary.bytes_out += t.bytes;
  }
  summary.bytes_in = total_in;
  summary.tensors = static_cast<int64_t>(plan.size());
  summary.shards = static_cast<int64_t>(shards.size());

  nlohmann::json weight_map = nlohmann::json::object();
  int64_t done = 0;
  uint64_t read = 0;
  std::vector<uint16_t> scales;
  for (size_t si = 0; si < shards.size(); ++si) {
    const std::string file = shards.size() == 1 ? std::string("model.safetensors")
                                                : fmt::format("model-{:05d}-of-{:05d}.safetensors", si + 1, shards.size());
    DSEEK_ASSIGN_OR_RETURN(auto out, ShardStream::open((fs::path(out_dir) / file).string(), shards[si]));
    for (OutTensor* t : shards[si]) {
      switch (t->how) {
        case OutTensor::How::kCopy: out->write(t->view->data, t->view->nbytes); break;
        case OutTensor::How::kCodes: DSEEK_RETURN_IF_ERROR(write_codes(*t, q.group_size, *out, &scales)); break;
        case OutTensor::How::kScales:
          DSEEK_CHECK(scales.size() * 2 == t->bytes, "scales of {}", t->name);
          out->write(scales.data(), t->bytes);
          break;
        case OutTensor::How::kToBF16: DSEEK_RETURN_IF_ERROR(write_bf16(*t, *out)); break;
      }
      weight_map[t->name] = file;
      read += t->source_bytes;
      if (o.progress) o.progress(++done, summary.tensors, read, total_in);
    }
    DSEEK_RETURN_IF_ERROR(out->close());
  }
  if (shards.size() > 1) {
    const nlohmann::json index = {{"metadata", {{"total_size", summary.bytes_out}}}, {"weight_map", weight_map}};
    std::ofstream f(fs::path(out_dir) / "model.safetensors.index.json");
    f << index.dump(2) << "\n";
    if (!f) return Status::errorf("{}/model.safetensors.index.json: write failed", out_dir);
  }
  DSEEK_ASSIGN_OR_RETURN(std::string new_config, with_int_quantization_config(config_json, config_path, q, kept));
  {
    std::ofstream f(fs::path(out_dir) / "config.json");
    f << new_config;
    if (!f) return Status::errorf("{}/config.json: write failed", out_dir);
  }
  DSEEK_RETURN_IF_ERROR(copy_side_files(model_dir, out_dir));
  return summary;
}

}  // namespace

Expected<QuantizeSummary> quantize_checkpoint(const std::string& model_dir, const std::string& out_dir,
                                              const QuantizeOptions& options) {
  const int64_t g = options.quant.group_size;
  if (g <= 0 || g % 2 != 0) return Status::errorf("group size must be a positive even number, got {}", g);
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) return Status::errorf("{}: not a model directory", model_dir);
  const bool existed = fs::exists(out_dir, ec);
  if (existed && (!fs::is_directory(out_dir, ec) || !fs::is_empty(out_dir, ec)))
    return Status::errorf("{}: output exists and is not an empty directory (refusing to overwrite)", out_dir);
  if (fs::exists(fs::path(model_dir) / "config.json", ec) && fs::equivalent(model_dir, out_dir, ec))
    return Status::errorf("{}: output is the model directory", out_dir);
  fs::create_directories(out_dir, ec);
  if (ec) return Status::errorf("{}: cannot create directory: {}", out_dir, ec.message());
  auto result = quantize_into(model_dir, out_dir, options);
  if (!result.ok()) {  // leave nothing half-made behind
    if (existed) {
      for (const auto& e : fs::directory_iterator(out_dir, ec)) fs::remove_all(e.path(), ec);
    } else {
      fs::remove_all(out_dir, ec);
    }
  }
  return result;
}

}  // namespace dseek::model
