#include "train/token_data.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "io/json_file.h"

namespace dseek::train {

namespace {

constexpr char kMagic[8] = {'D', 'S', 'E', 'E', 'K', 'T', 'O', 'K'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kHeaderBytes = 64;

uint64_t mix64(uint64_t z) {  // splitmix64 finalizer
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool blank(std::string_view line) { return line.find_first_not_of(" \t\r") == std::string_view::npos; }

// A document, and where it came from for error messages.
struct Document {
  std::string_view text;
  std::string where;  // "file" or "file:line"
};

// Splits on runs of blank lines; each document keeps its inner newlines.
void split_text(const std::string& path, std::string_view text, bool split_blank_lines, std::vector<Document>* docs) {
  if (!split_blank_lines) {
    if (!blank(text)) docs->push_back({text, path});
    return;
  }
  size_t pos = 0, doc_begin = std::string_view::npos, doc_end = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    const std::string_view line = text.substr(pos, eol - pos);
    if (blank(line)) {
      if (doc_begin != std::string_view::npos) docs->push_back({text.substr(doc_begin, doc_end - doc_begin), path});
      doc_begin = std::string_view::npos;
    } else {
      if (doc_begin == std::string_view::npos) doc_begin = pos;
      doc_end = eol;
    }
    pos = eol + 1;
  }
  if (doc_begin != std::string_view::npos) docs->push_back({text.substr(doc_begin, doc_end - doc_begin), path});
}

Status split_jsonl(const std::string& path, std::string_view text, std::vector<std::string>* owned,
                   std::vector<std::pair<size_t, std::string>>* refs) {
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    const std::string line(text.substr(pos, eol - pos));
    pos = eol + 1;
    ++line_no;
    if (blank(line)) continue;
    const std::string where = fmt::format("{}:{}", path, line_no);
    DSEEK_ASSIGN_OR_RETURN(io::Json j, io::parse_json(line, where));
    auto it = j.is_object() ? j.find("text") : j.end();
    if (it == j.end() || !it->is_string())
      return Status::errorf("{}: expected an object with a string field 'text', got {}", where, io::brief(j));
    owned->push_back(it->get<std::string>());
    refs->emplace_back(owned->size() - 1, where);
  }
  return {};
}

void put_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put_i32(uint8_t* p, int32_t v) { std::memcpy(p, &v, 4); }
void put_u64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
template <typename T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

Expected<uint64_t> fingerprint_sources(const std::vector<std::string>& inputs, uint64_t salt) {
  uint64_t h = fnv1a(0xcbf29ce484222325ull, &salt, sizeof(salt));
  for (const std::string& path : inputs) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return Status::errorf("{}: cannot stat: {}", path, std::strerror(errno));
    const int64_t size = st.st_size, mtime = st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
    h = fnv1a(h, path.data(), path.size() + 1);
    h = fnv1a(h, &size, sizeof(size));
    h = fnv1a(h, &mtime, sizeof(mtime));
  }
  return h;
}

Expected<TokenFileStats> build_token_file(const std::vector<std::string>& inputs, const TokenizerHooks& tok,
                                          uint64_t fingerprint, const std::string& out_path) {
  if (inputs.empty()) return Status::error("no data files given");
  if (tok.vocab_size <= 0 || tok.eos_id < 0 || tok.eos_id >= tok.vocab_size)
    return Status::errorf("tokenizer: EOS id {} is not in the vocabulary of {}", tok.eos_id, tok.vocab_size);
  // Every file's bytes stay alive until all documents are encoded (documents are views).
  std::vector<std::string> texts;
  std::vector<std::string> jsonl_texts;
  std::vector<Document> docs;
  texts.reserve(inputs.size());
  std::vector<std::vector<std::pair<size_t, std::string>>> jsonl_refs(inputs.size());
  for (size_t f = 0; f < inputs.size(); ++f) {
    DSEEK_ASSIGN_OR_RETURN(std::string text, io::read_text_file(inputs[f]));
    texts.push_back(std::move(text));
    if (ends_with(inputs[f], ".jsonl")) {
      DSEEK_RETURN_IF_ERROR(split_jsonl(inputs[f], texts.back(), &jsonl_texts, &jsonl_refs[f]));
    }
  }
  // Views into jsonl_texts are taken only now that it no longer grows.
  for (size_t f = 0; f < inputs.size(); ++f) {
    if (ends_with(inputs[f], ".jsonl")) {
      for (const auto& [index, where] : jsonl_refs[f]) docs.push_back({jsonl_texts[index], where});
    } else {
      split_text(inputs[f], texts[f], tok.split_blank_lines, &docs);
    }
  }
  if (docs.empty()) return Status::errorf("{}: no text to train on (every input is empty)", inputs.front());

  const int64_t n_docs = static_cast<int64_t>(docs.size());
  std::vector<std::vector<int32_t>> ids(docs.size());
  std::vector<Status> errors(docs.size());
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t d = 0; d < n_docs; ++d) {
    Expected<std::vector<int32_t>> e = tok.encode(docs[d].text);
    if (e.ok()) ids[d] = std::move(e).value();
    else errors[d] = e.status().with_context(docs[d].where);
  }
  TokenFileStats stats;
  stats.documents = n_docs;
  for (int64_t d = 0; d < n_docs; ++d) {
    DSEEK_RETURN_IF_ERROR(errors[d]);
    for (int32_t id : ids[d])
      if (id < 0 || id >= tok.vocab_size)
        return Status::errorf("{}: the tokenizer produced id {} outside its vocabulary of {}", docs[d].where, id,
                              tok.vocab_size);
    stats.tokens += static_cast<int64_t>(ids[d].size()) + 1;
  }

