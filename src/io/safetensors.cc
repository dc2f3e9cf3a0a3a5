#include "io/safetensors.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>

#include <fcntl.h>
#include <unistd.h>

#include "io/json_file.h"

namespace dseek::io {

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

// numel * element size, or an error if it overflows 64 bits.
bool checked_nbytes(const std::vector<int64_t>& shape, size_t elem, uint64_t* out) {
  uint64_t n = elem;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  *out = n;
  return true;
}

Expected<TensorView> parse_entry(const std::string& name, const Json& entry, uint64_t data_size,
                                 const std::string& path) {
  auto fail = [&](const std::string& why) {
    return Status::errorf("{}: tensor '{}': {}", path, printable(name), why);
  };
  if (!entry.is_object()) return fail("header entry is not an object");
  auto dt = entry.find("dtype");
  auto sh = entry.find("shape");
  auto off = entry.find("data_offsets");
  if (dt == entry.end() || !dt->is_string()) return fail("missing or non-string 'dtype'");
  if (sh == entry.end() || !sh->is_array()) return fail("missing or non-array 'shape'");
  if (off == entry.end() || !off->is_array() || off->size() != 2)
    return fail("'data_offsets' must be an array [begin, end]");

  TensorView t;
  t.name = name;
  auto dtype = dtype_from_name(dt->get<std::string>());
  if (!dtype) return fail("unknown dtype '" + printable(dt->get<std::string>(), 40) + "'");
  t.dtype = *dtype;
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
      return fail("shape must be non-negative integers, got " + brief(*sh));
    uint64_t v = d.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return fail("dimension too large");
    t.shape.push_back(static_cast<int64_t>(v));
  }
  for (const auto& o : *off)
    if (!o.is_number_unsigned() && !(o.is_number_integer() && o.get<int64_t>() >= 0))
      return fail("data_offsets must be non-negative integers, got " + brief(*off));
  const uint64_t begin = (*off)[0].get<uint64_t>();
  const uint64_t end = (*off)[1].get<uint64_t>();
  if (begin > end) return fail(fmt::format("data_offsets [{}, {}] are reversed", begin, end));
  if (end > data_size)
    return fail(fmt::format("data_offsets [{}, {}] run past the data section ({} bytes; file truncated?)",
                            begin, end, data_size));
  uint64_t expected = 0;
  if (!checked_nbytes(t.shape, dtype_size(t.dtype), &expected))
    return fail("shape " + brief(*sh) + " overflows");
  if (end - begin != expected)
    return fail(fmt::format("{} bytes for dtype {} shape {} but data_offsets span {} bytes",
                            expected, dtype_name(t.dtype), brief(*sh), end - begin));
  t.data = reinterpret_cast<const uint8_t*>(static_cast<uintptr_t>(begin));  // relocated by caller
  t.nbytes = static_cast<size_t>(expected);
  return t;
}

}  // namespace

Expected<SafetensorsHeader> parse_safetensors(const uint8_t* bytes, size_t size, const std::string& path) {
  if (size < 8) return Status::errorf("{}: file is {} bytes, too short for a safetensors header", path, size);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxSafetensorsHeaderBytes)
    return Status::errorf("{}: header length {} exceeds the {} byte limit (not a safetensors file?)", path,
                          header_len, kMaxSafetensorsHeaderBytes);
  if (header_len > size - 8)
    return Status::errorf("{}: header length {} is longer than the file ({} bytes after the length)", path,
                          header_len, size - 8);
  const std::string text(reinterpret_cast<const char*>(bytes + 8), header_len);
  std::string duplicate;
  auto parsed = parse_json_strict(text, path + " (safetensors header)", &duplicate);
  if (!duplicate.empty())
    return Status::errorf("{}: tensor '{}' appears twice in the header", path, printable(duplicate));
  if (!parsed.ok()) return parsed.status();
  Json header = std::move(parsed).value();
  if (!header.is_object()) return Status::errorf("{}: safetensors header is not a JSON object", path);

  const uint64_t data_size = size - 8 - header_len;
  const uint8_t* data = bytes + 8 + header_len;
  SafetensorsHeader out;
  std::vector<std::pair<uint64_t, const TensorView*>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return Status::errorf("{}: __metadata__ is not an object", path);
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          return Status::errorf("{}: __metadata__['{}'] is not a string", path, printable(m.key()));
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    DSEEK_ASSIGN_OR_RETURN(TensorView t, parse_entry(it.key(), *it, data_size, path));
    const uint64_t begin = reinterpret_cast<uintptr_t>(t.data);
    t.data = data + begin;
    auto [pos, inserted] = out.tensors.emplace(t.name, std::move(t));
    if (!inserted) return Status::errorf("{}: tensor '{}' appears twice in the header", path, printable(it.key()));
    ranges.emplace_back(begin, &pos->second);
  }
  // Tensors may not share bytes: sort by start and compare each start with the furthest end
  // seen so far (not just the previous tensor's, which may be an empty tensor inside another).
  std::sort(ranges.begin(), ranges.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : a.second->nbytes < b.second->nbytes;
  });
  const TensorView* furthest = nullptr;
  uint64_t furthest_end = 0;
  for (const auto& [begin, t] : ranges) {
    if (t->nbytes == 0) continue;  // an empty tensor occupies no bytes
    if (furthest && begin < furthest_end)
      return Status::errorf("{}: tensors '{}' and '{}' overlap in the data section", path,
                            printable(furthest->name), printable(t->name));
    if (!furthest || begin + t->nbytes > furthest_end) {
      furthest = t;
      furthest_end = begin + t->nbytes;
    }
  }
  return out;
}

