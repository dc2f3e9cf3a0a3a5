// Routes of the OpenAI-compatible server (see http_server.h). JSON shapes live in
// openai_request / openai_response; this file moves events between the engine and sockets.
#include "serve/http_server.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <functional>
#include <random>

#include <httplib.h>

#include "serve/openai_request.h"
#include "serve/openai_response.h"
#include "serve/web/web_assets.h"
#if DSEEK_HAVE_GUIDED
#include "serve/guided.h"
#endif

namespace dseek::serve {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// How often a waiting answer writes something (a space, or an SSE comment), which is how a
// vanished client is noticed.
constexpr auto kHeartbeat = 1000ms;

// The log line of the request this HTTP thread is answering. cpp-httplib runs the pre-routing
// handler, the route, its content provider and the logger of one request on one thread, one
// after the other, and the logger sees nothing but the Request and Response.
struct RequestLog {
  Clock::time_point start = Clock::now();
  int64_t tokens = -1;  // generated tokens, for routes that generate
};
thread_local RequestLog t_log;

const char* kChatPath = "/v1/chat/completions";
const char* kCompletionsPath = "/v1/completions";

// A route label for metrics: the route's pattern, so unknown paths cannot add labels.
std::string endpoint_of(const std::string& path) {
  for (const char* p : {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/",
                        "/app.js", "/style.css"})
    if (path == p) return p;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

ApiError api_error(int status, std::string message, std::string type, std::string code, std::string param = "") {
  ApiError e;
  e.http_status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.code = std::move(code);
  e.param = std::move(param);
  return e;
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  res.set_content(error_json(e), "application/json");
}

void send_json(httplib::Response& res, const OrderedJson& j) { res.set_content(dump_json(j), "application/json"); }

ApiError submit_error(const SubmitResult& s, const char* prompt_param) {
  switch (s.error) {
    case SubmitError::kQueueFull: return api_error(429, s.message, "rate_limit_error", "rate_limit_exceeded");
    case SubmitError::kPromptTooLong:
      return api_error(400, s.message, "invalid_request_error", "context_length_exceeded", prompt_param);
    case SubmitError::kShuttingDown: return api_error(503, s.message, "server_error", "server_shutting_down");
    case SubmitError::kInvalid:
    case SubmitError::kNone: break;
  }
  return api_error(400, s.message, "invalid_request_error", "", prompt_param);
}

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

uint64_t random_seed() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

// The engine requests of one HTTP request. Whoever drops the last reference (the handler, or
// cpp-httplib releasing a content provider when the client left) cancels what still runs.
class Job {
 public:
  explicit Job(std::atomic<int>* live) : live_(live) { live_->fetch_add(1); }
  ~Job() {
    for (auto& s : streams_) s->cancel();
    live_->fetch_sub(1);
  }
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  // Submits every request; on the first refusal cancels the others and returns its error.
  std::optional<ApiError> submit(Engine& engine, std::vector<GenerationRequest> requests, const char* prompt_param) {
    for (auto& r : requests) {
      SubmitResult s = engine.submit(std::move(r));
      if (s.error != SubmitError::kNone) return submit_error(s, prompt_param);
      streams_.push_back(std::move(s.stream));
      finished_.push_back(false);
    }
    return std::nullopt;
  }

  // Takes the pending events of every stream (waiting up to `wait` when there are none) and
  // hands them to on_event(choice, event). Returns true once every stream has finished.
  bool pump(std::chrono::milliseconds wait, const std::function<void(size_t, EngineEvent&)>& on_event) {
    bool any = false;
    for (int pass = 0; pass < 2 && !any; ++pass) {
      for (size_t i = 0; i < streams_.size(); ++i) {
        if (finished_[i]) continue;
        std::vector<EngineEvent> events;
        // First pass: only what is ready; second: wait on the first unfinished stream.
        streams_[i]->take(&events, pass == 0 ? 0ms : wait);
        for (auto& e : events) {
          if (std::holds_alternative<FinishEvent>(e)) finished_[i] = true;
          on_event(i, e);
          any = true;
        }
        if (pass == 1) break;
      }
      if (done()) return true;
    }
    return done();
  }

  bool done() const {
    for (bool f : finished_)
      if (!f) return false;
    return true;
  }
  void cancel() {
    for (auto& s : streams_) s->cancel();
  }

 private:
  std::atomic<int>* live_;
  std::vector<std::shared_ptr<RequestStream>> streams_;
  std::vector<bool> finished_;
};

// Guided decoding for tool_choice "required"/named and response_format: the one place the
// HTTP layer calls guided.h. nullptr: unconstrained.
Expected<std::shared_ptr<TokenConstraint>> make_constraint(const ServeBackend& b, const ChatCompletionRequest& r) {
  const bool forced_tool = r.tool_choice == ToolChoice::kRequired || r.tool_choice == ToolChoice::kFunction;
  const bool json = r.response_format != ResponseFormat::kText;
  if (!forced_tool && !json) return std::shared_ptr<TokenConstraint>();
#if DSEEK_HAVE_GUIDED
  if (forced_tool) return make_tool_call_constraint(b.format, *b.tokenizer, r.chat.tools, r.tool_name);
  return make_json_constraint(*b.tokenizer, r.response_format == ResponseFormat::kJsonSchema ? &r.json_schema : nullptr);
#else
  (void)b;
  return Status::error("not supported by this build (no guided decoding)");
#endif
}

// The answer of one chat request: the choices being built and, for a stream, the SSE text.
struct ChatAnswer {
  std::shared_ptr<Job> job;
  ResponseHeader header;
  std::vector<ChatChoiceBuilder> choices;
  bool stream = false, include_usage = false;
  Usage usage;
  Status error;

  // Feeds events; appends SSE events to *sse when streaming.
  bool pump(std::chrono::milliseconds wait, std::string* sse) {
    return job->pump(wait, [&](size_t i, EngineEvent& e) {
      if (auto* t = std::get_if<TokenEvent>(&e)) {
        if (!stream) return choices[i].add_token(*t);
        if (OrderedJson c = choices[i].token_chunk(*t); !c.is_null()) *sse += sse_event(c);
        return;
      }
      const FinishEvent& f = std::get<FinishEvent>(e);
      usage.add(f, /*count_prompt=*/i == 0);
      if (!f.error.ok() && error.ok()) error = f.error;
      if (!stream) return choices[i].finish(f);
      for (const OrderedJson& c : choices[i].finish_chunks(f)) *sse += sse_event(c);
    });
  }

  int64_t completion_tokens() const { return usage.completion_tokens; }

  OrderedJson whole() const {
    OrderedJson list = OrderedJson::array();
    for (const auto& c : choices) list.push_back(c.choice_json());
    return OrderedJson{{"id", header.id},           {"object", "chat.completion"}, {"created", header.created},
                       {"model", header.model},     {"choices", std::move(list)},   {"usage", usage_json(usage)}};
  }
};

struct CompletionAnswer {
  std::shared_ptr<Job> job;
  ResponseHeader header;
  std::vector<CompletionChoiceBuilder> choices;
  int n = 1;  // choices per prompt (usage counts each prompt once)
  bool stream = false, include_usage = false;
  Usage usage;
  Status error;

  bool pump(std::chrono::milliseconds wait, std::string* sse) {
    return job->pump(wait, [&](size_t i, EngineEvent& e) {
      if (auto* t = std::get_if<TokenEvent>(&e)) {
        if (!stream) return choices[i].add_token(*t);
        if (OrderedJson c = choices[i].token_chunk(*t); !c.is_null()) *sse += sse_event(c);
        return;
      }
      const FinishEvent& f = std::get<FinishEvent>(e);
      usage.add(f, /*count_prompt=*/i % n == 0);
      if (!f.error.ok() && error.ok()) error = f.error;
      if (!stream) return choices[i].finish(f);
      *sse += sse_event(choices[i].finish_chunk(f));
    });
  }

  int64_t completion_tokens() const { return usage.completion_tokens; }

  OrderedJson whole() const {
    OrderedJson list = OrderedJson::array();
    for (const auto& c : choices) list.push_back(c.choice_json());
    return OrderedJson{{"id", header.id},       {"object", "text_completion"}, {"created", header.created},
                       {"model", header.model}, {"choices", std::move(list)},   {"usage", usage_json(usage)}};
  }
};

ApiError internal_error(const Status& s) { return api_error(500, s.message(), "server_error", "internal_error"); }

// Sends an answer whole (non-streaming). An answer ready within a heartbeat gets a plain
// response; a slower one is sent chunked, with a space per heartbeat until it is ready.
template <typename Answer>
void send_whole(httplib::Response& res, std::shared_ptr<Answer> a) {
  std::string unused;
  const Clock::time_point deadline = Clock::now() + kHeartbeat;
  bool done = false;
  while (!done && Clock::now() < deadline)
    done = a->pump(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()), &unused);
  if (done) {
    t_log.tokens = a->completion_tokens();
    if (!a->error.ok()) return send_error(res, internal_error(a->error));
    return send_json(res, a->whole());
  }
  res.set_chunked_content_provider("application/json", [a](size_t, httplib::DataSink& sink) {
    std::string unused_sse;
    if (!a->pump(kHeartbeat, &unused_sse)) {
      if (!sink.write(" ", 1)) {
        a->job->cancel();
        return false;
      }
      return true;
    }
    t_log.tokens = a->completion_tokens();
    // The status line has gone out as 200: an internal error can only be the body.
    const std::string body = a->error.ok() ? dump_json(a->whole()) : error_json(internal_error(a->error));
    if (!sink.write(body.data(), body.size())) return false;
    sink.done();
    return true;
  });
}

// Streams an answer as server-sent events; `first` is sent before any token (the role chunks).
template <typename Answer>
void send_stream(httplib::Response& res, std::shared_ptr<Answer> a, const char* object, std::string first) {
  res.set_header("Cache-Control", "no-cache");
  auto pending = std::make_shared<std::string>(std::move(first));
  res.set_chunked_content_provider("text/event-stream", [a, object, pending](size_t, httplib::DataSink& sink) {
    std::string out = std::move(*pending);
    pending->clear();
    const bool done = a->pump(kHeartbeat, &out);
    if (done) {
      t_log.tokens = a->completion_tokens();
      if (!a->error.ok()) out += "data: " + error_json(internal_error(a->error)) + "\n\n";
      if (a->include_usage) out += sse_event(usage_chunk_json(a->header, object, a->usage));
      out += kSseDone;
    }
    if (out.empty()) out = ": keep-alive\n\n";  // an SSE comment: clients ignore it
    if (!sink.write(out.data(), out.size())) {
      a->job->cancel();
      return false;
    }
    if (done) sink.done();
    return true;
  });
}

}  // namespace

