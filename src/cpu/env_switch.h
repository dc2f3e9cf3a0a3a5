// A process-wide on/off switch for an optional kernel path: on unless the named environment
// variable is "0" (read once, on first use), and settable by tests and benchmarks, which compare
// the path with the one it replaces in one process.
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace dseek::cpu {

class EnvSwitch {
 public:
  explicit constexpr EnvSwitch(const char* variable) : variable_(variable) {}

  bool on() {
    int e = state_.load(std::memory_order_relaxed);
    if (e < 0) {
      const char* env = std::getenv(variable_);
      e = env != nullptr && std::strcmp(env, "0") == 0 ? 0 : 1;
      state_.store(e, std::memory_order_relaxed);
    }
    return e == 1;
  }
  void set(bool on) { state_.store(on ? 1 : 0, std::memory_order_relaxed); }

 private:
  const char* variable_;
  std::atomic<int> state_{-1};  // -1: not read from the environment yet
};

}  // namespace dseek::cpu
