// Which x86 instruction sets the running CPU has, and which kernel family dseek uses.
//
// Kernels come in families compiled with their own flags (cmake/isa.cmake): kScalar (plain C++,
// also the slow reference twins), kAvx2 (AVX2 + FMA + F16C) and kAvx512 (F/BW/VL/DQ, with the
// BF16, VNNI and GFNI extensions when the CPU has them). The family is chosen once at run time: the
// best the CPU supports, or the one named by the DSEEK_ISA environment variable
// (scalar|avx2|avx512) when it is supported, so every family can be tested on one machine.
#pragma once

#include <string_view>
#include <vector>

namespace dseek::cpu {

enum class Isa { kScalar, kAvx2, kAvx512 };

struct CpuFeatures {
  bool avx2 = false;         // with FMA and F16C
  bool avx512 = false;       // F, BW, VL, DQ
  bool avx512_bf16 = false;  // vdpbf16ps
  bool avx512_vnni = false;  // vpdpbusd
  bool gfni = false;         // vgf2p8affineqb (with AVX-512: on 512-bit vectors)
  bool amd = false;          // vendor AuthenticAMD
};

// Read once with cpuid (and xgetbv: the OS must save the wide registers).
const CpuFeatures& features();

bool supported(Isa isa);
std::string_view isa_name(Isa isa);

// Every family the CPU supports, scalar first: the set a kernel test loops over.
std::vector<Isa> supported_isas();

// The family in use: DSEEK_ISA if set and supported (an unsupported or unknown value is
// reported once on stderr and ignored), else the best supported one.
Isa active_isa();

// Overrides active_isa() for tests and benchmarks (must be supported).
void set_active_isa(Isa isa);

}  // namespace dseek::cpu
