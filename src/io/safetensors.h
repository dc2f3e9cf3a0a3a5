// Safetensors file reader: the 8-byte little-endian header length, the JSON header
// {name: {dtype, shape, data_offsets}}, then the data section. The parser trusts nothing:
// every offset, size and shape is checked against the file before a tensor is handed out.
// It knows nothing about models; see model/weights for what the tensors mean.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "base/huge_page_memory.h"
#include "base/status.h"
#include "io/mapped_file.h"

namespace dseek::io {

// One tensor of a file: a view into the mapped bytes (not aligned beyond what safetensors
// promises, which is nothing; read it with memcpy-style loads), or into the file's in-memory
// copy (64-byte aligned).
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
  // --no-mmap: reads every tensor into private memory backed by huge pages, each starting on a
  // 64-byte boundary, and points the views there. Why: the page cache maps a checkpoint mostly in
  // 4 KiB pages (reads from 2 MiB pages ran 10-15% faster), and safetensors places tensors at any
  // byte offset, so nearly every 64-byte vector load of a mapped weight spans two cache lines
  // (on an Emerald Rapids core such loads issue at 0.85 a cycle against 2 aligned; see
  // docs/kernels.md for what that costs the kernels). Must run before anyone copies a view's
  // data pointer (the model binds its weights after). The memory is private and read-only; it
  // must fit in RAM. The file's mapping is given back after. `progress` gets the file's bytes
  // done so far (the header counts as done). A file that is not mapped (read into memory
  // already) is left as it is.
  Status copy_into_memory(const std::function<void(size_t)>& progress = {});
  bool in_anonymous_memory() const { return memory_.data() != nullptr; }

 private:
  std::unique_ptr<MappedFile> file_;
  SafetensorsHeader header_;
  HugePageMemory memory_;  // the tensors' bytes after copy_into_memory
};

}  // namespace dseek::io
