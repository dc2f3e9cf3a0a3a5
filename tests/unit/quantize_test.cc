// dseek q8/q4 group quantization (model/quantize.h, ops/linear.h layout): the row quantizer
// against a slow, written-out reference (q8 byte for byte; q4 codes exact for the chosen scale
// and its error no worse than the reference's best), on random rows with zeros, outliers and
// values too small for an F16 scale; ops::decode_rows on hand-packed bytes;
// quantization_config parsing; binding errors naming the tensor; `dseek quantize`'s library
// entry (every tensor of the output against the reference applied to the source's values);
// the bench's active bytes of a q4 model by hand.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/float_types.h"
#include "bench/model_cost.h"
#include "io/checkpoint.h"
#include "io/mapped_file.h"
#include "model/checkpoint_writer.h"
#include "model/config.h"
#include "model/quantize.h"
#include "model/weights.h"
#include "ops/linear.h"

namespace dseek::model {
namespace {

namespace fs = std::filesystem;

// ---- The slow reference: one group at a time, codes as plain ints, packing done separately.

float f16(float x) { return f16_to_f32(f32_to_f16(x)); }

int round_half_away(float x) {
  return x >= 0 ? static_cast<int>(std::floor(x + 0.5f)) : -static_cast<int>(std::floor(-x + 0.5f));
}

struct RefGroup {
  std::vector<int> q;
  float scale = 0;  // F16-representable
};

double group_error(const std::vector<float>& w, const std::vector<int>& q, float s) {
  double e = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const double d = static_cast<double>(w[i]) - static_cast<double>(q[i]) * s;
    e += d * d;
  }
  return e;
}

std::vector<int> ref_codes(const std::vector<float>& w, float s, int lo, int hi) {
  std::vector<int> q;
  for (float x : w) q.push_back(std::min(hi, std::max(lo, round_half_away(x / s))));
  return q;
}

RefGroup ref_quantize_group(const std::vector<float>& w, bool q8) {
  float amax = 0;
  for (float x : w) amax = std::max(amax, std::fabs(x));
  RefGroup best{std::vector<int>(w.size(), 0), 0.0f};
  if (amax == 0) return best;
  if (q8) {
    const float s = f16(amax / 127.0f);
    if (s > 0) best = {ref_codes(w, s, -127, 127), s};
    return best;
  }
  double best_err = INFINITY;
  auto consider = [&](float s) {
    if (!(s > 0) || std::isinf(s)) return;
    std::vector<int> q = ref_codes(w, s, -8, 7);
    const double e = group_error(w, q, s);
    if (e < best_err) {
      best_err = e;
      best = {q, s};
    }
  };
  for (float d = 6.5f; d <= 9.0f; d += 0.25f) {
    const float s = f16(amax / d);
    consider(s);
    if (!(s > 0) || std::isinf(s)) continue;
    const std::vector<int> q = ref_codes(w, s, -8, 7);
    double wq = 0, qq = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      wq += static_cast<double>(w[i]) * q[i];
      qq += static_cast<double>(q[i]) * q[i];
    }
    if (qq > 0) consider(f16(static_cast<float>(wq / qq)));
  }
  return best;
}

// Whole matrix [out, in] -> (codes bytes, F16 scale bits), packing as ops/linear.h describes.
void ref_quantize(const std::vector<float>& w, int64_t out, int64_t in, int64_t g, bool q8,
                  std::vector<uint8_t>* codes, std::vector<uint16_t>* scales) {
  codes->assign(q8 ? out * in : out * in / 2, 0);
  scales->assign(out * (in / g), 0);
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t k = 0; k < in / g; ++k) {
      std::vector<float> grp(w.begin() + r * in + k * g, w.begin() + r * in + (k + 1) * g);
      const RefGroup rg = ref_quantize_group(grp, q8);
      (*scales)[r * (in / g) + k] = f32_to_f16(rg.scale);
      for (int64_t i = 0; i < g; ++i) {
        const int64_t col = k * g + i;
        if (q8) {
          (*codes)[r * in + col] = static_cast<uint8_t>(static_cast<int8_t>(rg.q[i]));
        } else {
          const uint8_t nibble = static_cast<uint8_t>(rg.q[i] + 8);
          (*codes)[r * (in / 2) + col / 2] |= col % 2 == 0 ? nibble : static_cast<uint8_t>(nibble << 4);
        }
      }
    }
  }
}

