// `dseek grad MODEL_DIR --tokens TOKENS.json --out OUT.safetensors`: the gradient parity
// command. TOKENS.json is a JSON list of token ids; OUT holds, in float32,
//   loss [1]                mean next-token cross-entropy of the main model (MTP excluded)
//   grad.<HF tensor name>   d loss / d weight, the weight's shape, for every trainable tensor
// The interface is fixed: other tools depend on it. V3.2: the main model runs sparse attention
// (the indexer's top-k, as `dseek run`); the main weights' grads are those of the loss above,
// the indexer tensors' those of the indexer's KL loss L_I (train/indexer_backward.h), which
// the loss above does not reach.
#include <omp.h>

#include <cstdint>
#include <cstdio>

#include <fmt/format.h>

#include "base/timer.h"
#include "commands.h"
#include "io/json_file.h"
#include "io/safetensors_writer.h"
#include "model/weights.h"
#include "train/model_grad.h"

namespace dseek::cli {

namespace {

// The JSON shape only; ids, length and context are checked by train::check_trainable.
Expected<std::vector<int32_t>> read_token_list(const std::string& path) {
  DSEEK_ASSIGN_OR_RETURN(io::Json j, io::read_json_file(path));
  if (!j.is_array()) return Status::errorf("{}: expected a JSON list of token ids, got {}", path, io::brief(j));
  std::vector<int32_t> tokens;
  tokens.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    const io::Json& t = j[i];
    if (!t.is_number_integer() || t.get<int64_t>() < INT32_MIN || t.get<int64_t>() > INT32_MAX)
      return Status::errorf("{}: [{}]: expected an integer token id, got {}", path, i, io::brief(t));
    tokens.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return tokens;
}

Status run_grad(const std::string& dir, const std::string& tokens_path, const std::string& out_path) {
  Stopwatch clock;
  DSEEK_ASSIGN_OR_RETURN(auto weights, model::load_weights(dir));
  DSEEK_ASSIGN_OR_RETURN(auto tokens, read_token_list(tokens_path));
  DSEEK_RETURN_IF_ERROR(train::check_trainable(weights->config(), tokens).with_context(tokens_path));
  DSEEK_ASSIGN_OR_RETURN(auto result, train::loss_and_gradients(*weights, tokens));

  io::SafetensorsWriter out;
  out.add_f32("loss", {1}, {static_cast<float>(result.loss)});
  for (const auto& [name, g] : result.grads.tensors()) out.add_f32("grad." + name, g.shape, g.values);
  DSEEK_RETURN_IF_ERROR(out.write(out_path));
  const std::string indexer =
      weights->config().has_indexer() ? fmt::format(" (indexer loss {:.6f})", result.indexer_loss) : "";
  std::fprintf(stderr, "dseek grad: %zu tokens, loss %.6f%s, %zu gradients -> %s in %.2f s\n", tokens.size(),
               result.loss, indexer.c_str(), result.grads.tensors().size(), out_path.c_str(), clock.seconds());
  return {};
}

}  // namespace

void register_grad(CLI::App& app, Runner* run) {
  auto* cmd = app.add_subcommand("grad", "Write the next-token loss and d loss / d weight for a token sequence");
  struct Args {
    std::string dir, tokens, out;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("MODEL_DIR", a->dir, "Hugging Face model directory")->required();
  cmd->add_option("--tokens", a->tokens, "JSON list of token ids (at least 2)")->required();
  cmd->add_option("--out", a->out, "Output .safetensors file (loss, grad.<tensor name>)")->required();
  cmd->add_option("-t,--threads", a->threads, "Threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd->callback([=] {
    *run = [=] {
      if (a->threads > 0) omp_set_num_threads(a->threads);
      return exit_code(run_grad(a->dir, a->tokens, a->out));
    };
  });
}

}  // namespace dseek::cli
