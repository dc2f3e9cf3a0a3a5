// Hands out the output rows of one matrix-vector product to an OpenMP team so that no thread
// idles at the closing barrier while another still streams its share.
//
// Why not a static split: the two halves of a static split finish at different times (one core's
// memory stream runs a few percent slower than the other's; a thread wakes into the region late).
// Over every q4 matrix of v2-lite-q4 at T = 1 (2 threads, timestamps at region entry and exit),
// the threads finished 7% of a region's time apart with a static split, 1.6% with 32 chunks a
// thread. End to end, v2-lite-q4 prefill of 16 tokens (its experts see 1-4 tokens, so they run
// here) went from 10.6-11.4 to 12.6-13.2 tokens/s; decode did not change beyond the noise, as
// it is bandwidth-bound: a thread that finishes early leaves its bandwidth to the other.
//
// How: every thread owns a contiguous range of rows (the static split), cut into chunks. The owner
// takes its chunks from the front, in order, so its memory stream stays sequential and its
// prefetches run into the next chunk it will read. A thread that has finished its own range takes
// chunks from the back of the others' ranges. A range's front and back live in one 64-bit atomic,
// on its own cache line, so an owner's claims touch only a line its core already holds until a
// thief arrives.
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>

#include "base/check.h"

namespace dseek::cpu {

class RowDealer {
 public:
  // rows: the product's output rows; align: chunks start at multiples of it (a kernel's row group);
  // threads: the team that will call for_each_chunk; chunks_per_thread: how finely a share is cut.
  RowDealer(int64_t rows, int64_t align, int threads, int64_t chunks_per_thread = 32)
      : threads_(std::max(threads, 1)), ranges_(std::make_unique<Range[]>(threads_)) {
    DSEEK_CHECK(rows >= 0 && align > 0 && chunks_per_thread > 0, "RowDealer: rows {}, align {}, chunks {}", rows,
                align, chunks_per_thread);
    const int64_t units = (rows + align - 1) / align;
    const int64_t per_thread = (units + threads_ - 1) / threads_;
    chunk_ = std::max<int64_t>(1, (per_thread + chunks_per_thread - 1) / chunks_per_thread) * align;
    const int64_t rows_per_thread = per_thread * align;
    for (int i = 0; i < threads_; ++i) {
      const int64_t begin = std::min(rows, i * rows_per_thread), end = std::min(rows, (i + 1) * rows_per_thread);
      ranges_[i].begin = begin;
      const auto chunks = static_cast<uint64_t>((end - begin + chunk_ - 1) / chunk_);
      ranges_[i].front_back.store(chunks << 32, std::memory_order_relaxed);  // front 0, back `chunks`
      ranges_[i].end = end;
    }
  }

  // Calls body(r0, r1) for row ranges of this thread's taking until every row has been handed out;
  // each row goes to exactly one call of exactly one thread. Call from every thread of the team
  // (or from one thread alone, which then takes every range).
  template <class Body>
  void for_each_chunk(Body&& body) {
    const int self = omp_in_parallel() ? omp_get_thread_num() % threads_ : 0;
    int64_t chunk;
    while ((chunk = take_front(ranges_[self])) >= 0) run(ranges_[self], chunk, body);
    for (int step = 1; step < threads_; ++step) {
      Range& victim = ranges_[(self + step) % threads_];
      while ((chunk = take_back(victim)) >= 0) run(victim, chunk, body);
    }
  }

  int64_t chunk_rows() const { return chunk_; }

 private:
  struct alignas(64) Range {
    std::atomic<uint64_t> front_back{0};  // low 32 bits: next chunk from the front; high: one past the last
    int64_t begin = 0, end = 0;
  };

  static int64_t take_front(Range& r) {
    uint64_t v = r.front_back.load(std::memory_order_relaxed);
    while ((v & 0xffffffffu) < (v >> 32)) {
      if (r.front_back.compare_exchange_weak(v, v + 1, std::memory_order_relaxed)) return static_cast<int64_t>(v & 0xffffffffu);
    }
    return -1;
  }
  static int64_t take_back(Range& r) {
    uint64_t v = r.front_back.load(std::memory_order_relaxed);
    while ((v & 0xffffffffu) < (v >> 32)) {
      const uint64_t taken = v - (uint64_t{1} << 32);
      if (r.front_back.compare_exchange_weak(v, taken, std::memory_order_relaxed)) return static_cast<int64_t>(taken >> 32);
    }
    return -1;
  }
  template <class Body>
  void run(const Range& r, int64_t chunk, Body& body) const {
    const int64_t r0 = r.begin + chunk * chunk_, r1 = std::min(r.end, r0 + chunk_);
    body(r0, r1);
  }

  int64_t chunk_ = 1;
  int threads_;
  std::unique_ptr<Range[]> ranges_;
};

}  // namespace dseek::cpu