struct HttpServer::Impl {
  HttpOptions opt;
  Metrics* metrics;
  httplib::Server svr;
  std::atomic<const ServeBackend*> backend{nullptr};
  std::atomic<bool> stopping{false};
  std::atomic<int> live_jobs{0};
  int64_t created = unix_now();

  Impl(HttpOptions o, Metrics* m) : opt(std::move(o)), metrics(m) {}

  // The backend, or nullptr after answering 503 (loading or stopping).
  const ServeBackend* ready(httplib::Response& res) {
    const ServeBackend* b = backend.load();
    if (stopping.load()) {
      send_error(res, api_error(503, "the server is shutting down", "server_error", "server_shutting_down"));
      return nullptr;
    }
    if (!b) {
      send_error(res, api_error(503, "the model is still loading", "server_error", "model_loading"));
      return nullptr;
    }
    return b;
  }

  std::optional<ApiError> check_model(const std::string& model) const {
    if (model.empty() || model == opt.model_id) return std::nullopt;
    return api_error(400, fmt::format("model: '{}' is not served here (this server serves '{}')", model, opt.model_id),
                     "invalid_request_error", "model_not_found", "model");
  }

  GenerationRequest base_request(const ServeBackend& b, const SamplingOverrides& s, int choice, uint64_t seed,
                                 int64_t max_tokens, const std::vector<std::string>& stop) const {
    GenerationRequest g;
    g.sampling = s.apply(b.defaults, choice, seed);
    g.max_tokens = max_tokens;
    g.stop = stop;
    g.eos_ids = b.eos_ids;
    return g;
  }

