// `dseek serve -m MODEL`: the OpenAI-compatible HTTP server (llama.cpp-style flags). Listens
// first (so /health reports loading), then loads the model and starts the engine. SIGINT or
// SIGTERM: stop taking requests, end the running ones, exit 0.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "commands.h"
#include "generation_setup.h"
#include "serve/engine.h"
#include "serve/http_server.h"
#include "serve/metrics.h"

namespace dseek::cli {

namespace {

struct ServeArgs {
  GenerationFlags gen;
  serve::HttpOptions http;
  int64_t parallel = 8;
  int64_t max_queue = 64;
  int64_t prefill_chunk = 256;
  std::string alias;
};

// The served model id: --alias, else the model directory's name.
std::string model_id(const std::string& alias, const std::string& dir) {
  if (!alias.empty()) return alias;
  std::filesystem::path p(dir);
  if (p.filename().empty()) p = p.parent_path();  // "models/foo/"
  return p.filename().string();
}

// What the signal thread and the main thread share.
struct Lifecycle {
  std::mutex mu;
  bool stopping = false;            // guarded by mu
  serve::Engine* engine = nullptr;  // guarded by mu; set once the model is loaded
  std::atomic<bool> exited{false};  // the main thread is done; the signal thread may end
};

// Waits for SIGINT/SIGTERM (blocked in every thread, so only here do they arrive).
void signal_loop(const sigset_t* set, Lifecycle* life, serve::HttpServer* server) {
  const timespec poll{0, 200'000'000};
  while (!life->exited.load()) {
    if (sigtimedwait(set, nullptr, &poll) < 0) continue;
    std::fprintf(stderr, "dseek serve: stopping\n");
    serve::Engine* engine = nullptr;
    {
      std::lock_guard lock(life->mu);
      life->stopping = true;
      engine = life->engine;
    }
    server->begin_shutdown();
    // Still loading: nothing to finish (the weights are mapped read-only), so leave at once.
    if (!engine) std::_Exit(0);
    engine->shutdown();  // running requests end (cancelled) and their answers go out
    server->stop();
    return;
  }
}

int run_serve(ServeArgs& a) {
  std::signal(SIGPIPE, SIG_IGN);  // a client that left must be a failed write, not our death
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before any thread starts: they inherit it

  auto dir = resolve_model_dir(a.gen.model);
  if (!dir.ok()) return fail(dir.status().message());
  a.gen.model = dir.value();
  a.http.model_id = model_id(a.alias, dir.value());
  a.http.threads = static_cast<int>(a.parallel + a.max_queue + 4);  // + 4: /health, /metrics

  serve::Metrics metrics;
  serve::HttpServer server(a.http, &metrics);
  auto port = server.bind();
  if (!port.ok()) return fail(port.status().message());
  std::fprintf(stderr, "dseek serve: listening on http://%s:%d\n", a.http.host.c_str(), port.value());
  std::fflush(stderr);

  Lifecycle life;
  std::thread http([&] { server.run(); });
  std::thread signals(signal_loop, &set, &life, &server);
  auto finish = [&](int code) {
    life.exited.store(true);
    signals.join();
    server.begin_shutdown();
    server.stop();
    http.join();
    return code;
  };

  auto g = setup_generation(a.gen);
  if (!g.ok()) return finish(fail(g.status().message()));
  if (!g->tokenizer) return finish(fail("the model directory has no tokenizer.json; serve needs one"));
  const int64_t max_pos = g->model->config().max_position_embeddings;
  serve::EngineOptions eo;
  eo.parallel = a.parallel;
  eo.max_queue = a.max_queue;
  eo.prefill_chunk = a.prefill_chunk;
  eo.kv_tokens = g->ctx_size;
  eo.max_context = std::min(g->ctx_size, max_pos);
  eo.step_tokens = std::max(eo.step_tokens, eo.prefill_chunk);
  serve::Engine engine(*g->model, &*g->tokenizer, eo, &metrics);

  serve::ServeBackend backend;
  backend.engine = &engine;
  backend.tokenizer = &*g->tokenizer;
  backend.format = g->format;
  backend.defaults = g->options.sampling;
  backend.eos_ids = g->options.eos_ids;
  backend.max_context = eo.max_context;
  {
    std::lock_guard lock(life.mu);
    if (!life.stopping) {
      life.engine = &engine;
      server.set_backend(&backend);
      std::fprintf(stderr, "dseek serve: %s ready (%s format, context %lld tokens, %lld parallel)\n",
                   a.http.model_id.c_str(), tokenizer::chat_format_name(g->format),
                   static_cast<long long>(eo.max_context), static_cast<long long>(eo.parallel));
    }
  }
  http.join();  // returns once the signal thread has stopped the server
  life.exited.store(true);
  signals.join();
  engine.shutdown();
  std::fprintf(stderr, "dseek serve: stopped\n");
  return 0;
}

}  // namespace

void register_serve(CLI::App& app, Runner* runner) {
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (chat, completions, web chat page)");
  auto a = std::make_shared<ServeArgs>();
  auto& f = a->gen;
  cmd->add_option("-m,--model", f.model, "Model directory (default: $DSEEK_MODEL, else the project's default model)");
  cmd->add_option("--host", a->http.host, "Address to listen on (default: 127.0.0.1, this machine only)");
  cmd->add_option("--port", a->http.port, "Port (0: any free port)")->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", a->http.api_key, "Require 'Authorization: Bearer KEY' on /v1/ (default: $DSEEK_API_KEY)")
      ->envname("DSEEK_API_KEY");
  cmd->add_option("--parallel", a->parallel, "Sequences decoded together at most")->check(CLI::Range(1, 256));
  cmd->add_option("-c,--ctx-size", f.ctx_size,
                  "KV cache tokens shared by all sequences, and the longest context of one request "
                  "(default: min(4096, model maximum))")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-t,--threads", f.threads, "Compute threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_option("-a,--alias", a->alias, "Model id the API serves (default: the model directory's name)");
  cmd->add_option("--chat-format", f.format, "Override the chat format: v3, r1, v3.1, v3.2")
      ->check(CLI::IsMember({"v3", "r1", "v3.1", "v3.2"}));
  cmd->add_option("--max-queue", a->max_queue, "Requests waiting for a batch slot at most; beyond: 429")
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--max-body", a->http.max_body, "Request body bytes at most; beyond: 413");
  cmd->add_option("--prefill-chunk", a->prefill_chunk, "Prompt tokens of one sequence per engine step")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("--no-verify", f.no_verify, "Skip reading every weight once at load (faster start)");
  add_no_mmap_flag(cmd, &f.no_mmap);
  add_cache_type_flag(cmd, &f.cache_type_k);
  add_dtype_flag(cmd, &f.dtype);
  cmd->add_flag("-q,--quiet", a->http.quiet, "No log line per request");
  cmd->callback([=] { *runner = [=] { return run_serve(*a); }; });
}

}  // namespace dseek::cli
