// The instruction-set families: detection is consistent, DSEEK_ISA-style overrides stick, and
// the scalar family is always there (every kernel's reference twin runs on it).
#include "cpu/cpu_features.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>

#include "cpu/env_switch.h"

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

// The vendor and GFNI bits agree with the kernel's own account of the CPU.
TEST(CpuFeatures, VendorAndGfniMatchProcCpuinfo) {
  std::ifstream in("/proc/cpuinfo");
  if (!in) GTEST_SKIP() << "no /proc/cpuinfo";
  std::string line, vendor, flags;
  while (std::getline(in, line) && (vendor.empty() || flags.empty())) {
    if (line.rfind("vendor_id", 0) == 0 && vendor.empty()) vendor = line.substr(line.find(':') + 2);
    if (line.rfind("flags", 0) == 0 && flags.empty()) flags = " " + line.substr(line.find(':') + 2) + " ";
  }
  EXPECT_EQ(features().amd, vendor == "AuthenticAMD") << vendor;
  if (features().avx2) {
    EXPECT_EQ(features().gfni, flags.find(" gfni ") != std::string::npos);
  }
}

// "0" turns a switch off, "1" on; unset or anything else gives the default (on without one).
TEST(EnvSwitch, ZeroOneOrTheDefault) {
  auto no = [] { return false; };
  auto yes = [] { return true; };
  ::setenv("DSEEK_TEST_SWITCH_A", "0", 1);
  ::setenv("DSEEK_TEST_SWITCH_B", "1", 1);
  ::setenv("DSEEK_TEST_SWITCH_C", "yes", 1);
  ::unsetenv("DSEEK_TEST_SWITCH_D");
  EnvSwitch a("DSEEK_TEST_SWITCH_A", yes), b("DSEEK_TEST_SWITCH_B", no), c("DSEEK_TEST_SWITCH_C", no),
      d("DSEEK_TEST_SWITCH_D"), e("DSEEK_TEST_SWITCH_D", no);
  EXPECT_FALSE(a.on());
  EXPECT_TRUE(b.on());
  EXPECT_FALSE(c.on());
  EXPECT_TRUE(d.on());
  EXPECT_FALSE(e.on());
  e.set(true);
  EXPECT_TRUE(e.on());
  ::setenv("DSEEK_TEST_SWITCH_A", "1", 1);  // read once: the first reading stays
  EXPECT_FALSE(a.on());
}

}  // namespace
}  // namespace dseek::cpu
