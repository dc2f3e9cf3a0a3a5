// Group quantization of linear weights to dseek's q8/q4 layout (ops/linear.h), and the
// checkpoint conversion behind `dseek quantize`. Symmetric round-to-nearest with one F16 scale
// per group of consecutive inputs of a row; no calibration data, no activation statistics.
// Not a kernel: the loader reads the result in place and ops::decode_rows decodes it.
// Format, choices and measured accuracy: docs/quantization.md.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/config.h"
#include "model/tensor_table.h"

namespace dseek::model {

// q4 scale candidates: amax / d for each d here (amax = max |w| of the group), each also
// refitted by least squares to the codes it gives; the F16 scale with the least squared error
// wins. d > 7 clips the largest value a little to resolve the others more finely.
inline constexpr float kQ4Divisors[] = {6.5f, 6.75f, 7.0f, 7.25f, 7.5f, 7.75f, 8.0f, 8.25f, 8.5f, 8.75f, 9.0f};

// Stored bytes of a quantized [out, in] weight: codes (I8 [out, in] or U8 [out, in / 2]) and
// F16 scales [out, in / group_size].
uint64_t int_codes_bytes(IntWeightType type, int64_t out, int64_t in);
uint64_t int_scales_bytes(int64_t out, int64_t in, int64_t group_size);

// Quantizes n rows of src [n, in] float32 into codes (q8: int8 [n, in]; q4: packed [n, in / 2],
// low nibble = even input, nibble = q + 8) and scales (F16 bits [n, in / group_size]), threads
// over rows. q8: scale = F16(amax / 127), q = clamp(round(w / scale), -127, 127). q4: the best of
// the kQ4Divisors candidates, q = clamp(round(w / scale), -8, 7). round = half away from zero;
// codes are chosen with the F16-rounded scale. A group whose scale underflows F16 is stored as
// zeros. Needs in % group_size == 0 and an even group_size. Error: a non-finite value, or one
// too large for an F16 scale, with the row and column in the message.
Status quantize_rows(IntWeightType type, int64_t group_size, const float* src, int64_t n, int64_t in,
                     uint8_t* codes, uint16_t* scales);

// What `dseek quantize` stores a table row as: nullopt = kept in float (not quantizable, or its
// inputs are not a multiple of the group size). Output heads get q.lm_head_type.
std::optional<IntWeightType> stored_int_type(const TensorSpec& spec, const IntQuantization& q);

// config.json text with its quantization_config replaced by the dseek one for `q` (an FP8 one
// is dropped: FP8 weights are dequantized). `kept` lists linears left in float.
Expected<std::string> with_int_quantization_config(const std::string& config_json, const std::string& source,
                                                   const IntQuantization& q, const std::vector<std::string>& kept);

struct QuantizeOptions {
  IntQuantization quant;  // weight_type, lm_head_type, group_size (enabled is ignored)
  uint64_t max_shard_bytes = 4ull << 30;  // shards of at most this size (one tensor may exceed it)
  // After each tensor: (tensors done, tensors total, source bytes done, source bytes total).
  std::function<void(int64_t, int64_t, uint64_t, uint64_t)> progress;
};

struct QuantizeSummary {
  int64_t tensors = 0;         // written, scales included
  int64_t quantized = 0;       // linears stored as q8 or q4
  int64_t kept_linears = 0;    // quantizable linears kept in float (in % group_size != 0)
  int64_t shards = 0;
  uint64_t bytes_in = 0, bytes_out = 0;  // tensor bytes read and written
};

// Converts the checkpoint in model_dir (BF16/F16/F32, or FP8 with block scales, which is
// dequantized first) into out_dir: shards of safetensors (+ model.safetensors.index.json when
// more than one), config.json with the dseek quantization_config, and the tokenizer and
// generation files copied. Streams: memory stays at a few MB of rows plus one tensor's scales.
// out_dir must not exist or be empty; a model already quantized by dseek is refused.
Expected<QuantizeSummary> quantize_checkpoint(const std::string& model_dir, const std::string& out_dir,
                                              const QuantizeOptions& options);

}  // namespace dseek::model