// Checks quantizer output (codes, F16 scales) for w [out, in] against the reference. q8 has no
// search: byte for byte. q4: the codes must be exactly those of the chosen scale, and the chosen
// scale's squared error no worse than the reference's best (the fast search sums in float, in
// vector order, so a near-tie may go the other way); nearly all scales must be the reference's.
void expect_matches_reference(const std::vector<float>& w, int64_t out, int64_t in, int64_t g, bool q8,
                              const uint8_t* codes, const uint16_t* scales, const std::string& label) {
  std::vector<uint8_t> want_codes;
  std::vector<uint16_t> want_scales;
  ref_quantize(w, out, in, g, q8, &want_codes, &want_scales);
  const int64_t groups = in / g;
  if (q8) {
    EXPECT_EQ(std::memcmp(scales, want_scales.data(), want_scales.size() * 2), 0) << label;
    EXPECT_EQ(std::memcmp(codes, want_codes.data(), want_codes.size()), 0) << label;
    return;
  }
  int64_t same = 0;
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t k = 0; k < groups; ++k) {
      const int64_t at = r * groups + k;
      std::vector<float> grp(w.begin() + r * in + k * g, w.begin() + r * in + (k + 1) * g);
      const float s = f16_to_f32(scales[at]), want_s = f16_to_f32(want_scales[at]);
      same += scales[at] == want_scales[at];
      const std::vector<int> q = s > 0 ? ref_codes(grp, s, -8, 7) : std::vector<int>(g, 0);
      for (int64_t i = 0; i < g; i += 2) {
        const uint8_t byte = static_cast<uint8_t>((q[i] + 8) | ((q[i + 1] + 8) << 4));
        ASSERT_EQ(codes[r * (in / 2) + (k * g + i) / 2], byte) << label << " row " << r << " group " << k;
      }
      const double err = group_error(grp, q, s);
      const double want = want_s > 0 ? group_error(grp, ref_codes(grp, want_s, -8, 7), want_s) : group_error(grp, q, 0);
      EXPECT_LE(err, want * (1 + 1e-5) + 1e-30) << label << " row " << r << " group " << k;
    }
  }
  EXPECT_GE(same, out * groups * 95 / 100) << label;
}

// Random rows: normal values, whole zero groups, a few large outliers, and rows of values so
// small that their scale is an F16 subnormal or underflows to zero.
std::vector<float> awkward_matrix(int64_t out, int64_t in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(out * in);
  for (int64_t r = 0; r < out; ++r) {
    const float row_scale = r % 5 == 3 ? 1e-6f : r % 5 == 4 ? 1e-10f : 0.05f;
    for (int64_t i = 0; i < in; ++i) w[r * in + i] = row_scale * normal(rng);
    if (r % 3 == 0) std::fill(w.begin() + r * in, w.begin() + r * in + std::min<int64_t>(in, 32), 0.0f);
    if (r % 4 == 1) w[r * in + (r * 7) % in] = 40.0f * (r % 8 == 1 ? 1.0f : -1.0f);  // outlier
  }
  w[5] = -0.0f;
  return w;
}

class RowQuantizer : public ::testing::TestWithParam<std::tuple<bool, int64_t>> {};

