// The family-independent half of the integer dot-product path: when it runs, and where the
// quantized activations and the weight-scale tables go (the layout in linear_int8.h).
#include "cpu/linear_int8.h"

#include <cstdlib>
#include <cstring>

#include "base/check.h"
#include "cpu/env_switch.h"

namespace dseek::cpu {
namespace {

constexpr size_t kAlign = 64;

size_t round_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

struct Sizes {
  int64_t chunk_in, chunks, blocks;
  size_t q, bias, scale, table_blocks, table_subs, table_lanes;
};

Sizes sizes(int64_t T, const WeightView& w) {
  Sizes s{};
  s.chunk_in = w.dtype == DType::kU8 ? 256 : 128;
  s.chunks = (w.in + s.chunk_in - 1) / s.chunk_in;
  s.blocks = (w.in + kInt8Block - 1) / kInt8Block;
  s.q = round_up(static_cast<size_t>(T * s.chunks * s.chunk_in));
  s.bias = round_up(static_cast<size_t>(T * s.chunks * kInt8Lanes) * 4);
  s.scale = round_up(static_cast<size_t>(T * s.blocks * kInt8Lanes) * 4);
  s.table_blocks = round_up(static_cast<size_t>(s.blocks) * 4);
  s.table_subs = round_up(static_cast<size_t>(s.blocks * kInt8Lanes) * 4);
  s.table_lanes = round_up(static_cast<size_t>(kInt8Block / s.chunk_in * kInt8Lanes) * 4);
  return s;
}

EnvSwitch g_int8_dot("DSEEK_INT8_DOT");

}  // namespace

size_t int8_x_bytes(int64_t T, const WeightView& w) {
  const Sizes s = sizes(T, w);
  return s.q + s.bias + s.scale + s.table_blocks + s.table_subs + s.table_lanes;
}

Int8X prepare_int8_x(int64_t T, const WeightView& w, void* buf) {
  DSEEK_CHECK(reinterpret_cast<uintptr_t>(buf) % kAlign == 0);
  const Sizes s = sizes(T, w);
  auto* p = static_cast<uint8_t*>(buf);
  Int8X x;
  x.T = T;
  x.in = w.in;
  x.chunks = s.chunks;
  x.chunk_in = s.chunk_in;
  x.lanes_per_sub = kInt8Lanes / (s.chunk_in / kInt8Sub);
  x.blocks = s.blocks;
  x.q = reinterpret_cast<int8_t*>(p);
  p += s.q;
  x.bias = reinterpret_cast<int32_t*>(p);
  p += s.bias;
  x.scale = reinterpret_cast<float*>(p);
  p += s.scale;
  x.block_group = reinterpret_cast<int32_t*>(p);
  p += s.table_blocks;
  x.sub_group = reinterpret_cast<int32_t*>(p);
  p += s.table_subs;
  x.lane_sub = reinterpret_cast<int32_t*>(p);
  const int64_t groups = w.in / w.group_size;
  for (int64_t b = 0; b < s.blocks; ++b) {
    x.block_group[b] = static_cast<int32_t>(b * kInt8Block / w.group_size);
    for (int k = 0; k < kInt8Lanes; ++k) {
      // Sub-blocks past in point at the row's last group: their x scale is zero, and a real
      // weight scale keeps a finite row finite (a masked-off scale would be 0, equally harmless).
      const int64_t i = std::min(b * kInt8Block + k * kInt8Sub, w.in - 1);
      const int64_t g = std::min(i / w.group_size, groups - 1);
      x.sub_group[b * kInt8Lanes + k] = static_cast<int32_t>(g - x.block_group[b]);
    }
  }
  for (int64_t j = 0; j < kInt8Block / s.chunk_in; ++j)
    for (int k = 0; k < kInt8Lanes; ++k) {
      const int64_t sub = s.chunk_in == 256 ? kQ4SubOrder[k / x.lanes_per_sub] : k / x.lanes_per_sub;
      x.lane_sub[j * kInt8Lanes + k] = static_cast<int32_t>(j * (s.chunk_in / kInt8Sub) + sub);
    }
  return x;
}

namespace {

// Byte of input i within its chunk's x (the layout in linear_int8.h).
int64_t chunk_offset(const Int8X& x, int64_t i) {
  const int64_t k = i % x.chunk_in, g = k / kInt8Sub, b = k % kInt8Sub;
  if (x.chunk_in == 128) return (b < 16 ? 0 : 64) + 16 * g + b % 16;
  return 64 * (2 * (b / 16) + b % 2) + 8 * kQ4Slot[g] + (b % 16) / 2;
}

}  // namespace

int8_t int8_x_value(const Int8X& x, int64_t t, int64_t i) {
  return x.q[(t * x.chunks + i / x.chunk_in) * x.chunk_in + chunk_offset(x, i)];
}

int64_t int8_x_lane(const Int8X& x, int64_t i) { return chunk_offset(x, i) % 64 / 4; }

float int8_x_scale(const Int8X& x, int64_t t, int64_t i) {
  return x.scale[(t * x.blocks + i / kInt8Block) * kInt8Lanes + i % kInt8Block / kInt8Sub];
}

bool int8_dot_enabled() { return g_int8_dot.on(); }

void set_int8_dot(bool on) { g_int8_dot.set(on); }

bool int8_dot_used(const LinearKernels& k, const WeightView& w) {
  return k.gemv_int8 != nullptr && (w.dtype == DType::kI8 || w.dtype == DType::kU8) && w.group_size > 0 &&
         w.group_size % kInt8Sub == 0 && w.in % w.group_size == 0 && int8_dot_enabled();
}

}  // namespace dseek::cpu
