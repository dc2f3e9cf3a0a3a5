#include "io/mapped_file.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"

namespace dseek::io {

Expected<std::unique_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::errorf("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::errorf("{}: not a regular file", path);
  }
  std::unique_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ == 0) {
    ::close(fd);
    return file;
  }
  // PROT_READ + MAP_PRIVATE: the weights are never written, and a private mapping keeps a
  // stray write from reaching the user's checkpoint. No MAP_POPULATE: pages come in on first
  // touch, so opening a huge checkpoint is instant and only the experts used are read.
  void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p != MAP_FAILED) {
    file->data_ = static_cast<const uint8_t*>(p);
    file->mapped_ = true;
    ::close(fd);
    return file;
  }
  log_warn("{}: mmap failed ({}); reading the file into memory instead", path, std::strerror(errno));
  file->fallback_.resize(file->size_);
  size_t done = 0;
  while (done < file->size_) {
    ssize_t n = ::read(fd, file->fallback_.data() + done, file->size_ - done);
    if (n <= 0) {
      ::close(fd);
      return Status::errorf("{}: read failed after {} of {} bytes", path, done, file->size_);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  file->data_ = file->fallback_.data();
  return file;
}

Status MappedFile::copy_into_memory(const std::function<void(size_t)>& progress) {
  if (!mapped_ || anonymous_ || size_ == 0) return {};
  // A region one huge page longer, trimmed to a 2 MiB-aligned start, so that the copy can be
  // backed by huge pages from its first byte.
  constexpr size_t kHuge = size_t{2} << 20;
  void* raw = ::mmap(nullptr, size_ + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED)
    return Status::errorf("{}: cannot allocate {:.2f} GB to hold it in memory ({}); load without --no-mmap", path_,
                          static_cast<double>(size_) / 1e9, std::strerror(errno));
  auto* base = static_cast<uint8_t*>(raw);
  auto* copy = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(base) + kHuge - 1) / kHuge * kHuge);
  if (copy > base) ::munmap(base, static_cast<size_t>(copy - base));
  const size_t tail = static_cast<size_t>(base + size_ + kHuge - (copy + size_));
  if (tail > 0) ::munmap(copy + size_, tail);
  ::madvise(copy, size_, MADV_HUGEPAGE);  // advice only: without THP the copy still works
  // read(), not a copy from the mapping: the mapping's pages would count in this process's
  // resident memory next to the copy. Chunks in parallel: one thread reads about 3 GB/s.
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    ::munmap(copy, size_);
    return Status::errorf("{}: cannot open to read it into memory: {}", path_, std::strerror(err));
  }
  constexpr size_t kChunk = size_t{32} << 20;
  const auto chunks = static_cast<int64_t>((size_ + kChunk - 1) / kChunk);
  std::atomic<size_t> copied{0};
  std::atomic<int64_t> failed_at{-1};
#pragma omp parallel for schedule(dynamic)
  for (int64_t c = 0; c < chunks; ++c) {
    const size_t begin = static_cast<size_t>(c) * kChunk, end = std::min(size_, begin + kChunk);
    for (size_t at = begin; at < end && failed_at.load() < 0;) {
      const ssize_t n = ::pread(fd, copy + at, end - at, static_cast<off_t>(at));
      if (n <= 0) {
        failed_at = static_cast<int64_t>(at);
        break;
      }
      at += static_cast<size_t>(n);
    }
    const size_t now = copied += end - begin;
    if (progress && omp_get_thread_num() == 0) progress(now);  // the callback need not be thread-safe
  }
  ::close(fd);
  if (failed_at.load() >= 0) {
    ::munmap(copy, size_);
    return Status::errorf("{}: read failed at byte {} of {} while copying it into memory", path_, failed_at.load(),
                          size_);
  }
  if (progress) progress(size_);
  // The copy moves onto the mapping's own addresses (replacing it), so views stay valid.
  void* at = ::mremap(copy, size_, size_, MREMAP_MAYMOVE | MREMAP_FIXED, const_cast<uint8_t*>(data_));
  if (at == MAP_FAILED) {
    const int err = errno;
    ::munmap(copy, size_);
    return Status::errorf("{}: cannot move its in-memory copy over the mapping ({})", path_, std::strerror(err));
  }
  ::mprotect(at, size_, PROT_READ);
  anonymous_ = true;
  return {};
}

MappedFile::~MappedFile() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

Expected<std::string> read_text_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return Status::errorf("{}: is a directory, expected a file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::errorf("{}: cannot open: {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::errorf("{}: read failed", path);
  return ss.str();
}

}  // namespace dseek::io
