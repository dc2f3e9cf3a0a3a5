// A read-only view of a whole file: memory-mapped when possible, read into memory otherwise.
// Checkpoints are mapped, not copied, by default: a 600 GB model must start without reading it
// all (--no-mmap copies the tensors: SafetensorsFile::copy_into_memory).
#pragma once

#include <cstddef>
#include <cstdint>
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
  // Gives the mapping back once nothing reads through it (its tensors were copied elsewhere), so
  // that the pages it brought in stop counting in this process's memory. data() is null after;
  // size() and path() stay.
  void unmap();

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::vector<uint8_t> fallback_;  // holds the bytes when mmap is unavailable
};

// Reads a small text file (config, JSON) whole.
Expected<std::string> read_text_file(const std::string& path);

}  // namespace dseek::io
