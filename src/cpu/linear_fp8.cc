// The family-independent half of the GFNI FP8 path (linear_fp8.h): when it runs.
#include "cpu/linear_fp8.h"

#include "cpu/cpu_features.h"
#include "cpu/env_switch.h"

namespace dseek::cpu {
namespace {

// On by default where float arithmetic on denormal inputs runs at full speed: AMD's cores (the
// kernel's weights from FP8's subnormal codes are float32 denormals; on Zen 4 a stream in which
// most vectors hold one ran as fast as any). Intel's cores handle denormal operands with
// microcode assists, and no Intel machine was at hand to measure the cost: there DSEEK_FP8_DOT=1
// turns the path on.
bool denormals_at_full_speed() { return features().amd; }

EnvSwitch g_fp8_dot("DSEEK_FP8_DOT", denormals_at_full_speed);

}  // namespace

bool fp8_dot_enabled() { return g_fp8_dot.on(); }

void set_fp8_dot(bool on) { g_fp8_dot.set(on); }

bool fp8_dot_used(const LinearKernels& k, const WeightView& w) {
  return k.gemv_fp8 != nullptr && w.dtype == DType::kF8E4M3 && w.in % kFp8Step == 0 &&
         w.block_cols % kFp8Step == 0 && fp8_dot_enabled();
}

}  // namespace dseek::cpu
