#include "bench/machine.h"

#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <limits>
#include <new>
#include <utility>

#include "base/huge_page_memory.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace dseek::bench {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int resolve_threads(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

// Keeps results alive so that the compiler cannot drop the loops that computed them.
volatile float g_sink = 0;

#if defined(__AVX512F__)
// Lane sum through memory: GCC 12 warns -Wuninitialized inside _mm512_reduce_add_ps (a false
// positive in its own header).
float lane_sum(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float s = 0;
  for (float x : lanes) s += x;
  return s;
}
#endif

// ---- Streaming read ---------------------------------------------------------------------
// Sum of n bytes from any alignment (vpsadbw: each 8 bytes summed into a 64-bit lane), four
// independent accumulators: the adds are far faster than memory, so the loop runs at the speed
// the loads arrive. The sum does not depend on how the bytes are split.
__attribute__((noinline)) uint64_t sum_bytes(const uint8_t* p, size_t n) {
  size_t i = 0;
  uint64_t s = 0;
#if defined(__AVX512F__)
  const __m512i zero = _mm512_setzero_si512();
  __m512i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
  for (; i + 256 <= n; i += 256) {
    a0 = _mm512_add_epi64(a0, _mm512_sad_epu8(_mm512_loadu_si512(p + i), zero));
    a1 = _mm512_add_epi64(a1, _mm512_sad_epu8(_mm512_loadu_si512(p + i + 64), zero));
    a2 = _mm512_add_epi64(a2, _mm512_sad_epu8(_mm512_loadu_si512(p + i + 128), zero));
    a3 = _mm512_add_epi64(a3, _mm512_sad_epu8(_mm512_loadu_si512(p + i + 192), zero));
  }
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
  for (uint64_t v : lanes) s += v;
#elif defined(__AVX2__)
  const __m256i zero = _mm256_setzero_si256();
  __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
  auto load = [&](size_t k) { return _mm256_sad_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + k)), zero); };
  for (; i + 128 <= n; i += 128) {
    a0 = _mm256_add_epi64(a0, load(i));
    a1 = _mm256_add_epi64(a1, load(i + 32));
    a2 = _mm256_add_epi64(a2, load(i + 64));
    a3 = _mm256_add_epi64(a3, load(i + 96));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  for (uint64_t v : lanes) s += v;
#endif
  for (; i < n; ++i) s += p[i];
  return s;
}


// ---- FMA chains -------------------------------------------------------------------------
// `iters` rounds of kChains independent vector FMAs acc = acc * a + b. Independent chains hide
// the FMA latency (4 cycles, 1-2 issued per cycle on current x86 cores: up to 8 in flight);
// the accumulators stay in registers (16 zmm of 32, or 12 ymm of 16).
//
// Verified with objdump -d on the Release -march=native build (GCC, AVX-512 machine): the hot
// loop of fma_chains is 16 x `vfmadd132ps %zmm..,%zmm..,%zmm..` (register operands only, no
// loads or stores), then an index increment, compare and branch. Check again with
//   objdump -d --no-show-raw-insn build/src/libdseek_bench.a | grep -A40 '<.*fma_chains'
#if defined(__AVX512F__)
constexpr int kLanes = 16, kChains = 16;
constexpr const char* kIsa = "AVX-512";
__attribute__((noinline)) float fma_chains(int64_t iters, float a, float b) {
  const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(0.001f * static_cast<float>(c));
  for (int64_t it = 0; it < iters; ++it) {
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], va, vb);
  }
  __m512 s = acc[0];
  for (int c = 1; c < kChains; ++c) s = _mm512_add_ps(s, acc[c]);
  return lane_sum(s);
}
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kLanes = 8, kChains = 12;
constexpr const char* kIsa = "AVX2+FMA";
__attribute__((noinline)) float fma_chains(int64_t iters, float a, float b) {
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(0.001f * static_cast<float>(c));
  for (int64_t it = 0; it < iters; ++it) {
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], va, vb);
  }
  __m256 s = acc[0];
  for (int c = 1; c < kChains; ++c) s = _mm256_add_ps(s, acc[c]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  float r = 0;
  for (float v : lanes) r += v;
  return r;
}
#else
// No vector FMA at compile time: scalar std::fma chains (a lower bound of the machine's peak).
constexpr int kLanes = 1, kChains = 16;
constexpr const char* kIsa = "scalar";
__attribute__((noinline)) float fma_chains(int64_t iters, float a, float b) {
  float acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = 0.001f * static_cast<float>(c);
  for (int64_t it = 0; it < iters; ++it) {
    for (int c = 0; c < kChains; ++c) acc[c] = std::fma(acc[c], a, b);
  }
  float s = 0;
  for (float v : acc) s += v;
  return s;
}
#endif

}  // namespace