Expected<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  DSEEK_ASSIGN_OR_RETURN(auto mapped, MappedFile::open(path));
  DSEEK_ASSIGN_OR_RETURN(auto header, parse_safetensors(mapped->data(), mapped->size(), path));
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->file_ = std::move(mapped);
  file->header_ = std::move(header);
  for (auto& [name, t] : file->header_.tensors) t.file = &file->file_->path();
  return file;
}

Status SafetensorsFile::copy_into_memory(const std::function<void(size_t)>& progress) {
  if (!file_->is_mapped() || in_anonymous_memory()) return {};
  // Each tensor at the next 64-byte boundary, in file order. Reads go in pieces of at most 32 MB
  // so that both threads stay busy on a shard of a few huge tensors (one thread reads ~3 GB/s).
  constexpr size_t kAlign = 64, kPiece = size_t{32} << 20;
  struct Piece {
    size_t to, from, bytes;  // offset in the copy, offset in the file, length
  };
  std::vector<TensorView*> order;
  for (auto& [name, t] : header_.tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorView* a, const TensorView* b) { return a->data < b->data; });
  std::vector<size_t> placed(order.size());
  std::vector<Piece> pieces;
  size_t end = 0, data_bytes = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const TensorView& t = *order[i];
    placed[i] = (end + kAlign - 1) / kAlign * kAlign;
    end = placed[i] + t.nbytes;
    data_bytes += t.nbytes;
    const auto from = static_cast<size_t>(t.data - file_->data());
    for (size_t at = 0; at < t.nbytes; at += kPiece)
      pieces.push_back({placed[i] + at, from + at, std::min(kPiece, t.nbytes - at)});
  }
  auto allocated = HugePageMemory::allocate(std::max<size_t>(end, 1), path());
  if (!allocated.ok())
    return Status::errorf("{} to hold its tensors; load without --no-mmap", allocated.status().message());
  HugePageMemory memory = std::move(allocated).value();
  // read(), not a copy from the mapping: the mapping's pages would count in this process's
  // resident memory next to the copy.
  const int fd = ::open(path().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::errorf("{}: cannot open to read it into memory: {}", path(), std::strerror(errno));
  std::atomic<size_t> copied{file_size() - data_bytes};  // the header counts as done
  std::atomic<int64_t> failed_at{-1};
#pragma omp parallel for schedule(dynamic)
  for (size_t p = 0; p < pieces.size(); ++p) {
    const Piece& piece = pieces[p];
    for (size_t done = 0; done < piece.bytes && failed_at.load() < 0;) {
      const ssize_t n = ::pread(fd, memory.data() + piece.to + done, piece.bytes - done,
                                static_cast<off_t>(piece.from + done));
      if (n <= 0) {
        failed_at = static_cast<int64_t>(piece.from + done);
        break;
      }
      done += static_cast<size_t>(n);
    }
    const size_t now = copied += piece.bytes;
    if (progress && omp_get_thread_num() == 0) progress(now);  // the callback need not be thread-safe
  }
  ::close(fd);
  if (failed_at.load() >= 0)
    return Status::errorf("{}: read failed at byte {} of {} while copying it into memory", path(), failed_at.load(),
                          file_size());
  memory.make_read_only();
  for (size_t i = 0; i < order.size(); ++i) order[i]->data = memory.data() + placed[i];
  memory_ = std::move(memory);
  file_->unmap();  // the first bind read scales and norms through it: those pages go too
  if (progress) progress(file_size());
  return {};
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = header_.tensors.find(name);
  return it == header_.tensors.end() ? nullptr : &it->second;
}

}  // namespace dseek::io
