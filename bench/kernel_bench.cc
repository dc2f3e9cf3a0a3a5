// Matrix-kernel micro-benchmark (run by hand, not a test):
//   build/src/kernel_bench [--threads N] [--quick] [--matvec-only | --packed-only | --core-only]
// Per weight format and kernel family: the matrix-vector product (T = 1 and 4) as GB/s of
// weight bytes streamed, against this machine's measured read bandwidth; the packed product at
// T = 512 (and an MoE-sized T = 32) as GFLOP/s, against the measured FP32 FMA peak; and the
// previous implementation (decode 16 rows to float, dot products) in the same run for a ratio.
// q8/q4 also get a row "int8": the integer dot-product path (AVX-512 VNNI, linear_int8.h), x
// quantization included; the family rows run the float path (DSEEK_INT8_DOT=0 equivalent).
// FP8 also gets rows "gfni" and "gfni-p": the float32 path on GFNI byte transforms (AVX-512 with
// GFNI, linear_fp8.h) placing the bytes with unpacks and with a byte permute, x preparation
// included; the family rows run the float path (DSEEK_FP8_DOT=0).
// BF16 and FP8 also get a row "bf16": BF16-compute mode's vdpbf16ps path (linear_bf16.h), x
// rounding included; in the packed table a "bf16" column (vdpbf16ps does 2 multiply-adds per
// lane, so it can pass 100% of the FP32 FMA peak).
// Weights are random, several copies cycled so that they come from memory, not from the cache.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <ctime>

#include <immintrin.h>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "base/float_types.h"
#include "bench/machine.h"
#include "cpu/cpu_features.h"
#include "cpu/linear_bf16.h"
#include "cpu/linear_fp8.h"
#include "cpu/linear_int8.h"
#include "cpu/linear_kernels.h"
#include "ops/linear.h"

namespace dseek {
namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// The implementation ops::linear had before the kernel families (kept here as the baseline).
void old_linear(const float* x, int64_t T, const ops::LinearWeight& w, float* y) {
  constexpr int64_t kRowBlock = 16;
  const int64_t out = w.out, in = w.in, blocks = (out + kRowBlock - 1) / kRowBlock;
#pragma omp parallel
  {
    std::vector<float> rows(static_cast<size_t>(kRowBlock * in));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t r0 = b * kRowBlock, n = std::min(kRowBlock, out - r0);
      ops::decode_rows(w, r0, n, rows.data());
      for (int64_t t = 0; t < T; ++t)
        for (int64_t r = 0; r < n; ++r) {
          const float* a = x + t * in;
          const float* b2 = rows.data() + r * in;
          float acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int64_t i = 0; i < in; ++i) acc += a[i] * b2[i];
          y[t * out + r0 + r] = acc;
        }
    }
  }
}

struct Weight {
  std::vector<uint8_t> data, group_scales;
  std::vector<float> scales;
  ops::LinearWeight w;
  int64_t bytes = 0;  // weight bytes read by one product (data + scales)
};

Weight make(DType d, int64_t out, int64_t in, uint32_t seed) {
  Weight m;
  std::mt19937 rng(seed);
  const int64_t nbytes = d == DType::kF32 ? out * in * 4
                         : (d == DType::kBF16 || d == DType::kF16) ? out * in * 2
                         : d == DType::kU8 ? out * in / 2 : out * in;
  m.data.resize(static_cast<size_t>(nbytes));
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  for (int64_t i = 0; i < out * in && (d == DType::kF32 || d == DType::kBF16 || d == DType::kF16); ++i) {
    const float v = normal(rng);
    if (d == DType::kF32) std::memcpy(&m.data[4 * i], &v, 4);
    const uint16_t h = d == DType::kBF16 ? f32_to_bf16(v) : f32_to_f16(v);
    if (d != DType::kF32) std::memcpy(&m.data[2 * i], &h, 2);
  }
  if (d == DType::kI8 || d == DType::kU8)
    for (auto& b : m.data) b = static_cast<uint8_t>(byte(rng));
  // FP8 as a checkpoint holds it: normal values, each 128 x 128 block scaled so that its largest
  // reaches about 448, so that codes of exponent 0 (subnormals, zeros) are as rare as in trained
  // weights (uniformly random bytes hold one in 16: the GFNI kernel's slow case on Intel).
  for (int64_t i = 0; i < out * in && d == DType::kF8E4M3; ++i)
    m.data[static_cast<size_t>(i)] = f32_to_fp8e4m3(std::clamp(normal(rng) * 2000.0f, -448.0f, 448.0f));
  m.w.dtype = d;
  m.w.out = out;
  m.w.in = in;
  m.w.data = m.data.data();
  m.bytes = nbytes;
  if (d == DType::kF8E4M3) {
    m.scales.assign(static_cast<size_t>(((out + 127) / 128) * ((in + 127) / 128)), 1e-3f);
    m.w.scale_inv = m.scales.data();
    m.w.finite = true;  // as after a checked load (the clamp leaves out NaN codes)
    m.bytes += static_cast<int64_t>(m.scales.size() * 4);
  }
  if (d == DType::kI8 || d == DType::kU8) {
    const uint16_t h = f32_to_f16(0.01f);
    m.group_scales.resize(static_cast<size_t>(out * (in / 32) * 2));
    for (size_t i = 0; i < m.group_scales.size(); i += 2) std::memcpy(&m.group_scales[i], &h, 2);
    m.w.group_scales = m.group_scales.data();
    m.w.group_size = 32;
    m.bytes += static_cast<int64_t>(m.group_scales.size());
  }
  return m;
}