  void chat(const httplib::Request& req, httplib::Response& res) {
    const ServeBackend* b = ready(res);
    if (!b) return;
    ChatCompletionRequest r;
    if (auto e = parse_chat_completion_request(req.body, &r)) return send_error(res, *e);
    if (auto e = check_model(r.model)) return send_error(res, *e);

    tokenizer::ChatRequest chat = r.chat;
    chat.thinking = b->format == tokenizer::ChatFormat::kR1 || r.thinking.value_or(false);
    const bool in_reasoning = chat.thinking && b->format != tokenizer::ChatFormat::kV3;
    if (r.tool_choice == ToolChoice::kNone) chat.tools = nullptr;  // a tool it cannot see, it cannot call
    auto text = tokenizer::render_chat(b->format, chat);
    if (!text.ok()) return send_error(res, invalid_param("messages", text.status().message()));
    auto ids = b->tokenizer->encode(text.value(), /*add_bos=*/false);  // the format writes BOS itself
    if (!ids.ok()) return send_error(res, invalid_param("messages", ids.status().message()));
    if (static_cast<int64_t>(ids->size()) >= b->max_context)
      return send_error(res, api_error(400,
                                       fmt::format("messages: the prompt has {} tokens but the context holds {} "
                                                   "(including at least one generated token)",
                                                   ids->size(), b->max_context),
                                       "invalid_request_error", "context_length_exceeded", "messages"));

    std::vector<GenerationRequest> gens;
    const uint64_t seed = random_seed();
    for (int i = 0; i < r.n; ++i) {
      GenerationRequest g = base_request(*b, r.sampling, i, seed, r.max_tokens, r.stop);
      g.prompt = ids.value();
      g.top_logprobs = r.logprobs ? r.top_logprobs : -1;
      auto constraint = make_constraint(*b, r);
      if (!constraint.ok())
        return send_error(res, invalid_param(r.response_format != ResponseFormat::kText ? "response_format" : "tool_choice",
                                             constraint.status().message()));
      g.constraint = std::move(constraint).value();
      gens.push_back(std::move(g));
    }

    auto a = std::make_shared<ChatAnswer>();
    a->job = std::make_shared<Job>(&live_jobs);
    if (auto e = a->job->submit(*b->engine, std::move(gens), "messages")) return send_error(res, *e);
    a->header = {random_id("chatcmpl-"), unix_now(), opt.model_id};
    a->stream = r.stream;
    a->include_usage = r.include_usage;
    for (int i = 0; i < r.n; ++i)
      a->choices.emplace_back(&a->header, i, b->format, in_reasoning, r.logprobs ? b->tokenizer : nullptr);
    if (!r.stream) return send_whole(res, a);
    std::string first;
    for (const auto& c : a->choices) first += sse_event(c.role_chunk());
    send_stream(res, a, "chat.completion.chunk", std::move(first));
  }

