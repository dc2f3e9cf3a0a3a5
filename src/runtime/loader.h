// Loading a model for use: map the checkpoint, bind the tensor table, then (unless told not to)
// read every weight byte once, which verifies that no value is NaN or infinite and brings the
// pages into memory before the first token. Long loads show progress on stderr (bytes, rate,
// seconds left) and end with a one-line summary.
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "model/deepseek.h"

namespace dseek::runtime {

struct LoadOptions {
  bool verify = true;    // read and check every weight byte
  bool progress = true;  // progress line and summary on stderr
  // Keep the weights in the page cache's mapping (default), or copy them into anonymous memory
  // backed by huge pages (--no-mmap, as llama.cpp): a slower start and private memory, faster
  // reads of the weights (io::MappedFile::copy_into_memory).
  bool mmap = true;
};

Expected<std::unique_ptr<model::Model>> load_model(const std::string& dir, const LoadOptions& options);

// Scans one tensor for non-finite values; returns the index of the first, or -1.
int64_t first_non_finite(const io::TensorView& t);

}  // namespace dseek::runtime
