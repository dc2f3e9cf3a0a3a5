// The family-independent half of the GFNI FP8 path (linear_fp8.h): when it runs.
#include "cpu/linear_fp8.h"

#include "cpu/cpu_features.h"
#include "cpu/env_switch.h"

namespace dseek::cpu {
namespace {

EnvSwitch g_fp8_dot("DSEEK_FP8_DOT");

// The kernel's weights from FP8's subnormal codes are float32 denormals. On Zen 4 a stream in
// which most vectors held one ran as fast as any; Intel's cores take microcode assists for them.
bool denormals_slow() { return !features().amd; }

EnvSwitch g_denormal_guard("DSEEK_FP8_DENORMAL_GUARD", denormals_slow);

// Intel's cores run 512-bit shuffles on one port only (the unpacks' six a step queue there).
bool shuffles_one_port() { return !features().amd; }

EnvSwitch g_byte_permute("DSEEK_FP8_PERMUTE", shuffles_one_port);

}  // namespace

bool fp8_dot_enabled() { return g_fp8_dot.on(); }

void set_fp8_dot(bool on) { g_fp8_dot.set(on); }

bool fp8_denormal_guard() { return g_denormal_guard.on(); }

void set_fp8_denormal_guard(bool on) { g_denormal_guard.set(on); }

bool fp8_byte_permute() { return g_byte_permute.on(); }

void set_fp8_byte_permute(bool on) { g_byte_permute.set(on); }

bool fp8_dot_used(const LinearKernels& k, const WeightView& w) {
  return k.gemv_fp8 != nullptr && w.dtype == DType::kF8E4M3 && w.in % kFp8Step == 0 &&
         w.block_cols % kFp8Step == 0 && fp8_dot_enabled();
}

}  // namespace dseek::cpu
