// cpu::RowDealer: every row goes to exactly one call, chunks are aligned, a thread that is done
// takes the chunks another thread has not started, and a team smaller than announced (or one
// thread outside any parallel region) still covers every row.
#include <omp.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cpu/row_dealer.h"

namespace dseek::cpu {
namespace {

// Runs the dealer with a team of `team` threads; returns which thread took each row (-1: none,
// -2: more than once) after checking that ranges are aligned and non-empty.
std::vector<int> deal(int64_t rows, int64_t align, int announced, int team, int64_t chunks) {
  RowDealer dealer(rows, align, announced, chunks);
  std::vector<std::atomic<int>> owner(static_cast<size_t>(rows));
  for (auto& o : owner) o = -1;
  std::atomic<int> bad_ranges{0};
  auto body = [&](int64_t r0, int64_t r1) {
    if (r0 >= r1 || r0 % align != 0 || r0 < 0 || r1 > rows) ++bad_ranges;
    for (int64_t r = r0; r < r1; ++r) {
      int expected = -1;
      if (!owner[static_cast<size_t>(r)].compare_exchange_strong(expected, omp_get_thread_num())) owner[r] = -2;
    }
  };
  if (team == 0) {
    dealer.for_each_chunk(body);  // no parallel region at all
  } else {
#pragma omp parallel num_threads(team)
    dealer.for_each_chunk(body);
  }
  EXPECT_EQ(bad_ranges.load(), 0) << rows << " rows, align " << align;
  std::vector<int> out;
  for (auto& o : owner) out.push_back(o.load());
  return out;
}

TEST(RowDealer, EveryRowExactlyOnce) {
  for (int64_t rows : {0, 1, 3, 4, 5, 17, 100, 1000, 4099})
    for (int64_t align : {1, 4})
      for (int announced : {1, 2, 3, 8})
        for (int team : {0, 1, 2, 3})
          for (int64_t chunks : {1, 4, 32}) {
            const std::vector<int> owner = deal(rows, align, announced, team, chunks);
            for (int64_t r = 0; r < rows; ++r)
              ASSERT_GE(owner[r], 0) << "row " << r << " of " << rows << (owner[r] == -2 ? " taken twice" : " never taken")
                                     << ": align " << align << ", announced " << announced << ", team " << team
                                     << ", chunks " << chunks;
          }
}

TEST(RowDealer, ChunksAreAlignedAndSized) {
  RowDealer dealer(1408, 4, 2, 32);  // a V2-Lite expert's rows
  EXPECT_EQ(dealer.chunk_rows(), 24);  // 704 rows a thread in 32 chunks, rounded up to 4
  RowDealer one(3, 4, 2, 32);
  EXPECT_EQ(one.chunk_rows(), 4);
}

// Thread 0 stalls inside its first chunk until thread 1 has returned; thread 1 starts only once
// thread 0 holds that chunk. Thread 1 must have taken every other chunk of thread 0's range.
TEST(RowDealer, AFinishedThreadTakesTheOthersChunks) {
  const int64_t rows = 640;
  RowDealer dealer(rows, 1, 2, 8);  // 320 rows a thread, chunks of 40
  std::vector<int> owner(rows, -1);
  std::atomic<bool> second_done{false}, first_taken{false};
  int team = 0;
#pragma omp parallel num_threads(2)
  {
#pragma omp single
    team = omp_get_num_threads();
    const int self = omp_get_thread_num();
    auto wait_for = [](const std::atomic<bool>& flag) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (!flag && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    };
    if (self == 1) wait_for(first_taken);
    bool first = true;
    dealer.for_each_chunk([&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) owner[r] = self;
      if (self == 0 && first) {
        first = false;
        first_taken = true;
        wait_for(second_done);
      }
    });
    if (self == 1) second_done = true;
  }
  if (team < 2) GTEST_SKIP() << "OpenMP gave a team of " << team;
  ASSERT_TRUE(first_taken.load() && second_done.load());
  for (int64_t r = 0; r < 40; ++r) EXPECT_EQ(owner[r], 0) << r;     // thread 0's first chunk
  for (int64_t r = 40; r < rows; ++r) EXPECT_EQ(owner[r], 1) << r;  // everything else
}

}  // namespace
}  // namespace dseek::cpu
