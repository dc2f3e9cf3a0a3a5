#include "ops/product_clock.h"

#include <omp.h>

#include <atomic>
#include <chrono>
#include <mutex>

#include "base/dtype.h"
#include "cpu/weight_view.h"

namespace dseek::ops {

namespace {

std::atomic<bool> g_on{false};
std::mutex g_mu;  // guards g_totals; taken once per timed product, only while the clock is on
ProductTotals g_totals;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void set_product_clock(bool on) { g_on.store(on, std::memory_order_relaxed); }
bool product_clock_on() { return g_on.load(std::memory_order_relaxed); }

ProductTotals product_totals() {
  std::lock_guard lock(g_mu);
  return g_totals;
}

void reset_product_totals() {
  std::lock_guard lock(g_mu);
  g_totals = {};
}

double stored_bytes(const LinearWeight& w) {
  const double out = static_cast<double>(w.out);
  const double codes = out * static_cast<double>(cpu::row_bytes(view_of(w)));
  switch (w.dtype) {
    case DType::kU8:  // q4 and q8: an F16 scale per group of a row
    case DType::kI8:
      return codes + 2 * out * static_cast<double>(w.in / w.group_size);
    case DType::kF8E4M3:  // one float scale per block
      return codes + 4.0 * static_cast<double>((w.out + w.block_rows - 1) / w.block_rows) *
                         static_cast<double>(w.scale_cols());
    default:
      return codes;
  }
}

namespace {

double macs_of(int64_t T, const LinearWeight& w) {
  return static_cast<double>(T) * static_cast<double>(w.out) * static_cast<double>(w.in);
}

// Products inside a caller's parallel region (per-head pieces) are parts of a step, not products
// of their own: only the outermost calls count.
bool timing_now() { return product_clock_on() && !omp_in_parallel(); }

}  // namespace

ProductTimer::ProductTimer(int64_t T, const LinearWeight& w) : on_(timing_now()) {
  if (!on_) return;
  macs_ = macs_of(T, w);
  bytes_ = stored_bytes(w);
  start_ns_ = now_ns();
}

ProductTimer::ProductTimer(std::span<const LinearJob> jobs) : on_(timing_now()) {
  if (!on_) return;
  for (const LinearJob& j : jobs) macs_ += macs_of(j.T, *j.w), bytes_ += stored_bytes(*j.w);
  start_ns_ = now_ns();
}

ProductTimer::~ProductTimer() {
  if (!on_) return;
  const double seconds = static_cast<double>(now_ns() - start_ns_) * 1e-9;
  std::lock_guard lock(g_mu);
  g_totals.seconds += seconds;
  g_totals.calls += 1;
  g_totals.macs += macs_;
  g_totals.weight_bytes += bytes_;
}

}  // namespace dseek::ops
