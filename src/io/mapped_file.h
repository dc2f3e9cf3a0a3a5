// A read-only view of a whole file: memory-mapped when possible, read into memory otherwise.
// Checkpoints are mapped, never copied: a 600 GB model must start without reading it all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace dseek::io {

class MappedFile {
 public:
  static Expected<std::unique_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  bool is_mapped() const { return mapped_; }
  bool in_anonymous_memory() const { return anonymous_; }

  // Replaces the file mapping by an anonymous copy of the bytes at the same address, advised for
  // transparent huge pages (--no-mmap), so every pointer into the file stays valid. Why: the page
  // cache maps a checkpoint mostly in 4 KiB pages, and reading the weights from 2 MiB pages ran
  // 10-15% faster on this project's machine (dseek bench, alternating runs). The copy is private
  // memory: it must fit in RAM, and it is read-only like the mapping. `progress` is called with
  // the bytes copied so far. A file read into memory already (no mmap) is left as it is.
  Status copy_into_memory(const std::function<void(size_t)>& progress = {});

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  bool anonymous_ = false;  // copy_into_memory replaced the mapping
  std::vector<uint8_t> fallback_;  // holds the bytes when mmap is unavailable
};

// Reads a small text file (config, JSON) whole.
Expected<std::string> read_text_file(const std::string& path);

}  // namespace dseek::io
