#include "io/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "io/json_file.h"

namespace dseek::io {

namespace fs = std::filesystem;

Expected<std::unique_ptr<Checkpoint>> Checkpoint::open(const std::string& dir) {
  auto ckpt = std::make_unique<Checkpoint>();
  ckpt->dir_ = dir;
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single_path = fs::path(dir) / "model.safetensors";
  std::error_code ec;

  if (fs::exists(index_path, ec)) {
    ckpt->listing_ = index_path.string();
    DSEEK_ASSIGN_OR_RETURN(Json index, read_json_file_strict(index_path.string()));
    auto map = index.is_object() ? index.find("weight_map") : index.end();
    if (map == index.end() || !map->is_object() || map->empty())
      return Status::errorf("{}: expected a non-empty object 'weight_map'", index_path.string());
    // Open each shard once, in the order they are first named.
    std::map<std::string, SafetensorsFile*> by_name;
    for (auto it = map->begin(); it != map->end(); ++it) {
      if (!it->is_string())
        return Status::errorf("{}: weight_map['{}'] is not a file name", index_path.string(), printable(it.key()));
      const std::string shard = it->get<std::string>();
      const bool control = std::any_of(shard.begin(), shard.end(), [](char ch) {
        return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f;
      });
      if (shard.find('/') != std::string::npos || shard == "." || shard == ".." || shard.empty() || control)
        return Status::errorf("{}: weight_map['{}'] = '{}' is not a file in the model directory",
                              index_path.string(), printable(it.key()), printable(shard));
      if (!by_name.count(shard)) {
        DSEEK_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open((fs::path(dir) / shard).string()));
        by_name[shard] = file.get();
        ckpt->shards_.push_back(std::move(file));
      }
      const TensorView* t = by_name[shard]->find(it.key());
      if (!t)
        return Status::errorf("{}: tensor '{}' is listed in {} but missing from the shard",
                              by_name[shard]->path(), printable(it.key()), index_path.filename().string());
      ckpt->tensors_[it.key()] = t;
    }
    for (const auto& shard : ckpt->shards_) {
      for (const auto& [name, t] : shard->tensors()) {
        auto found = ckpt->tensors_.find(name);
        if (found == ckpt->tensors_.end())
          return Status::errorf("{}: tensor '{}' is in the shard but not in {}", shard->path(), printable(name),
                                index_path.filename().string());
        if (found->second != &t)
          return Status::errorf("{}: tensor '{}' is also in {}, where the index places it", shard->path(),
                                printable(name), *found->second->file);
      }
    }
  } else if (fs::exists(single_path, ec)) {
    ckpt->listing_ = single_path.string();
    DSEEK_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(single_path.string()));
    for (const auto& [name, t] : file->tensors()) ckpt->tensors_[name] = &t;
    ckpt->shards_.push_back(std::move(file));
  } else if (!fs::is_directory(dir, ec)) {
    return Status::errorf("{}: not a model directory", dir);
  } else {
    return Status::errorf("{}: no model.safetensors.index.json or model.safetensors", dir);
  }
  return ckpt;
}

std::unique_ptr<Checkpoint> Checkpoint::from_memory(const std::string& label, std::vector<TensorView> views) {
  auto ckpt = std::make_unique<Checkpoint>();
  ckpt->dir_ = label;
  ckpt->listing_ = label;
  for (TensorView& v : views) {
    std::string name = v.name;
    TensorView& stored = ckpt->memory_views_[name] = std::move(v);
    stored.file = &ckpt->listing_;  // the map's nodes and listing_ never move
    ckpt->tensors_[name] = &stored;
  }
  return ckpt;
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, t] : tensors_) total += t->nbytes;
  return total;
}

}  // namespace dseek::io
