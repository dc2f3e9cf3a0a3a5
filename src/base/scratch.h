// A per-thread float buffer that only grows, for the hot paths' temporaries: allocated on first
// use, then reused by every call on that thread, so the steady state allocates nothing and
// clears nothing (a std::vector<float>(n) writes n zeros the caller then overwrites).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "base/check.h"

namespace dseek {

// Holds one region at a time: get() invalidates what an earlier get() returned. 64-byte aligned,
// contents undefined.
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(p_); }

  float* get(int64_t n) {
    if (n > cap_) {
      std::free(p_);
      cap_ = (n + 15) / 16 * 16;
      p_ = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(cap_) * sizeof(float)));
      DSEEK_CHECK(p_ != nullptr, "out of memory for a {}-float scratch buffer", cap_);
    }
    return p_;
  }

 private:
  float* p_ = nullptr;
  int64_t cap_ = 0;
};

}  // namespace dseek