BandwidthResult measure_read_bandwidth(int threads, uint64_t buffer_bytes, int passes) {
  const int wanted = resolve_threads(threads);
  // Each thread's share: a whole number of 4 KiB pages (so of 256-byte vector steps).
  const uint64_t share = std::max<uint64_t>(buffer_bytes / static_cast<uint64_t>(wanted) / 4096, 1) * 4096;
  const size_t floats_per_share = share / sizeof(float);
  // Huge pages: fewer TLB misses, as a model's weights copied in by --no-mmap see.
  auto memory = HugePageMemory::allocate(static_cast<size_t>(share * static_cast<uint64_t>(wanted)), "bandwidth probe");
  if (!memory.ok()) throw std::bad_alloc();
  const HugePageMemory buffer = std::move(memory).value();
  auto* data = reinterpret_cast<float*>(buffer.data());
  int used_threads = wanted;

  // First touch by the thread that will read the share.
#pragma omp parallel num_threads(wanted)
  {
    const int t = omp_get_thread_num();
#pragma omp single
    used_threads = omp_get_num_threads();
    float* p = data + static_cast<size_t>(t) * floats_per_share;
    for (size_t i = 0; i < floats_per_share; ++i) p[i] = 1.0f;
  }

  // Read like any other bytes: each thread's share of the buffer is exactly the share it touched.
  const auto* bytes = reinterpret_cast<const uint8_t*>(buffer.data());
  return measure_regions_read_bandwidth(used_threads, {std::span(bytes, share * static_cast<uint64_t>(used_threads))},
                                        passes);
}

BandwidthResult measure_regions_read_bandwidth(int threads, const std::vector<std::span<const uint8_t>>& regions,
                                               int passes) {
  BandwidthResult r;
  r.threads = resolve_threads(threads);
  r.passes = std::max(passes, 1);
  std::vector<uint64_t> starts;  // offset of each region in the concatenation
  uint64_t total = 0;
  for (const auto& region : regions) starts.push_back(total), total += region.size();
  r.buffer_bytes = total;
  if (total == 0) return r;
  double best = std::numeric_limits<double>::infinity();
  for (int pass = 0; pass < r.passes; ++pass) {
    double t0 = 0, t1 = 0;
    uint64_t sum = 0;
#pragma omp parallel num_threads(r.threads) reduction(+ : sum)
    {
      const uint64_t nt = static_cast<uint64_t>(omp_get_num_threads()), id = static_cast<uint64_t>(omp_get_thread_num());
      const uint64_t per = (total + nt - 1) / nt, begin = std::min(total, id * per), end = std::min(total, begin + per);
#pragma omp barrier
#pragma omp master
      t0 = now_seconds();
#pragma omp barrier
      // This thread's share [begin, end) of the concatenation, region by region.
      auto it = std::upper_bound(starts.begin(), starts.end(), begin);
      for (size_t k = static_cast<size_t>(it - starts.begin()) - 1; k < regions.size() && starts[k] < end; ++k) {
        const uint64_t from = std::max(begin, starts[k]), to = std::min(end, starts[k] + regions[k].size());
        if (from < to) sum += sum_bytes(regions[k].data() + (from - starts[k]), to - from);
      }
#pragma omp barrier
#pragma omp master
      t1 = now_seconds();
    }
    r.byte_sum = sum;
    best = std::min(best, t1 - t0);
  }
  r.best_seconds = best;
  r.bytes_per_second = static_cast<double>(total) / best;
  return r;
}

FmaResult measure_peak_fma(int threads, double seconds_per_run, int runs) {
  FmaResult r;
  r.threads = resolve_threads(threads);
  r.runs = std::max(runs, 1);
  r.isa = kIsa;
  const float a = 0.9999f, b = 1e-4f;  // acc -> b / (1 - a) = 1: stays finite and normal

  // Calibrate the iteration count on one thread so that a run lasts about seconds_per_run.
  int64_t iters = 1 << 16;
  for (;;) {
    const double t0 = now_seconds();
    g_sink = g_sink + fma_chains(iters, a, b);
    const double dt = now_seconds() - t0;
    if (dt > 0.02 || iters > (int64_t{1} << 40)) {
      iters = std::max<int64_t>(static_cast<int64_t>(static_cast<double>(iters) * seconds_per_run / dt), 1024);
      break;
    }
    iters *= 4;
  }

  double best = std::numeric_limits<double>::infinity();
  int used_threads = r.threads;
  for (int run = 0; run < r.runs; ++run) {
    double t0 = 0, t1 = 0;
    float sum = 0;
#pragma omp parallel num_threads(r.threads) reduction(+ : sum)
    {
#pragma omp single
      used_threads = omp_get_num_threads();
#pragma omp master
      t0 = now_seconds();
#pragma omp barrier
      sum += fma_chains(iters, a, b);
#pragma omp barrier
#pragma omp master
      t1 = now_seconds();
    }
    g_sink = g_sink + sum;
    best = std::min(best, t1 - t0);
  }
  r.threads = used_threads;
  r.best_seconds = best;
  const double fmas = static_cast<double>(iters) * kChains * kLanes * used_threads;
  r.flops_per_second = 2.0 * fmas / best;
  return r;
}

uint64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<uint64_t>(u.ru_maxrss) * 1024;  // Linux reports kilobytes
}

}  // namespace dseek::bench