// Best seconds of `reps` runs of f(i) (i cycles through the weight copies).
double best_time(int reps, int copies, const std::function<void(int)>& f) {
  f(0);  // warm-up: thread pool, scratch buffers
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now();
    f((r + 1) % copies);
    best = std::min(best, now() - t0);
  }
  return best;
}

// Runs f on the weight copies `reps` times, each run paired with a plain read of another copy right
// before it (bench::measure_regions_read_bandwidth, one pass, same thread count): the best
// seconds of f, and the median of (read seconds / f seconds), f's streaming efficiency. This VM's
// memory speed switches between about 33 and 60 GB/s from one second to the next, so a ratio to
// a bandwidth measured once at the start says little; the pairing puts both sides in the same
// second. The read takes another copy than f so that neither finds the other's bytes in cache.
struct Streamed {
  double best_seconds = 1e30;
  double median_efficiency = 0;
};

Streamed streamed(int reps, int threads, const std::vector<Weight>& ws, const std::function<void(int)>& f) {
  const int copies = static_cast<int>(ws.size());
  f(0);  // warm-up: thread pool, scratch buffers
  Streamed out;
  std::vector<double> ratios;
  for (int r = 0; r < reps; ++r) {
    const Weight& read = ws[static_cast<size_t>((2 * r + 1) % copies)];
    std::vector<std::span<const uint8_t>> regions = {read.data, read.group_scales};
    regions.emplace_back(reinterpret_cast<const uint8_t*>(read.scales.data()), read.scales.size() * sizeof(float));
    const double read_seconds = bench::measure_regions_read_bandwidth(threads, regions, 1).best_seconds;
    const double t0 = now();
    f((2 * r + 2) % copies);
    const double seconds = now() - t0;
    out.best_seconds = std::min(out.best_seconds, seconds);
    ratios.push_back(read_seconds / seconds);
  }
  std::sort(ratios.begin(), ratios.end());
  out.median_efficiency = ratios[ratios.size() / 2];
  return out;
}

// CPU seconds of the calling thread: under a shared machine's load a thread is descheduled for
// part of the wall time; its CPU time still measures what the kernel costs when it runs.
double thread_cpu() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double best_cpu_time(int reps, const std::function<void()>& f) {
  f();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = thread_cpu();
    f();
    best = std::min(best, thread_cpu() - t0);
  }
  return best;
}

// One core's FP32 FMA rate per CPU-second: 16 independent zmm (or ymm) FMA chains.
__attribute__((noinline)) double fma_per_cpu_second() {
#if defined(__AVX512F__)
  using Vec = __m512;
  constexpr int kLanes = 16;
#define DSEEK_FMA _mm512_fmadd_ps
#define DSEEK_SET1 _mm512_set1_ps
#else
  using Vec = __m256;
  constexpr int kLanes = 8;
#define DSEEK_FMA _mm256_fmadd_ps
#define DSEEK_SET1 _mm256_set1_ps
#endif
  constexpr int kChains = 12;
  constexpr int64_t kIters = 20'000'000;
  volatile float seed = 0.9999f;
  const Vec a = DSEEK_SET1(seed), b = DSEEK_SET1(1e-4f);
  Vec acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = DSEEK_SET1(0.001f * static_cast<float>(c));
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const double t0 = thread_cpu();
    for (int64_t it = 0; it < kIters; ++it)
      for (int c = 0; c < kChains; ++c) acc[c] = DSEEK_FMA(acc[c], a, b);
    best = std::min(best, thread_cpu() - t0);
  }
  Vec all = acc[0];  // every chain feeds the result, or the compiler drops the unused ones
  for (int c = 1; c < kChains; ++c) all = all + acc[c];
  float sink[kLanes];
  std::memcpy(sink, &all, sizeof(sink));
  seed = sink[0];
