// The instruction-set families: detection is consistent, DSEEK_ISA-style overrides stick, and
// the scalar family is always there (every kernel's reference twin runs on it).
#include "cpu/cpu_features.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace dseek::cpu {
namespace {

TEST(CpuFeatures, FamiliesAreNestedAndScalarAlwaysSupported) {
  const CpuFeatures& f = features();
  if (f.avx512) {
    EXPECT_TRUE(f.avx2) << "AVX-512 family implies the AVX2 family";
  }
  if (f.avx512_bf16 || f.avx512_vnni) {
    EXPECT_TRUE(f.avx512);
  }
  const std::vector<Isa> isas = supported_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), Isa::kScalar);
  EXPECT_EQ(std::count(isas.begin(), isas.end(), Isa::kAvx2), f.avx2 ? 1 : 0);
  EXPECT_EQ(std::count(isas.begin(), isas.end(), Isa::kAvx512), f.avx512 ? 1 : 0);
}

TEST(CpuFeatures, SetActiveIsaSticksAndUnsupportedIsRefused) {
  const Isa before = active_isa();
  EXPECT_TRUE(supported(before));
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    EXPECT_EQ(active_isa(), isa);
  }
  set_active_isa(before);
  if (!supported(Isa::kAvx512)) {
    EXPECT_DEATH(set_active_isa(Isa::kAvx512), "not supported");
  }
}

TEST(CpuFeatures, NamesAreTheEnvironmentValues) {
  EXPECT_EQ(isa_name(Isa::kScalar), "scalar");
  EXPECT_EQ(isa_name(Isa::kAvx2), "avx2");
  EXPECT_EQ(isa_name(Isa::kAvx512), "avx512");
}

}  // namespace
}  // namespace dseek::cpu
