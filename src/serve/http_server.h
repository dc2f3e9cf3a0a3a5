// The OpenAI-compatible HTTP server over the engine (cpp-httplib):
//   GET  /v1/models, /v1/models/{id}      the one served model
//   POST /v1/chat/completions             chat, tools, reasoning_content, SSE streaming
//   POST /v1/completions                  legacy text completions
//   GET  /health                          {"status":"ok"}; 503 while loading or stopping
//   GET  /metrics                         Prometheus text
//   GET  /                                the web chat page (web/)
// Errors are OpenAI's {"error": {...}} objects. The server listens before the model is loaded
// (so /health can say "loading"); API routes answer 503 until set_backend().
//
// A client that disconnects cancels its engine requests: a failed write on the stream, and for
// non-streaming answers the same, because they are sent chunked with a space written about
// every second while the answer is computed (leading whitespace is valid JSON): cpp-httplib
// gives no other sign that a waiting peer left.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "sample/sampler.h"
#include "serve/engine.h"
#include "serve/metrics.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/tokenizer.h"

namespace dseek::serve {

// What the API routes need once the model is loaded. Outlives the server's use of it.
struct ServeBackend {
  Engine* engine = nullptr;
  const tokenizer::Tokenizer* tokenizer = nullptr;  // required
  tokenizer::ChatFormat format = tokenizer::ChatFormat::kV3;
  sample::SamplingParams defaults;   // generation_config.json
  std::vector<int32_t> eos_ids;
  int64_t max_context = 4096;        // prompt + generated tokens of one request
};

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                   // 0: any free port
  std::string api_key;               // "": no authentication
  std::string model_id;              // the served model's id
  size_t max_body = 4u << 20;        // bytes; larger bodies get 413
  int threads = 16;                  // concurrent HTTP requests (streams hold a thread each)
  bool quiet = false;                // no per-request log line
};

class HttpServer {
 public:
  HttpServer(HttpOptions options, Metrics* metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket; returns the port (the chosen one for port 0).
  Expected<int> bind();
  // Serves until stop(). Blocks; call from its own thread.
  void run();
  // The model is loaded: /health answers ok, the API routes open.
  void set_backend(const ServeBackend* backend);
  // New API requests get 503 and /health 503; requests in flight continue.
  void begin_shutdown();
  // Stops listening; run() returns once every handler has returned.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dseek::serve