  uint8_t header[kHeaderBytes] = {};
  std::memcpy(header, kMagic, 8);
  put_u32(header + 8, kVersion);
  put_u32(header + 12, kHeaderBytes);
  put_u64(header + 16, static_cast<uint64_t>(stats.tokens));
  put_i32(header + 24, tok.vocab_size);
  put_i32(header + 28, tok.eos_id);
  put_u64(header + 32, fingerprint);
  put_u64(header + 40, static_cast<uint64_t>(n_docs));
  const std::string tmp = out_path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return Status::errorf("{}: cannot create: {}", tmp, std::strerror(errno));
  bool ok = std::fwrite(header, 1, kHeaderBytes, f) == kHeaderBytes;
  for (int64_t d = 0; d < n_docs && ok; ++d) {
    ids[d].push_back(tok.eos_id);
    ok = std::fwrite(ids[d].data(), 4, ids[d].size(), f) == ids[d].size();
  }
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    return Status::errorf("{}: write failed", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, out_path, ec);
  if (ec) return Status::errorf("{}: cannot rename to {}: {}", tmp, out_path, ec.message());
  return stats;
}

Expected<std::unique_ptr<TokenData>> TokenData::open(const std::string& path) {
  DSEEK_ASSIGN_OR_RETURN(auto file, io::MappedFile::open(path));
  const uint8_t* p = file->data();
  const size_t size = file->size();
  if (size < kHeaderBytes || std::memcmp(p, kMagic, 8) != 0)
    return Status::errorf("{}: not a dseek token file (expected the magic 'DSEEKTOK' and a {}-byte header)", path,
                          kHeaderBytes);
  if (get<uint32_t>(p + 8) != kVersion || get<uint32_t>(p + 12) != kHeaderBytes)
    return Status::errorf("{}: token file version {} with a {}-byte header, expected version {} ({} bytes)", path,
                          get<uint32_t>(p + 8), get<uint32_t>(p + 12), kVersion, kHeaderBytes);
  const uint64_t n = get<uint64_t>(p + 16);
  if (n > (size - kHeaderBytes) / 4 || size != kHeaderBytes + 4 * n)
    return Status::errorf("{}: header says {} tokens ({} bytes) but the file has {} bytes", path, n,
                          kHeaderBytes + 4 * n, size);
  auto data = std::unique_ptr<TokenData>(new TokenData());
  data->vocab_size_ = get<int32_t>(p + 24);
  data->eos_id_ = get<int32_t>(p + 28);
  data->fingerprint_ = get<uint64_t>(p + 32);
  data->documents_ = static_cast<int64_t>(get<uint64_t>(p + 40));
  if (data->vocab_size_ <= 0 || data->eos_id_ < 0 || data->eos_id_ >= data->vocab_size_)
    return Status::errorf("{}: vocab_size {} / eos_id {} in the header are invalid", path, data->vocab_size_,
                          data->eos_id_);
  // The ids start 64 bytes into a page-aligned mapping (or a vector's buffer): 4-byte aligned.
  data->tokens_ = {reinterpret_cast<const int32_t*>(p + kHeaderBytes), static_cast<size_t>(n)};
  for (size_t i = 0; i < n; ++i)
    if (data->tokens_[i] < 0 || data->tokens_[i] >= data->vocab_size_)
      return Status::errorf("{}: token {} has id {}, outside the vocabulary [0, {})", path, i, data->tokens_[i],
                            data->vocab_size_);
  data->file_ = std::move(file);
  return data;
}

Expected<WindowSampler> WindowSampler::make(const TokenData& data, int64_t seq_len, double heldout_fraction,
                                            uint64_t seed) {
  const int64_t n = static_cast<int64_t>(data.tokens().size());
  if (seq_len < 2) return Status::errorf("sequence length {}: need at least 2 tokens", seq_len);
  if (!(heldout_fraction >= 0 && heldout_fraction < 1))
    return Status::errorf("held-out fraction {} is not in [0, 1)", heldout_fraction);
  const int64_t heldout = std::max(seq_len, static_cast<int64_t>(heldout_fraction * static_cast<double>(n)));
  if (n - heldout < 2 * seq_len)
    return Status::errorf("{}: {} tokens are too few for windows of {} (need {} for training plus {} held out)",
                          data.path(), n, seq_len, 2 * seq_len, heldout);
  WindowSampler s;
  s.tokens_ = data.tokens();
  s.seq_len_ = seq_len;
  s.train_end_ = n - heldout;
  s.heldout_begin_ = n - heldout;
  s.heldout_end_ = n;
  s.seed_ = seed;
  return s;
}

std::span<const int32_t> WindowSampler::train_window(uint64_t index) const {
  const uint64_t starts = static_cast<uint64_t>(train_end_ - seq_len_ + 1);
  const uint64_t start = mix64(mix64(seed_ ^ 0x7261696e77696e64ull) + index) % starts;  // bias < starts / 2^64
  return tokens_.subspan(start, static_cast<size_t>(seq_len_));
}

std::span<const int32_t> WindowSampler::heldout_window(int64_t i) const {
  const int64_t start = heldout_begin_ + (i % heldout_windows()) * seq_len_;
  return tokens_.subspan(static_cast<size_t>(start), static_cast<size_t>(seq_len_));
}

}  // namespace dseek::train
