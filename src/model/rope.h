// Rotary position embedding with YaRN, as DeepSeek's reference computes it
// (inference/model.py: precompute_freqs_cis, apply_rotary_emb).
//   theta_i  = rope_theta^(-2i/d), i < d/2, in float32
//   YaRN:    theta'_i = theta_i / factor * (1 - smooth_i) + theta_i * smooth_i, where smooth
//            ramps from 1 (dims below `low`, unchanged) to 0 (dims above `high`, / factor)
//   angle(p, i) = p * theta'_i in float32
// Two pairings of the same table:
//   interleaved (main MLA):          (x[2i], x[2i+1])
//   half-split  (V3.2 indexer only): (x[i], x[i + d/2])
// The YaRN attention temperature (m^2) is on the softmax scale (ModelConfig::softmax_scale),
// not here: the reference does not scale cos/sin.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace dseek::model {

class RopeTable {
 public:
  explicit RopeTable(const ModelConfig& c);

  int64_t dim() const { return dim_; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }  // theta'_i, [dim/2]

  // Rotates x[dim] in place for position `pos`.
  void rotate_interleaved(float* x, int64_t pos) const;
  void rotate_half_split(float* x, int64_t pos) const;
  // The same for `count` vectors x + k * stride at one position, each given the bits a call on it
  // alone gives: the angles' sines and cosines once (in double, they were 0.5% of the main
  // thread's decode time as 17 calls a layer; the V3.2 indexer's queries made 64).
  void rotate_interleaved(float* x, int64_t count, int64_t stride, int64_t pos) const;
  void rotate_half_split(float* x, int64_t count, int64_t stride, int64_t pos) const;

 private:
  void cos_sin(int64_t pos, float* cos_out, float* sin_out) const;
  int64_t dim_;
  std::vector<float> inv_freq_;
};

}  // namespace dseek::model
