#include "base/huge_page_memory.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include <sys/mman.h>

namespace dseek {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}

Expected<HugePageMemory> HugePageMemory::allocate(size_t bytes, const std::string& what) {
  HugePageMemory m;
  if (bytes == 0) return m;
  // One huge page more than asked, trimmed to a 2 MiB-aligned start, so that huge pages can back
  // the buffer from its first byte. NORESERVE: pages are committed as they are written.
  void* raw = ::mmap(nullptr, bytes + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
  if (raw == MAP_FAILED)
    return Status::errorf("{}: cannot allocate {:.2f} GB ({})", what, static_cast<double>(bytes) / 1e9,
                          std::strerror(errno));
  auto* base = static_cast<uint8_t*>(raw);
  auto* start = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(base) + kHugePage - 1) / kHugePage * kHugePage);
  if (start > base) ::munmap(base, static_cast<size_t>(start - base));
  const size_t tail = static_cast<size_t>(base + bytes + kHugePage - (start + bytes));
  if (tail > 0) ::munmap(start + bytes, tail);
  ::madvise(start, bytes, MADV_HUGEPAGE);  // advice only: without THP the memory still works
  m.data_ = start;
  m.size_ = bytes;
  return m;
}

HugePageMemory::HugePageMemory(HugePageMemory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

HugePageMemory& HugePageMemory::operator=(HugePageMemory&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

HugePageMemory::~HugePageMemory() {
  if (data_) ::munmap(data_, size_);
}

void HugePageMemory::make_read_only() {
  if (data_) ::mprotect(data_, size_, PROT_READ);
}

}  // namespace dseek