  void completions(const httplib::Request& req, httplib::Response& res) {
    const ServeBackend* b = ready(res);
    if (!b) return;
    CompletionRequest r;
    if (auto e = parse_completion_request(req.body, &r)) return send_error(res, *e);
    if (auto e = check_model(r.model)) return send_error(res, *e);

    const tokenizer::Tokenizer& tok = *b->tokenizer;
    auto a = std::make_shared<CompletionAnswer>();
    a->header = {random_id("cmpl-"), unix_now(), opt.model_id};
    a->n = r.n;
    a->stream = r.stream;
    a->include_usage = r.include_usage;
    std::vector<GenerationRequest> gens;
    const uint64_t seed = random_seed();
    for (size_t p = 0; p < r.prompts.size(); ++p) {
      const CompletionPrompt& prompt = r.prompts[p];
      const std::string param = r.prompts.size() > 1 ? fmt::format("prompt[{}]", p) : "prompt";
      std::vector<int32_t> ids = prompt.ids;
      std::string text = prompt.text;
      if (prompt.is_ids) {
        auto decoded = tok.decode(ids);
        if (!decoded.ok()) return send_error(res, invalid_param(param, decoded.status().message()));
        text = decoded.value();
      } else {
        auto enc = tok.encode(prompt.text, /*add_bos=*/tok.bos_id() >= 0);
        if (!enc.ok()) return send_error(res, invalid_param(param, enc.status().message()));
        ids = std::move(enc).value();
      }
      if (static_cast<int64_t>(ids.size()) >= b->max_context)
        return send_error(res, api_error(400,
                                         fmt::format("{}: the prompt has {} tokens but the context holds {} "
                                                     "(including at least one generated token)",
                                                     param, ids.size(), b->max_context),
                                         "invalid_request_error", "context_length_exceeded", param));
      for (int i = 0; i < r.n; ++i) {
        GenerationRequest g = base_request(*b, r.sampling, i, seed, r.max_tokens, r.stop);
        g.prompt = ids;
        g.top_logprobs = r.logprobs;
        gens.push_back(std::move(g));
        // The BOS added above is not part of the prompt's text, so not of what is echoed.
        const bool added_bos = !prompt.is_ids && !ids.empty() && ids[0] == tok.bos_id();
        a->choices.emplace_back(&a->header, static_cast<int>(p) * r.n + i, &tok, r.logprobs, r.echo, text,
                                std::vector<int32_t>(ids.begin() + (added_bos ? 1 : 0), ids.end()));
      }
    }
    a->job = std::make_shared<Job>(&live_jobs);
    if (auto e = a->job->submit(*b->engine, std::move(gens), "prompt")) return send_error(res, *e);
    if (!r.stream) return send_whole(res, a);
    send_stream(res, a, "text_completion", "");
  }