TEST_P(RowQuantizer, MatchesTheSlowReferenceExactly) {
  const auto [q8, g] = GetParam();
  const int64_t out = 37, in = 192;
  const std::vector<float> w = awkward_matrix(out, in, 11 + static_cast<uint32_t>(g));
  const IntWeightType type = q8 ? IntWeightType::kQ8 : IntWeightType::kQ4;
  std::vector<uint8_t> codes(int_codes_bytes(type, out, in));
  std::vector<uint16_t> scales(int_scales_bytes(out, in, g) / 2);
  ASSERT_TRUE(quantize_rows(type, g, w.data(), out, in, codes.data(), scales.data()).ok());
  expect_matches_reference(w, out, in, g, q8, codes.data(), scales.data(), "random rows");

  // Decoded by ops::decode_rows: every value within half a step of its input (q8: no clipping),
  // zero groups exactly zero, and q4 never worse than plain amax/7 round-to-nearest.
  ops::LinearWeight lw;
  lw.dtype = q8 ? DType::kI8 : DType::kU8;
  lw.out = out;
  lw.in = in;
  lw.data = codes.data();
  lw.group_scales = reinterpret_cast<const uint8_t*>(scales.data());
  lw.group_size = g;
  std::vector<float> dec(out * in);
  ops::decode_rows(lw, 0, out, dec.data());
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t k = 0; k < in / g; ++k) {
      const float s = f16_to_f32(scales[r * (in / g) + k]);
      std::vector<float> grp(w.begin() + r * in + k * g, w.begin() + r * in + (k + 1) * g);
      std::vector<float> got(dec.begin() + r * in + k * g, dec.begin() + r * in + (k + 1) * g);
      float amax = 0;
      for (float x : grp) amax = std::max(amax, std::fabs(x));
      if (amax == 0) {
        for (float x : got) EXPECT_EQ(x, 0.0f);
        continue;
      }
      if (q8) {
        if (s > 0 && s >= amax / 127.0f) {
          for (int64_t i = 0; i < g; ++i) EXPECT_LE(std::fabs(got[i] - grp[i]), 0.5f * s * 1.0001f) << r << "," << k;
        }
      } else {
        double err = 0;
        for (int64_t i = 0; i < g; ++i) err += (double(got[i]) - grp[i]) * (double(got[i]) - grp[i]);
        const float s7 = f16(amax / 7.0f);
        if (s7 > 0) {
          EXPECT_LE(err, group_error(grp, ref_codes(grp, s7, -8, 7), s7) * (1 + 1e-12)) << r << "," << k;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, RowQuantizer,
                         ::testing::Values(std::make_tuple(true, 32), std::make_tuple(false, 32),
                                           std::make_tuple(true, 64), std::make_tuple(false, 2),
                                           std::make_tuple(false, 6)));

TEST(RowQuantizer, RefusesNonFiniteAndHugeValues) {
  std::vector<float> w(64, 0.5f);
  std::vector<uint8_t> codes(64);
  std::vector<uint16_t> scales(2);
  w[40] = NAN;
  Status s = quantize_rows(IntWeightType::kQ4, 32, w.data(), 1, 64, codes.data(), scales.data());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("column 40"), std::string::npos) << s.message();
  w[40] = 1e9f;  // needs a scale above F16's 65504
  s = quantize_rows(IntWeightType::kQ8, 32, w.data(), 1, 64, codes.data(), scales.data());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("F16"), std::string::npos) << s.message();
}

// ---- decode_rows on bytes packed by hand, at odd addresses.

