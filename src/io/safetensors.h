// Safetensors file reader: the 8-byte little-endian header length, the JSON header
// {name: {dtype, shape, data_offsets}}, then the data section. The parser trusts nothing:
// every offset, size and shape is checked against the file before a tensor is handed out.
// It knows nothing about models; see model/weights for what the tensors mean.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "base/status.h"
#include "io/mapped_file.h"

namespace dseek::io {

// One tensor of a file: a view into the mapped bytes (not aligned beyond what safetensors
// promises, which is nothing; read it with memcpy-style loads).
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  const std::string* file = nullptr;  // path of the shard, owned by the SafetensorsFile

  int64_t numel() const;
};

// Parsed header: tensors sorted by name, plus the free-form __metadata__ strings.
struct SafetensorsHeader {
  std::map<std::string, TensorView> tensors;  // data pointers relative to the data section start
  std::map<std::string, std::string> metadata;
};

// Largest header accepted; the format's own reference implementation uses the same bound.
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100u << 20;

// Parses and validates a header against a data section of `data_size` bytes. `bytes` is the
// whole file. Pure function (no I/O) so it can be fuzzed directly.
Expected<SafetensorsHeader> parse_safetensors(const uint8_t* bytes, size_t size, const std::string& path);

class SafetensorsFile {
 public:
  static Expected<std::unique_ptr<SafetensorsFile>> open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const std::map<std::string, TensorView>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorView* find(const std::string& name) const;
  size_t file_size() const { return file_->size(); }
  // MappedFile::copy_into_memory: the tensor views stay valid.
  Status copy_into_memory(const std::function<void(size_t)>& progress = {}) {
    return file_->copy_into_memory(progress);
  }
  bool in_anonymous_memory() const { return file_->in_anonymous_memory(); }

 private:
  std::unique_ptr<MappedFile> file_;
  SafetensorsHeader header_;
};

}  // namespace dseek::io
