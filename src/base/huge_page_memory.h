// Private anonymous memory that starts on a 2 MiB boundary and asks for transparent huge pages:
// fewer TLB misses when a large buffer is streamed (the weights copied in by --no-mmap, the
// bench's bandwidth probe). Returned to the system when the object goes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace dseek {

class HugePageMemory {
 public:
  // `what` names the buffer's purpose in the error, e.g. "model.safetensors: cannot allocate ...".
  static Expected<HugePageMemory> allocate(size_t bytes, const std::string& what);
  HugePageMemory() = default;
  HugePageMemory(HugePageMemory&& other) noexcept;
  HugePageMemory& operator=(HugePageMemory&& other) noexcept;
  HugePageMemory(const HugePageMemory&) = delete;
  HugePageMemory& operator=(const HugePageMemory&) = delete;
  ~HugePageMemory();

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // No more writes: a stray one faults instead of changing weights.
  void make_read_only();

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace dseek
