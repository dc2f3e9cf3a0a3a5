// Scratch directories for tests: unique to the process, removed when their owner goes away.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace dseek::testing {

// A fresh, empty directory under the system temp directory ($TMPDIR), named
// dseek-NAME-PID-N, removed with everything in it when the object is destroyed.
//
// ctest runs every test case as its own process, so a directory that outlives the process
// piles up run after run: before this class, one day of runs left 25 GB of test models in /tmp
// and a CI run then failed with a full disk. Every file a test writes belongs in one of these;
// a fixture made once per process holds it in a function-local static, which is destroyed
// when the test binary returns from main.
class ScratchDir {
 public:
  explicit ScratchDir(std::string_view name) {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("dseek-" + std::string(name) + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;  // a destructor must not throw; a leftover is the worst outcome
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  // PATH/NAME as a string, ready for a command line.
  std::string operator/(std::string_view name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace dseek::testing
