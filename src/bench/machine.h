// Machine measurements for `dseek bench`: the memory read bandwidth a streaming multithreaded
// read achieves, and the peak FP32 FMA throughput of the cores. Both are what the engine's
// decode and prefill efficiencies are divided by, so both are measured on this machine, with
// the thread count the model run used, rather than taken from a data sheet.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace dseek::bench {

struct BandwidthResult {
  double bytes_per_second = 0;  // best pass: buffer_bytes / seconds
  double best_seconds = 0;      // time of the best pass
  uint64_t buffer_bytes = 0;
  int threads = 0;
  int passes = 0;
  uint64_t byte_sum = 0;  // the sum of every byte read (a check)
};

// Reads a buffer of `buffer_bytes` (rounded down to a multiple of 4 KiB per thread; make it
// much larger than the last-level cache, e.g. 1 GiB) `passes` times with `threads` OpenMP
// threads, each summing its own contiguous share with vector loads, and keeps the fastest pass.
// The buffer is first written by the same threads (first touch: its pages are local to them
// and really mapped, not the shared zero page), then read as measure_regions_read_bandwidth
// reads. threads <= 0: omp_get_max_threads().
BandwidthResult measure_read_bandwidth(int threads, uint64_t buffer_bytes, int passes);

// Reads the given byte ranges (a model's mapped weight tensors) `passes` times with `threads`
// OpenMP threads, each summing its contiguous share of their concatenation with vector integer
// loads, and keeps the fastest pass: the read bandwidth of the memory the weights actually sit
// in (page-cache pages of the mapped checkpoint, which decode must stream), to set beside the
// anonymous buffer of measure_read_bandwidth. Pages not yet resident are read in by the first
// pass; keep passes >= 2. byte_sum: the sum of all the bytes, however the threads split them.
BandwidthResult measure_regions_read_bandwidth(int threads, const std::vector<std::span<const uint8_t>>& regions,
                                               int passes);

struct FmaResult {
  double flops_per_second = 0;  // 2 FLOPs per FMA lane, all threads together, best run
  double best_seconds = 0;
  int threads = 0;
  int runs = 0;
  std::string isa;  // "AVX-512", "AVX2+FMA" or "scalar"
};

// Each of `threads` threads runs independent FMA chains held in vector registers (enough
// chains to cover the FMA latency on every current x86 core); a run lasts about
// `seconds_per_run`; the fastest of `runs` runs is kept.
FmaResult measure_peak_fma(int threads, double seconds_per_run, int runs);

// Peak resident set size of this process so far (getrusage ru_maxrss), in bytes.
uint64_t peak_rss_bytes();

}  // namespace dseek::bench
