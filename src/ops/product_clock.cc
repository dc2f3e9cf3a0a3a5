#include "ops/product_clock.h"

#include <omp.h>

#include <atomic>
#include <chrono>
#include <mutex>

#include "base/dtype.h"

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
  const double n = static_cast<double>(w.out) * static_cast<double>(w.in);
  switch (w.dtype) {
    case DType::kU8:  // q4: two codes a byte, an F16 scale per group
      return n / 2 + 2 * n / static_cast<double>(w.group_size);
    case DType::kI8:  // q8
      return n + 2 * n / static_cast<double>(w.group_size);
    case DType::kF8E4M3:  // one float scale per block
      return n + 4.0 * static_cast<double>((w.out + w.block_rows - 1) / w.block_rows) *
                     static_cast<double>(w.scale_cols());
    default:
      return n * static_cast<double>(dtype_size(w.dtype));
  }
}

// Products inside a caller's parallel region (per-head pieces) are parts of a step, not products
// of their own: only the outermost calls count.
ProductTimer::ProductTimer(double macs, double weight_bytes)
    : on_(product_clock_on() && !omp_in_parallel()), macs_(macs), bytes_(weight_bytes) {
  if (on_) start_ns_ = now_ns();
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
