// A Hugging Face model directory's weights: `model.safetensors.index.json` naming the shard of
// every tensor, or a single `model.safetensors`. All shards are mapped; the index and the shard
// headers must agree exactly (a tensor the index places in another shard, or one missing from
// its shard, is an error naming both).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "io/safetensors.h"

namespace dseek::io {

class Checkpoint {
 public:
  static Expected<std::unique_ptr<Checkpoint>> open(const std::string& dir);
  // Tensors held in memory by the caller (a trainer's parameters), which must outlive the
  // checkpoint: each view's data pointer is used as is, never copied, so a model bound to it
  // sees in-place updates. `label` stands for the file name in error messages.
  static std::unique_ptr<Checkpoint> from_memory(const std::string& label, std::vector<TensorView> views);

  const std::string& dir() const { return dir_; }
  // The file that lists the tensors: the index, or the single model.safetensors. Errors about
  // a tensor that should be there but is not name this file.
  const std::string& listing() const { return listing_; }
  const TensorView* find(const std::string& name) const;
  const std::map<std::string, const TensorView*>& tensors() const { return tensors_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& shards() const { return shards_; }
  uint64_t total_bytes() const;

 private:
  std::string dir_;
  std::string listing_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, const TensorView*> tensors_;
  std::map<std::string, TensorView> memory_views_;  // from_memory only
};

}  // namespace dseek::io