TEST(DecodeRows, Q4HandPackedNibblesAndGroupBoundaries) {
  // 2 rows x 8 inputs, groups of 4; scales row 0: 0.5, 2; row 1: -1 (any sign decodes), 0.25.
  alignas(8) uint8_t buf[64] = {};
  uint8_t* data = buf + 1;    // misaligned on purpose
  uint8_t* scales = buf + 33;
  const uint8_t codes[8] = {0x0F, 0x98, 0x80, 0x7A, 0x18, 0xF0, 0x88, 0x3C};
  std::memcpy(data, codes, 8);
  const uint16_t s[4] = {0x3800, 0x4000, 0xBC00, 0x3400};  // 0.5, 2, -1, 0.25
  std::memcpy(scales, s, 8);
  ops::LinearWeight w;
  w.dtype = DType::kU8;
  w.out = 2;
  w.in = 8;
  w.data = data;
  w.group_scales = scales;
  w.group_size = 4;
  // byte 0x0F: input 0 = 15-8 = 7, input 1 = 0-8 = -8; 0x98: 8-8 = 0, 9-8 = 1; ...
  const float want[16] = {7 * 0.5f, -8 * 0.5f, 0, 1 * 0.5f,   // group 0, scale 0.5
                          -8 * 2.f, 0, 2 * 2.f, -1 * 2.f,     // 0x80 -> 0,8 ; 0x7A -> 10,7
                          0, -7 * -1.f, -8 * -1.f, 7 * -1.f,  // 0x18 -> 8,1 ; 0xF0 -> 0,15
                          0, 0, 4 * 0.25f, -5 * 0.25f};       // 0x88 -> 8,8 ; 0x3C -> 12,3
  float got[16];
  ops::decode_rows(w, 0, 2, got);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(got[i], want[i]) << i;
  ops::decode_rows(w, 1, 1, got);  // a row on its own
  for (int i = 0; i < 8; ++i) EXPECT_EQ(got[i], want[8 + i]) << i;

  // linear_reference on it: y = x . W^T by hand.
  const float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  float y[2];
  ops::linear_reference(x, 1, w, y);
  for (int r = 0; r < 2; ++r) {
    double acc = 0;
    for (int i = 0; i < 8; ++i) acc += x[i] * want[r * 8 + i];
    EXPECT_FLOAT_EQ(y[r], static_cast<float>(acc));
  }
}

TEST(DecodeRows, Q8SignedBytesAndGroups) {
  alignas(8) uint8_t buf[64] = {};
  uint8_t* data = buf + 3;
  uint8_t* scales = buf + 21;
  const int8_t q[12] = {127, -127, -128, 0, 1, -1, 5, 64, -3, 100, 2, -50};
  std::memcpy(data, q, 12);
  const uint16_t s[6] = {0x3C00, 0x3800, 0x4200, 0x0001, 0x0000, 0x3E00};  // 1, 0.5, 3, 2^-24, 0, 1.5
  std::memcpy(scales, s, 12);
  ops::LinearWeight w;
  w.dtype = DType::kI8;
  w.out = 2;
  w.in = 6;
  w.data = data;
  w.group_scales = scales;
  w.group_size = 2;
  const float tiny = std::ldexp(1.0f, -24);
  const float want[12] = {127, -127, -128 * 0.5f, 0, 3, -3, 5 * tiny, 64 * tiny, 0, 0, 3, -75};
  float got[12];
  ops::decode_rows(w, 0, 2, got);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(got[i], want[i]) << i;
}

// ---- quantization_config parsing.

std::string tiny_config(const nlohmann::json& quant) {
  auto text = io::read_text_file(std::string(DSEEK_TEST_DATA) + "/golden/models/tiny-v3/config.json");
  EXPECT_TRUE(text.ok());
  nlohmann::json j = nlohmann::json::parse(text.value());
  if (!quant.is_null()) j["quantization_config"] = quant;
  return j.dump();
}

TEST(QuantConfig, ParsesDseekAndKeepsFp8) {
  auto c = parse_model_config(tiny_config({{"quant_method", "dseek"}, {"weight_type", "q4"}, {"group_size", 64}}),
                              "config.json");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE(c->int_quantization.enabled);
  EXPECT_FALSE(c->quantization.enabled);
  EXPECT_EQ(c->int_quantization.weight_type, IntWeightType::kQ4);
  EXPECT_EQ(c->int_quantization.lm_head_type, IntWeightType::kQ8);  // the default
  EXPECT_EQ(c->int_quantization.group_size, 64);
  c = parse_model_config(tiny_config({{"quant_method", "dseek"}, {"weight_type", "q8"}, {"lm_head_type", "q4"},
                                      {"modules_to_not_convert", {"mlp.gate"}}}),
                         "config.json");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->int_quantization.weight_type, IntWeightType::kQ8);
  EXPECT_EQ(c->int_quantization.lm_head_type, IntWeightType::kQ4);
  EXPECT_EQ(c->int_quantization.group_size, 32);
  c = parse_model_config(tiny_config({{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}}), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE(c->quantization.enabled);
  EXPECT_FALSE(c->int_quantization.enabled);
}

