// Helpers shared by the model-level unit tests: the golden fixture models and reproducible
// token inputs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "../golden/test_util.h"
#include "model/deepseek.h"

namespace dseek::testing {

// tests/data/golden/models/NAME, or a test failure and nullptr.
inline std::unique_ptr<model::Model> load_golden_model(const std::string& name) {
  auto m = model::Model::load(golden_dir() + "/models/" + name);
  EXPECT_TRUE(m.ok()) << m.status().message();
  return m.ok() ? std::move(m.value()) : nullptr;
}

// n token ids in [0, V) from a 64-bit LCG started at `state`: the same inputs on every run.
inline std::vector<int32_t> lcg_tokens(uint64_t state, int64_t n, int64_t V) {
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (auto& t : out) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    t = static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(V));
  }
  return out;
}

}  // namespace dseek::testing
