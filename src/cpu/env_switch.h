// A process-wide on/off switch for an optional kernel path: the named environment variable "0"
// turns it off and "1" on (read once, on first use); otherwise it is on, or what default_on()
// says where one is given. Settable by tests and benchmarks, which compare the path with the one
// it replaces in one process.
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace dseek::cpu {

class EnvSwitch {
 public:
  explicit constexpr EnvSwitch(const char* variable, bool (*default_on)() = nullptr)
      : variable_(variable), default_on_(default_on) {}

  bool on() {
    int e = state_.load(std::memory_order_relaxed);
    if (e < 0) {
      const char* env = std::getenv(variable_);
      if (env != nullptr && std::strcmp(env, "0") == 0) {
        e = 0;
      } else if (env != nullptr && std::strcmp(env, "1") == 0) {
        e = 1;
      } else {
        e = default_on_ == nullptr || default_on_() ? 1 : 0;
      }
      state_.store(e, std::memory_order_relaxed);
    }
    return e == 1;
  }
  void set(bool on) { state_.store(on ? 1 : 0, std::memory_order_relaxed); }

 private:
  const char* variable_;
  bool (*default_on_)();
  std::atomic<int> state_{-1};  // -1: not read from the environment yet
};

}  // namespace dseek::cpu