TEST(QuantConfig, EachBadValueNamesItsKey) {
  const std::vector<std::pair<nlohmann::json, std::string>> cases = {
      {{{"quant_method", "gptq"}}, "quant_method"},
      {{{"quant_method", "dseek"}}, "weight_type"},
      {{{"quant_method", "dseek"}, {"weight_type", "q3"}}, "weight_type"},
      {{{"quant_method", "dseek"}, {"weight_type", 4}}, "weight_type"},
      {{{"quant_method", "dseek"}, {"weight_type", "q4"}, {"group_size", 0}}, "group_size"},
      {{{"quant_method", "dseek"}, {"weight_type", "q4"}, {"group_size", -32}}, "group_size"},
      {{{"quant_method", "dseek"}, {"weight_type", "q4"}, {"group_size", 33}}, "group_size"},
      {{{"quant_method", "dseek"}, {"weight_type", "q4"}, {"group_size", "32"}}, "group_size"},
      {{{"quant_method", "dseek"}, {"weight_type", "q4"}, {"group_size", 1 << 20}}, "group_size"},
      {{{"quant_method", "dseek"}, {"weight_type", "q4"}, {"lm_head_type", "bf16"}}, "lm_head_type"},
      {{{"quant_method", "dseek"}, {"weight_type", "q4"}, {"modules_to_not_convert", 5}}, "modules_to_not_convert"},
      {{{"quant_method", "dseek"}, {"weight_type", "q4"}, {"modules_to_not_convert", {1}}}, "modules_to_not_convert"},
  };
  for (const auto& [quant, key] : cases) {
    auto c = parse_model_config(tiny_config(quant), "/m/config.json");
    ASSERT_FALSE(c.ok()) << quant.dump();
    const std::string& m = c.status().message();
    EXPECT_NE(m.find(key), std::string::npos) << m;
    EXPECT_NE(m.find("/m/config.json"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

// ---- Binding: a q4 checkpoint from `dseek init --dtype q4`'s writer, then broken copies of it.

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("dseek-quantize-test-" + tag + "-" + std::to_string(::getpid()));
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
};

std::string golden_config_text(const std::string& name) {
  auto t = io::read_text_file(std::string(DSEEK_TEST_DATA) + "/golden/models/" + name + "/config.json");
  EXPECT_TRUE(t.ok());
  return t.ok() ? t.value() : "";
}

const TempDir& q4_model() {
  static TempDir dir("q4-init");
  static bool made = [] {
    RandomCheckpointOptions o;
    o.dtype = StoredDType::kQ4;
    o.seed = 5;
    Status s = write_random_checkpoint(golden_config_text("tiny-v3"), dir.str(), o);
    EXPECT_TRUE(s.ok()) << s.message();
    return s.ok();
  }();
  (void)made;
  return dir;
}

TEST(QuantBinding, RandomQ4CheckpointBindsWithTheRightTypes) {
  auto w = load_weights(q4_model().str());
  ASSERT_TRUE(w.ok()) << w.status().message();
  const Weights& m = **w;
  EXPECT_EQ(m.layers[0].attn.q_a_proj.dtype, DType::kU8);
  EXPECT_EQ(m.layers[0].attn.q_a_proj.group_size, 32);
  EXPECT_NE(m.layers[0].attn.q_a_proj.group_scales, nullptr);
  EXPECT_EQ(m.layers[1].moe.experts[3].down_proj.dtype, DType::kU8);
  EXPECT_EQ(m.layers[1].moe.shared.up_proj.dtype, DType::kU8);
  EXPECT_EQ(m.layers[1].moe.gate.dtype, DType::kBF16);  // the router stays in float
  EXPECT_EQ(m.lm_head.dtype, DType::kI8);               // heads are q8
  EXPECT_EQ(m.embed_tokens.dtype, DType::kBF16);
  ASSERT_EQ(m.mtp.size(), 1u);
  EXPECT_EQ(m.mtp[0].eh_proj.dtype, DType::kU8);
}

// Binds the q4 checkpoint's tensors after `edit` changed the list; returns the error.
std::string bind_error(const std::function<void(std::map<std::string, io::TensorView>&)>& edit,
                       const std::string& config_text = "") {
  auto ckpt = io::Checkpoint::open(q4_model().str());
  EXPECT_TRUE(ckpt.ok());
  std::map<std::string, io::TensorView> views;
  for (const auto& [name, t] : (*ckpt)->tensors()) views[name] = *t;
  edit(views);
  std::vector<io::TensorView> list;
  for (auto& [name, v] : views) list.push_back(v);
  auto config = config_text.empty() ? load_model_config(q4_model().str()) : parse_model_config(config_text, "c.json");
  EXPECT_TRUE(config.ok());
  auto w = Weights::bind(*config, io::Checkpoint::from_memory("<edited>", std::move(list)));
  EXPECT_FALSE(w.ok());
  return w.ok() ? "" : w.status().message();
}

TEST(QuantBinding, ErrorsNameTheTensor) {
  const std::string qa = "model.layers.0.self_attn.q_a_proj.weight";
  std::string e = bind_error([&](auto& v) { v.erase(qa + "_scale"); });
  EXPECT_NE(e.find("'" + qa + "_scale' is missing"), std::string::npos) << e;

  e = bind_error([&](auto& v) { v[qa + "_scale"].shape = {128, 4}; v[qa + "_scale"].nbytes = 128 * 4 * 2; });
  EXPECT_NE(e.find(qa + "_scale' has shape [128, 4], expected [128, 8]"), std::string::npos) << e;

  e = bind_error([&](auto& v) { v[qa + "_scale"].dtype = DType::kBF16; });
  EXPECT_NE(e.find(qa + "_scale' has dtype BF16, expected F16"), std::string::npos) << e;

  e = bind_error([&](auto& v) { v[qa].shape = {128, 256}; });  // U8 but unpacked shape
  EXPECT_NE(e.find(qa + "' has shape [128, 256], expected [128, 128]"), std::string::npos) << e;

  e = bind_error([&](auto& v) { v[qa].dtype = DType::kI16; });
  EXPECT_NE(e.find(qa + "' has dtype I16"), std::string::npos) << e;

  const std::string router = "model.layers.1.mlp.gate.weight";
  e = bind_error([&](auto& v) { v[router].dtype = DType::kI8; v[router].shape = {16, 256}; });
  EXPECT_NE(e.find(router + "' has dtype I8"), std::string::npos) << e;
  EXPECT_NE(e.find("never quantized"), std::string::npos) << e;

  // Integer weights without the dseek quantization_config.
  e = bind_error([](auto&) {}, golden_config_text("tiny-v3"));
  EXPECT_NE(e.find("quant_method 'dseek'"), std::string::npos) << e;
  EXPECT_NE(e.find(".weight' has dtype"), std::string::npos) << e;

  // A group size the shapes do not fit (q_a_proj's 256 inputs are not a multiple of 96).
  nlohmann::json j = nlohmann::json::parse(io::read_text_file(q4_model().str() + "/config.json").value());
  j["quantization_config"]["group_size"] = 96;
  e = bind_error([](auto&) {}, j.dump());
  EXPECT_NE(e.find("not a multiple of group_size 96"), std::string::npos) << e;
}

// ---- quantize_checkpoint: every output tensor against the reference on the source's values.

void expect_tensor_is_reference(const Weights& src, const Weights& out, const TensorSpec& spec, bool q8,
                                int64_t g) {
  const ops::LinearWeight* a = src.find_linear(spec.name);
  const io::TensorView* codes = out.checkpoint().find(spec.name);
  const io::TensorView* scales = out.checkpoint().find(spec.name + "_scale");
  ASSERT_TRUE(a && codes && scales) << spec.name;
  std::vector<float> w(a->out * a->in);
  ops::decode_rows(*a, 0, a->out, w.data());
  ASSERT_EQ(codes->dtype, q8 ? DType::kI8 : DType::kU8) << spec.name;
  ASSERT_EQ(codes->nbytes, int_codes_bytes(q8 ? IntWeightType::kQ8 : IntWeightType::kQ4, a->out, a->in)) << spec.name;
  ASSERT_EQ(scales->dtype, DType::kF16) << spec.name;
  ASSERT_EQ(scales->nbytes, int_scales_bytes(a->out, a->in, g)) << spec.name;
  std::vector<uint16_t> scale_bits(scales->nbytes / 2);  // the mapped bytes may be unaligned
  std::memcpy(scale_bits.data(), scales->data, scales->nbytes);
  expect_matches_reference(w, a->out, a->in, g, q8, codes->data, scale_bits.data(), spec.name);
}

TEST(QuantizeCheckpoint, Fp8SourceEveryTensorMatchesTheReference) {
  const std::string src_dir = std::string(DSEEK_TEST_DATA) + "/golden/models/tiny-v3-fp8";
  TempDir out("fp8-q4");
  QuantizeOptions o;
  o.quant.weight_type = IntWeightType::kQ4;
  o.quant.group_size = 64;
  o.max_shard_bytes = 400000;  // several shards and an index
  auto s = quantize_checkpoint(src_dir, out.str(), o);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_GT(s->shards, 1);
  EXPECT_TRUE(fs::exists(out.path / "model.safetensors.index.json"));
  auto src = load_weights(src_dir);
  auto q = load_weights(out.str());
  ASSERT_TRUE(src.ok() && q.ok()) << q.status().message();
  EXPECT_TRUE((*q)->config().int_quantization.enabled);
  EXPECT_FALSE((*q)->config().quantization.enabled);  // the FP8 config is gone
  int64_t quantized = 0;
  for (const TensorSpec& spec : build_tensor_table((*src)->config())) {
    const io::TensorView* t = (*q)->checkpoint().find(spec.name);
    ASSERT_NE(t, nullptr) << spec.name;
    if (!spec.quantizable) {
      EXPECT_TRUE(t->dtype == DType::kBF16 || t->dtype == DType::kF32) << spec.name;  // no FP8 left
      if (spec.kind == TensorKind::kLinear) {  // FP8 dequantized to BF16, or copied
        const ops::LinearWeight* a = (*src)->find_linear(spec.name);
        const ops::LinearWeight* b = (*q)->find_linear(spec.name);
        std::vector<float> x(a->out * a->in), y(x.size());
        ops::decode_rows(*a, 0, a->out, x.data());
        ops::decode_rows(*b, 0, b->out, y.data());
        for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(bf16_to_f32(f32_to_bf16(x[i])), y[i]) << spec.name;
      }
      continue;
    }
    expect_tensor_is_reference(**src, **q, spec, spec.output_head, 64);
    ++quantized;
  }
  EXPECT_EQ(quantized, s->quantized);
  EXPECT_EQ(s->kept_linears, 0);
}

TEST(QuantizeCheckpoint, KeepsLinearsTheGroupDoesNotDivide) {
  // tiny-v2lite with groups of 128: kv_b_proj (in 64) and the experts' down_proj (in 64) stay BF16.
  const std::string src_dir = std::string(DSEEK_TEST_DATA) + "/golden/models/tiny-v2lite";
  TempDir out("v2-q8");
  QuantizeOptions o;
  o.quant.weight_type = IntWeightType::kQ8;
  o.quant.group_size = 128;
  auto s = quantize_checkpoint(src_dir, out.str(), o);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->shards, 1);
  EXPECT_TRUE(fs::exists(out.path / "model.safetensors"));
  auto q = load_weights(out.str());
  ASSERT_TRUE(q.ok()) << q.status().message();
  EXPECT_EQ((*q)->layers[1].attn.kv_b_proj.dtype, DType::kBF16);
  EXPECT_EQ((*q)->layers[1].moe.experts[0].down_proj.dtype, DType::kBF16);
  EXPECT_EQ((*q)->layers[1].moe.experts[0].up_proj.dtype, DType::kI8);
  EXPECT_GT(s->kept_linears, 0);
  const auto cfg = nlohmann::json::parse(io::read_text_file(out.str() + "/config.json").value());
  const auto& kept = cfg["quantization_config"]["modules_to_not_convert"];
  EXPECT_NE(std::find(kept.begin(), kept.end(), "model.layers.1.self_attn.kv_b_proj"), kept.end()) << kept.dump();
}

TEST(QuantizeCheckpoint, BadInputIsRefusedAndLeavesNothing) {
  const std::string src_dir = std::string(DSEEK_TEST_DATA) + "/golden/models/tiny-v3";
  QuantizeOptions o;
  TempDir out("bad");
  fs::create_directories(out.path);
  { std::ofstream(out.path / "keep.txt") << "mine"; }
  auto s = quantize_checkpoint(src_dir, out.str(), o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("not an empty directory"), std::string::npos) << s.status().message();
  EXPECT_TRUE(fs::exists(out.path / "keep.txt"));

  TempDir out2("bad2");
  s = quantize_checkpoint(q4_model().str(), out2.str(), o);  // already quantized
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("already quantized"), std::string::npos) << s.status().message();
  EXPECT_FALSE(fs::exists(out2.path));

  o.quant.group_size = 7;
  s = quantize_checkpoint(src_dir, out2.str(), o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("even"), std::string::npos) << s.status().message();
}

// ---- The bench's active bytes of a q4 model, by hand (tiny-v3 dims, see bench_test.cc).

TEST(QuantActiveBytes, Q4CountsHalfBytesPlusScales) {
  auto config = load_model_config(q4_model().str());
  auto ckpt = io::Checkpoint::open(q4_model().str());
  ASSERT_TRUE(config.ok() && ckpt.ok());
  const bench::ActiveBytes b = bench::active_weight_bytes_per_token(*config, **ckpt);
  // q4: 1/2 byte per weight + one 2-byte scale per 32 = 9/16 byte; q8 heads: 17/16 byte.
  constexpr uint64_t kD = 256, kV = 512;
  constexpr uint64_t kAttn = 128 * kD + 4 * 48 * 128 + (64 + 16) * kD + 4 * (32 + 32) * 64 + kD * 4 * 32;
  constexpr uint64_t kAttnNorms = kD + kD + 128 + 64;
  constexpr uint64_t kDenseMat = 384 * kD, kExpertMat = 64 * kD, kRouter = 16 * kD, kBias = 16;
  const uint64_t attention = 3 * (kAttn * 9 / 16 + 2 * kAttnNorms);
  const uint64_t dense = 3 * kDenseMat * 9 / 16;
  const uint64_t moe_always = 2 * (2 * kRouter + 4 * kBias + 3 * kExpertMat * 9 / 16);
  const uint64_t head = 2 * kD + kV * kD * 17 / 16;
  EXPECT_EQ(b.non_expert, attention + dense + moe_always + head);
  EXPECT_EQ(b.routed, 2 * 16 * 3 * kExpertMat * 9 / 16 * 4 / 16);
  const uint64_t scales = 3 * kAttn / 16 + dense / 9 + 2 * 3 * kExpertMat / 16 + kV * kD / 16 +
                          2 * 16 * 3 * kExpertMat / 16 * 4 / 16;
  EXPECT_EQ(b.scales, scales);
}

}  // namespace
}  // namespace dseek::model
