// The family-independent half of the GFNI FP8 path (linear_fp8.h): when it runs.
#include "cpu/linear_fp8.h"

#include "cpu/env_switch.h"

namespace dseek::cpu {
namespace {

EnvSwitch g_fp8_dot("DSEEK_FP8_DOT");

}  // namespace

bool fp8_dot_enabled() { return g_fp8_dot.on(); }

void set_fp8_dot(bool on) { g_fp8_dot.set(on); }

bool fp8_dot_used(const LinearKernels& k, const WeightView& w) {
  return k.gemv_fp8 != nullptr && w.dtype == DType::kF8E4M3 && w.in % kFp8Step == 0 &&
         w.block_cols % kFp8Step == 0 && fp8_dot_enabled();
}

}  // namespace dseek::cpu