  void routes() {
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      send_json(res, model_list_json(opt.model_id, created));
    });
    svr.Get("/v1/models/(.+)", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      if (id != opt.model_id)
        return send_error(res, api_error(404, fmt::format("model '{}' does not exist", id), "invalid_request_error",
                                         "model_not_found", "model"));
      send_json(res, model_json(opt.model_id, created));
    });
    svr.Post(kChatPath, [this](const httplib::Request& req, httplib::Response& res) { chat(req, res); });
    svr.Post(kCompletionsPath, [this](const httplib::Request& req, httplib::Response& res) { completions(req, res); });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const char* state = stopping.load() ? "stopping" : backend.load() ? "ok" : "loading";
      res.status = std::string(state) == "ok" ? 200 : 503;
      send_json(res, OrderedJson{{"status", state}});
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      if (const ServeBackend* b = backend.load(); b && b->engine) {
        const Engine::Stats s = b->engine->stats();
        metrics->set_gauges(s.queued, s.running, s.kv_pages_used, s.kv_pages_cached, s.kv_pages_total);
      }
      res.set_content(metrics->prometheus_text(), "text/plain; version=0.0.4");
    });
    auto asset = [this](const char* path, std::string_view body, const char* type) {
      svr.Get(path, [body, type](const httplib::Request&, httplib::Response& res) {
        res.set_content(body.data(), body.size(), type);
      });
    };
    asset("/", web::kIndexHtml, "text/html; charset=utf-8");
    asset("/app.js", web::kAppJs, "text/javascript; charset=utf-8");
    asset("/style.css", web::kStyleCss, "text/css; charset=utf-8");
  }

  void hooks() {
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      t_log = RequestLog{};
      if (opt.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
      if (req.get_header_value("Authorization") == "Bearer " + opt.api_key)
        return httplib::Server::HandlerResponse::Unhandled;
      send_error(res, api_error(401, "invalid or missing API key (send the header 'Authorization: Bearer KEY')",
                                "invalid_request_error", "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    });
    // Statuses cpp-httplib sets by itself (no route, body too large, bad request line) get
    // OpenAI's error object too.
    svr.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req,
                                                                      httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      if (res.status == 404 && endpoint_of(req.path) != "other") {
        const bool post = endpoint_of(req.path) == kChatPath || endpoint_of(req.path) == kCompletionsPath;
        res.status = 405;
        res.set_header("Allow", post ? "POST" : "GET, HEAD");
        send_error(res, api_error(405, fmt::format("method {} is not allowed on {}", req.method, req.path),
                                  "invalid_request_error", "method_not_allowed"));
      } else if (res.status == 404) {
        send_error(res, api_error(404, fmt::format("no route {} {}", req.method, req.path), "invalid_request_error",
                                  "not_found"));
      } else if (res.status == 413) {
        send_error(res, api_error(413, fmt::format("the request body is larger than {} bytes", opt.max_body),
                                  "invalid_request_error", "request_too_large"));
      } else {
        send_error(res, api_error(res.status, fmt::format("HTTP {}", res.status),
                                  res.status >= 500 ? "server_error" : "invalid_request_error", ""));
      }
      return httplib::Server::HandlerResponse::Handled;
    }));
    svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(res, api_error(500, what, "server_error", "internal_error"));
    });
    svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      metrics->count_request(endpoint_of(req.path), res.status);
      if (!opt.quiet) {
        const double s = std::chrono::duration<double>(Clock::now() - t_log.start).count();
        const std::string tokens = t_log.tokens >= 0 ? fmt::format(" {} tokens", t_log.tokens) : "";
        std::fprintf(stderr, "%s %s %d%s %.3f s\n", req.method.c_str(), req.path.c_str(), res.status, tokens.c_str(), s);
      }
      t_log = RequestLog{};
    });
  }
};

