#include "cpu/cpu_features.h"

#include <cpuid.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/check.h"

namespace dseek::cpu {
namespace {

uint64_t xgetbv0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  f.amd = b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163;  // "Auth" "enti" "cAMD"
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & bit_OSXSAVE, fma = c & bit_FMA, f16c = c & bit_F16C, avx = c & bit_AVX;
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_saved = (xcr0 & 0x6) == 0x6;           // SSE + AVX state
  const bool zmm_saved = (xcr0 & 0xe6) == 0xe6;         // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  f.avx2 = ymm_saved && fma && f16c && (b & bit_AVX2);
  f.avx512 = f.avx2 && zmm_saved && (b & bit_AVX512F) && (b & bit_AVX512BW) && (b & bit_AVX512VL) &&
             (b & bit_AVX512DQ);
  f.avx512_vnni = f.avx512 && (c & bit_AVX512VNNI);
  f.gfni = f.avx2 && (c & bit_GFNI);
  unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  if (f.avx512 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) f.avx512_bf16 = a1 & bit_AVX512BF16;
  return f;
}

Isa best_supported() {
  if (supported(Isa::kAvx512)) return Isa::kAvx512;
  if (supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

Isa from_environment() {
  const char* env = std::getenv("DSEEK_ISA");
  if (env == nullptr || *env == '\0') return best_supported();
  const std::string want(env);
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (want != isa_name(isa)) continue;
    if (supported(isa)) return isa;
    std::fprintf(stderr, "dseek: DSEEK_ISA=%s: this CPU does not support it; using %s\n", env,
                 std::string(isa_name(best_supported())).c_str());
    return best_supported();
  }
  std::fprintf(stderr, "dseek: DSEEK_ISA=%s: expected scalar, avx2 or avx512; using %s\n", env,
               std::string(isa_name(best_supported())).c_str());
  return best_supported();
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{static_cast<int>(from_environment())};
  return slot;
}

}  // namespace

const CpuFeatures& features() {
  static const CpuFeatures f = detect();
  return f;
}

bool supported(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2: return features().avx2;
    case Isa::kAvx512: return features().avx512;
  }
  return false;
}

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (supported(isa)) out.push_back(isa);
  return out;
}

Isa active_isa() { return static_cast<Isa>(active_slot().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
  DSEEK_CHECK(supported(isa), "set_active_isa({}): not supported by this CPU", isa_name(isa));
  active_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace dseek::cpu