#undef DSEEK_FMA
#undef DSEEK_SET1
  return 2.0 * kLanes * kChains * static_cast<double>(kIters) / best;
}

double load_average() {
  double l[1] = {0};
  return getloadavg(l, 1) == 1 ? l[0] : -1;
}

}  // namespace
}  // namespace dseek

int main(int argc, char** argv) {
  using namespace dseek;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear as they are measured
  bool quick = false, matvec = true, packed = true, core_only = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    if (std::strcmp(argv[i], "--matvec-only") == 0) packed = false;
    if (std::strcmp(argv[i], "--packed-only") == 0) matvec = false;
    if (std::strcmp(argv[i], "--core-only") == 0) core_only = true;
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) omp_set_num_threads(std::atoi(argv[++i]));
  }
  const int threads = omp_get_max_threads();
  const auto bw = bench::measure_read_bandwidth(threads, uint64_t{512} << 20, 5);
  const auto fma = bench::measure_peak_fma(threads, 0.2, 3);
  std::printf("threads %d  read bandwidth %.1f GB/s  FMA peak %.1f GFLOP/s (%s)  load %.2f\n", threads,
              bw.bytes_per_second / 1e9, fma.flops_per_second / 1e9, fma.isa.c_str(), load_average());

  const std::vector<DType> dtypes = {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3, DType::kI8, DType::kU8};
  const int reps = quick ? 5 : 20;

  // ---- Per CPU-second on one thread, weights in L2: what each kernel costs when it runs,
  // independent of other processes' load. A matvec keeps up with memory when this rate is well
  // above (read bandwidth / threads); the packed product is set against the same core's FMA rate.
  const double core_fma = fma_per_cpu_second();
  std::printf("\none core, per CPU-second (robust under load): FMA %.1f GFLOP/s\n", core_fma / 1e9);
  std::printf("matvec [out 128, in 1024] GB/s per core: %-8s", "format");
  for (cpu::Isa isa : cpu::supported_isas()) std::printf(" %9s T=1 T=4", std::string(cpu::isa_name(isa)).c_str());
  // The paths with a prepared x, on the AVX-512 table where the CPU has them: the integer
  // dot-product path (q8/q4, VNNI; x quantized) and the GFNI FP8 path (float32; x scaled and
  // permuted).
  const cpu::LinearKernels* avx512k =
      cpu::supported(cpu::Isa::kAvx512) ? &cpu::linear_kernels(cpu::Isa::kAvx512) : nullptr;
  const bool int8_path = avx512k != nullptr && avx512k->gemv_int8 != nullptr;
  const bool gfni_path = avx512k != nullptr && avx512k->gemv_fp8 != nullptr;
  if (int8_path) std::printf(" %9s T=1 T=4 (kernel only)", "int8");
  if (gfni_path) std::printf(" %9s T=1 T=4 (kernel only) %9s T=1 T=4 (kernel only)", "gfni", "gfni-p");
  // One such path's columns: T = 1 and 4 with x's preparation timed, then the kernel alone.
  auto prepared_x_row = [&](const char* name, const Weight& m, auto&& prepare, auto&& kernel) {
    std::printf("  %-6s", name);
    for (bool whole : {true, false})
      for (int64_t T : {1, 4}) {
        prepare(T);
        const double s = best_cpu_time(200, [&] {
          for (int rep = 0; rep < 10; ++rep) {
            if (whole) prepare(T);
            kernel(T);
          }
        });
        const char* fmt = whole ? " %6.1f" : T == 1 ? " (%5.1f" : " %5.1f)";
        std::printf(fmt, 10.0 * static_cast<double>(m.bytes) / s / 1e9);
      }
  };
  std::printf("\n");
  for (DType d : dtypes) {
    if (!matvec) break;
    Weight m = make(d, 128, 1024, 3);
    std::vector<float> x(4 * 1024, 0.01f), y(4 * 128);
    std::printf("%-8s", std::string(dtype_name(d)).c_str());
    for (cpu::Isa isa : cpu::supported_isas()) {
      const cpu::LinearKernels& k = cpu::linear_kernels(isa);
      const cpu::WeightView v = ops::view_of(m.w);
      std::printf("  %-6s", std::string(cpu::isa_name(isa)).c_str());
      for (int64_t T : {1, 4}) {
        const double s = best_cpu_time(isa == cpu::Isa::kScalar ? 3 : 200, [&] {
          for (int rep = 0; rep < 10; ++rep) k.gemv(x.data(), T, v, 0, 128, y.data());
        });
        std::printf(" %6.1f", 10.0 * static_cast<double>(m.bytes) / s / 1e9);
      }
    }
    if (int8_path && (d == DType::kI8 || d == DType::kU8)) {
      const cpu::WeightView v = ops::view_of(m.w);
      std::vector<float> buf((cpu::int8_x_bytes(4, v) + 3) / 4 + 16);
      void* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) / 64 * 64);
      cpu::Int8X q;
      prepared_x_row(
          "int8", m,
          [&](int64_t T) {
            q = cpu::prepare_int8_x(T, v, aligned);
            avx512k->quantize_x(x.data(), v, q);
          },
          [&](int64_t) { avx512k->gemv_int8(q, v, 0, 128, y.data()); });
    }
    if (gfni_path && d == DType::kF8E4M3) {
      const cpu::WeightView v = ops::view_of(m.w);
      std::vector<float> buf(4 * 1024);
      cpu::Fp8X q;
      for (bool in_order : {false, true}) {
        prepared_x_row(
            in_order ? "gfni-p" : "gfni", m,
            [&](int64_t T) {
              q = cpu::Fp8X{T, 1024, 120, x.data(), buf.data(), in_order};
              avx512k->prepare_x_fp8(q);
            },
            [&](int64_t) { avx512k->gemv_fp8(q, v, 0, 128, y.data()); });
      }
    }
    std::printf("\n");
  }
  {
    omp_set_num_threads(1);
    std::printf("packed [T 512, out 1024, in 2048], 1 thread, %% of the core's FMA rate:");
    for (DType d : {DType::kF32, DType::kBF16, DType::kF8E4M3, DType::kU8}) {
      Weight m = make(d, 1024, 2048, 5);
      std::vector<float> x(512 * 2048, 0.01f), y(512 * 1024);
      const cpu::WeightView v = ops::view_of(m.w);
      std::printf("  %s", std::string(dtype_name(d)).c_str());
      for (cpu::Isa isa : cpu::supported_isas()) {
        if (isa == cpu::Isa::kScalar) continue;
        const double s = best_cpu_time(2, [&] { cpu::linear_with(cpu::linear_kernels(isa), x.data(), 512, v, y.data()); });
        std::printf(" %s %.0f%%", std::string(cpu::isa_name(isa)).c_str(), 100.0 * 2.0 * 512 * 1024 * 2048 / s / core_fma);
      }
    }
    std::printf("   load %.2f\n", load_average());
    omp_set_num_threads(threads);
  }

  if (core_only) return 0;

  // ---- Matrix-vector: [4096, 7168], copies cycled to ~256 MB so nothing stays in the L3.
  std::printf("\nmatvec [out 4096, in 7168]: best GB/s of weight bytes (%% of the read bandwidth above; median %%\n"
              "of a plain read of the same size in the same second)\n");
  std::printf("%-8s %-7s %22s %22s\n", "format", "family", "T=1", "T=4");
  for (DType d : dtypes) {
    if (!matvec) break;
    std::vector<Weight> ws;
    int64_t total = 0;
    for (uint32_t s = 0; total < (int64_t{256} << 20) || ws.size() < 3; ++s) {  // 3: see streamed()
      ws.push_back(make(d, 4096, 7168, s));
      total += ws.back().bytes;
    }
    std::vector<float> x(4 * 7168, 0.01f), y(4 * 4096);
    auto row = [&](const char* fam, const std::function<void(const float*, int64_t, const ops::LinearWeight&, float*)>& f) {
      std::printf("%-8s %-7s", std::string(dtype_name(d)).c_str(), fam);
      for (int64_t T : {1, 4}) {
        const Streamed st = streamed(reps, threads, ws, [&](int i) { f(x.data(), T, ws[i].w, y.data()); });
        const double gbs = static_cast<double>(ws[0].bytes) / st.best_seconds / 1e9;
        std::printf(" %7.1f (%4.0f%%; %4.0f%%)", gbs, 100.0 * gbs * 1e9 / bw.bytes_per_second,
                    100.0 * st.median_efficiency);
      }
      std::printf("   load %.2f\n", load_average());
    };
    const bool int8_on = cpu::int8_dot_enabled(), fp8_on = cpu::fp8_dot_enabled();
    for (cpu::Isa isa : cpu::supported_isas()) {
      const cpu::LinearKernels& k = cpu::linear_kernels(isa);
      auto run = [&](const float* xx, int64_t T, const ops::LinearWeight& w, float* yy) {
        const cpu::WeightView v = ops::view_of(w);
        cpu::linear_with(k, xx, T, v, yy);
      };
      cpu::set_int8_dot(false);  // the family's float path
      cpu::set_fp8_dot(false);
      row(std::string(cpu::isa_name(isa)).c_str(), run);
      cpu::set_fp8_dot(true);
      if (cpu::fp8_dot_used(k, cpu::WeightView{d, 4096, 7168, ws[0].w.data, nullptr, 128, 128, nullptr, 32})) {
        const bool permute = cpu::fp8_byte_permute();
        cpu::set_fp8_byte_permute(false);
        row("gfni", run);
        cpu::set_fp8_byte_permute(true);
        row("gfni-p", run);
        cpu::set_fp8_byte_permute(permute);
      }
      cpu::set_fp8_dot(fp8_on);
      cpu::set_int8_dot(true);
      if (cpu::int8_dot_used(k, cpu::WeightView{d, 4096, 7168, ws[0].w.data, nullptr, 128, 128,
                                                ws[0].w.group_scales, ws[0].w.group_size}))
        row("int8", run);
      cpu::set_int8_dot(int8_on);
      if (cpu::bf16_dot_used(k, cpu::WeightView{d, 4096, 7168, ws[0].w.data, nullptr, 128, 128, nullptr, 32})) {
        row("bf16", [&](const float* xx, int64_t T, const ops::LinearWeight& w, float* yy) {
          const cpu::WeightView v = ops::view_of(w);
          cpu::linear_with(k, cpu::ComputeType::kBf16, xx, T, v, yy);
        });
      }
    }
    row("old", old_linear);
  }

  // ---- Packed product: GFLOP/s (% of FMA peak).
  struct Shape {
    int64_t out, in, T;
    const char* what;
  };
  const std::vector<Shape> shapes = {{2048, 7168, 512, "in 7168 -> 2048"},
                                     {7168, 2048, 512, "in 2048 -> 7168"},
                                     {24576, 1536, 512, "in 1536 -> 24576"},
                                     {2048, 7168, 32, "MoE expert, 32 tokens"}};
  std::printf("\npacked product: GFLOP/s (%% of FMA peak)\n");
  for (const Shape& sh : shapes) {
    if (!packed) break;
    for (DType d : {DType::kBF16, DType::kF8E4M3, DType::kU8}) {
      if (quick && d != DType::kBF16) continue;
      Weight m = make(d, sh.out, sh.in, 7);
      std::vector<float> x(static_cast<size_t>(sh.T * sh.in), 0.01f), y(static_cast<size_t>(sh.T * sh.out));
      const double flops = 2.0 * static_cast<double>(sh.T) * sh.out * sh.in;
      std::printf("%-24s T=%-4ld %-8s", sh.what, static_cast<long>(sh.T), std::string(dtype_name(d)).c_str());
      for (cpu::Isa isa : cpu::supported_isas()) {
        if (isa == cpu::Isa::kScalar && sh.T > 64) continue;  // minutes; the vector families are the point
        const cpu::LinearKernels& k = cpu::linear_kernels(isa);
        const cpu::WeightView v = ops::view_of(m.w);
        const double s = best_time(quick ? 2 : 3, 1, [&](int) { cpu::linear_with(k, x.data(), sh.T, v, y.data()); });
        std::printf("  %s %6.1f (%3.0f%%)", std::string(cpu::isa_name(isa)).c_str(), flops / s / 1e9,
                    100.0 * flops / s / fma.flops_per_second);
        if (cpu::bf16_gemm_used(k, v)) {
          const double sb = best_time(quick ? 2 : 3, 1, [&](int) {
            cpu::linear_with(k, cpu::ComputeType::kBf16, x.data(), sh.T, v, y.data());
          });
          std::printf("  bf16 %6.1f (%3.0f%%)", flops / sb / 1e9, 100.0 * flops / sb / fma.flops_per_second);
        }
      }
      const double s = best_time(quick ? 1 : 2, 1, [&](int) { old_linear(x.data(), sh.T, m.w, y.data()); });
      std::printf("  old %6.1f   load %.2f\n", flops / s / 1e9, load_average());
    }
  }
  return 0;
}
