// The family-independent half of the GFNI FP8 path (linear_fp8.h): when it runs.
#include "cpu/linear_fp8.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace dseek::cpu {
namespace {

std::atomic<int> g_enabled{-1};  // -1: not read from the environment yet

}  // namespace

bool fp8_dot_enabled() {
  int e = g_enabled.load(std::memory_order_relaxed);
  if (e < 0) {
    const char* env = std::getenv("DSEEK_FP8_DOT");
    e = env != nullptr && std::strcmp(env, "0") == 0 ? 0 : 1;
    g_enabled.store(e, std::memory_order_relaxed);
  }
  return e == 1;
}

void set_fp8_dot(bool on) { g_enabled.store(on ? 1 : 0, std::memory_order_relaxed); }

bool fp8_dot_used(const LinearKernels& k, const WeightView& w) {
  return k.gemv_fp8 != nullptr && w.dtype == DType::kF8E4M3 && w.in % kFp8Step == 0 &&
         w.block_cols % kFp8Step == 0 && fp8_dot_enabled();
}

}  // namespace dseek::cpu
