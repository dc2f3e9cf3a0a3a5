// The wall time, multiply-adds and weight bytes of the matrix products a forward pass runs
// (ops::linear, linear_batch and linear_f32 called outside a parallel region), counted while
// switched on. `dseek bench` splits prefill and decode time with it: how fast the products
// alone run against the machine's peak FMA rate and memory bandwidth, and how much time goes
// elsewhere (attention, norms, routing, hand-offs between steps).
//
// Off by default: a product then pays one relaxed atomic load. On, it pays two clock reads and
// an uncontended lock.
#pragma once

#include <cstdint>
#include <span>

#include "ops/linear.h"

namespace dseek::ops {

struct ProductTotals {
  double seconds = 0;    // wall time inside the products
  int64_t calls = 0;     // products timed (a batch counts once)
  double macs = 0;       // multiply-adds: T x out x in per product
  double weight_bytes = 0;  // the weights' stored bytes (scales included) per product call
};

void set_product_clock(bool on);
bool product_clock_on();
// Totals since the last reset_product_totals(), summed over every thread that ran products.
ProductTotals product_totals();
void reset_product_totals();

// Bytes a weight occupies as stored, its scales included: what one pass over it reads.
double stored_bytes(const LinearWeight& w);

// Times one product call (constructed at the call's start) and adds it to the totals: one
// product of T tokens by w, or a batch of jobs counted as one call. Multiply-adds and bytes are
// worked out only while the clock is on.
class ProductTimer {
 public:
  ProductTimer(int64_t T, const LinearWeight& w);
  explicit ProductTimer(std::span<const LinearJob> jobs);
  ~ProductTimer();
  ProductTimer(const ProductTimer&) = delete;
  ProductTimer& operator=(const ProductTimer&) = delete;

 private:
  bool on_;
  double macs_ = 0, bytes_ = 0;
  int64_t start_ns_ = 0;
};

}  // namespace dseek::ops