HttpServer::HttpServer(HttpOptions options, Metrics* metrics) : impl_(std::make_unique<Impl>(std::move(options), metrics)) {
  Impl& m = *impl_;
  const size_t threads = static_cast<size_t>(std::max(m.opt.threads, 4));
  m.svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  m.svr.set_payload_max_length(m.opt.max_body);
  // Idle keep-alive connections are closed after this long; it bounds how long stop() waits.
  m.svr.set_keep_alive_timeout(2);
  m.hooks();
  m.routes();
}

HttpServer::~HttpServer() = default;

Expected<int> HttpServer::bind() {
  Impl& m = *impl_;
  int port = m.opt.port;
  bool ok = false;
  if (port == 0) {
    port = m.svr.bind_to_any_port(m.opt.host);
    ok = port > 0;
  } else {
    ok = m.svr.bind_to_port(m.opt.host, port);
  }
  if (!ok) return Status::errorf("cannot listen on {}:{} (address in use, or not an address of this machine)", m.opt.host,
                                 m.opt.port);
  return port;
}

void HttpServer::run() { impl_->svr.listen_after_bind(); }

void HttpServer::set_backend(const ServeBackend* backend) { impl_->backend.store(backend); }

void HttpServer::begin_shutdown() { impl_->stopping.store(true); }

void HttpServer::stop() {
  // Answers the engine just ended (shutdown cancels them) get a moment to reach their clients.
  const Clock::time_point deadline = Clock::now() + 2s;
  while (impl_->live_jobs.load() > 0 && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
  impl_->svr.stop();
}

}  // namespace dseek::serve
