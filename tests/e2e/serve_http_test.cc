// `dseek serve` as a client sees it: the tiny chat model behind a real socket, driven with
// cpp-httplib's client. Shapes, SSE framing, error statuses, authentication, body limit,
// cancellation on disconnect, and a clean exit on SIGTERM. (The OpenAI SDK's view is tested
// by the Node.js tests in tests/e2e/server/.)
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "e2e_util.h"
#include "scratch_dir.h"

namespace dseek::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct ServerProcess {
  pid_t pid = -1;
  int port = 0;
  std::string err_path;
};

// Starts `dseek serve ARGS --port 0` and waits until /health says ok.
ServerProcess start_server(std::vector<std::string> args) {
  ServerProcess s;
  static const ScratchDir logs("serve");
  static int counter = 0;
  s.err_path = logs / ("server-" + std::to_string(counter++) + ".err");
  args.insert(args.begin(), {DSEEK_BINARY, "serve", "--port", "0", "-t", "1"});
  s.pid = fork();
  if (s.pid == 0) {
    const int err = open(s.err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(err, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  const std::regex listening(R"(dseek serve: listening on http://127\.0\.0\.1:(\d+)\n)");
  for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < 30s;) {
    std::smatch m;
    const std::string err = slurp(s.err_path);
    if (s.port == 0 && std::regex_search(err, m, listening)) s.port = std::stoi(m[1]);
    if (s.port != 0) {
      httplib::Client c("127.0.0.1", s.port);
      if (auto r = c.Get("/health"); r && r->status == 200) return s;
    }
    std::this_thread::sleep_for(50ms);
  }
  ADD_FAILURE() << "dseek serve did not become ready: " << slurp(s.err_path);
  return s;
}

// Sends SIGTERM; returns the exit code (-1: killed by a signal or still running after 10 s).
int stop_server(ServerProcess& s) {
  if (s.pid <= 0) return -1;
  kill(s.pid, SIGTERM);
  for (int i = 0; i < 200; ++i) {
    int status = 0;
    if (waitpid(s.pid, &status, WNOHANG) == s.pid) {
      s.pid = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(50ms);
  }
  kill(s.pid, SIGKILL);
  waitpid(s.pid, nullptr, 0);
  s.pid = -1;
  return -1;
}

httplib::Client client(const ServerProcess& s) {
  httplib::Client c("127.0.0.1", s.port);
  c.set_read_timeout(20, 0);
  return c;
}

json post_json(httplib::Client& c, const std::string& path, const json& body, int expect_status) {
  auto r = c.Post(path.c_str(), body.dump(), "application/json");
  EXPECT_TRUE(r) << path;
  if (!r) return json();
  EXPECT_EQ(r->status, expect_status) << r->body;
  return json::parse(r->body, nullptr, false);
}

// The "data:" payloads of an SSE body; checks the framing on the way.
std::vector<std::string> sse_payloads(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated event: " << body.substr(pos);
    if (end == std::string::npos) break;
    const std::string event = body.substr(pos, end - pos);
    pos = end + 2;
    if (event.rfind(":", 0) == 0) continue;  // keep-alive comment
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    out.push_back(event.substr(6));
  }
  return out;
}

json chat_body(const std::string& text, int max_tokens) {
  return {{"model", "tiny"},
          {"messages", json::array({{{"role", "user"}, {"content", text}}})},
          {"max_tokens", max_tokens},
          {"temperature", 0}};
}

class ServeHttp : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string model = tiny_chat_model();
    ASSERT_EQ(model.rfind("init failed", 0), std::string::npos) << model;
    server_ = start_server({"-m", model, "--alias", "tiny", "-c", "256", "--quiet"});
  }
  static void TearDownTestSuite() { EXPECT_EQ(stop_server(server_), 0) << slurp(server_.err_path); }
  static ServerProcess server_;
};
ServerProcess ServeHttp::server_;

TEST_F(ServeHttp, ModelsHealthAndMetrics) {
  auto c = client(server_);
  auto r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  const json models = json::parse(r->body);
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  EXPECT_EQ(models["data"][0]["object"], "model");
  EXPECT_TRUE(models["data"][0]["created"].is_number_integer());
  r = c.Get("/v1/models/tiny");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["id"], "tiny");
  r = c.Get("/v1/models/other");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "model_not_found");

  r = c.Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body), json({{"status", "ok"}}));

  r = c.Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain; version=0.0.4");
  EXPECT_NE(r->body.find("# TYPE dseek_requests_total counter"), std::string::npos);
  EXPECT_NE(r->body.find("dseek_requests_total{endpoint=\"/v1/models\",status=\"200\"}"), std::string::npos) << r->body;

  r = c.Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("id=\"messages\""), std::string::npos);
  EXPECT_EQ(c.Get("/app.js")->status, 200);
}

TEST_F(ServeHttp, ChatCompletion) {
  auto c = client(server_);
  const json a = post_json(c, "/v1/chat/completions", chat_body("Hello", 6), 200);
  EXPECT_EQ(a["object"], "chat.completion");
  EXPECT_EQ(a["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(a["model"], "tiny");
  ASSERT_EQ(a["choices"].size(), 1u);
  EXPECT_EQ(a["choices"][0]["index"], 0);
  EXPECT_EQ(a["choices"][0]["message"]["role"], "assistant");
  EXPECT_TRUE(a["choices"][0]["message"]["content"].is_string());
  const std::string reason = a["choices"][0]["finish_reason"];
  EXPECT_TRUE(reason == "stop" || reason == "length") << reason;
  EXPECT_GT(a["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_LE(a["usage"]["completion_tokens"].get<int>(), 6);
  EXPECT_TRUE(a["usage"]["prompt_tokens_details"]["cached_tokens"].is_number_integer());
  // Greedy: the same request gives the same answer.
  const json b = post_json(c, "/v1/chat/completions", chat_body("Hello", 6), 200);
  EXPECT_EQ(a["choices"][0]["message"], b["choices"][0]["message"]);

  json n = chat_body("Hello", 3);
  n["n"] = 2;
  n["temperature"] = 1.0;
  n["seed"] = 5;
  n["logprobs"] = true;
  n["top_logprobs"] = 2;
  const json two = post_json(c, "/v1/chat/completions", n, 200);
  ASSERT_EQ(two["choices"].size(), 2u);
  EXPECT_EQ(two["choices"][1]["index"], 1);
  const json& lp = two["choices"][0]["logprobs"]["content"];
  ASSERT_GE(lp.size(), 1u);
  EXPECT_TRUE(lp[0]["token"].is_string());
  EXPECT_LE(lp[0]["logprob"].get<double>(), 0.0);
  EXPECT_EQ(lp[0]["top_logprobs"].size(), 2u);
}

TEST_F(ServeHttp, ChatStreamMatchesWholeAnswer) {
  auto c = client(server_);
  const json whole = post_json(c, "/v1/chat/completions", chat_body("Hello", 6), 200);
  json body = chat_body("Hello", 6);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto r = c.Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  const auto events = sse_payloads(r->body);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"], whole["usage"]);
  const json first = json::parse(events[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string content;
  std::string finish;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    const json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["id"], first["id"]);
    const json& choice = chunk["choices"][0];
    if (choice["delta"].contains("content")) content += choice["delta"]["content"].get<std::string>();
    if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
  }
  EXPECT_EQ(content, whole["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_EQ(finish, whole["choices"][0]["finish_reason"].get<std::string>());
}

TEST_F(ServeHttp, Completions) {
  auto c = client(server_);
  const json a = post_json(c, "/v1/completions",
                           {{"prompt", json::array({"One", "Two"})}, {"max_tokens", 3}, {"temperature", 0}, {"logprobs", 2}},
                           200);
  EXPECT_EQ(a["object"], "text_completion");
  EXPECT_EQ(a["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  ASSERT_EQ(a["choices"].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const json& ch = a["choices"][i];
    EXPECT_EQ(ch["index"], i);
    EXPECT_EQ(ch["finish_reason"], "length");
    EXPECT_EQ(ch["logprobs"]["tokens"].size(), 3u);
    EXPECT_EQ(ch["logprobs"]["top_logprobs"][0].size(), 2u);
    EXPECT_EQ(ch["logprobs"]["text_offset"].size(), 3u);
  }
  EXPECT_EQ(a["usage"]["completion_tokens"], 6);
  const json echo = post_json(c, "/v1/completions", {{"prompt", "Echo me"}, {"max_tokens", 2}, {"echo", true}}, 200);
  EXPECT_EQ(echo["choices"][0]["text"].get<std::string>().rfind("Echo me", 0), 0u);

  auto r = c.Post("/v1/completions", R"({"prompt": [[1, 2, 3]], "max_tokens": 2, "stream": true})", "application/json");
  ASSERT_TRUE(r);
  const auto events = sse_payloads(r->body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"], "length");
}

TEST_F(ServeHttp, BadRequests) {
  auto c = client(server_);
  auto r = c.Post("/v1/chat/completions", "{\"messages\": [", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "invalid_request_error");

  json body = chat_body("x", 2);
  body["temperature"] = "warm";
  EXPECT_EQ(post_json(c, "/v1/chat/completions", body, 400)["error"]["param"], "temperature");
  body = chat_body("x", 2);
  body["messages"][0]["content"] = 42;
  EXPECT_EQ(post_json(c, "/v1/chat/completions", body, 400)["error"]["param"], "messages[0].content");
  body = chat_body("x", 2);
  body["model"] = "gpt-17";
  const json unknown = post_json(c, "/v1/chat/completions", body, 400);
  EXPECT_EQ(unknown["error"]["code"], "model_not_found");
  EXPECT_EQ(unknown["error"]["param"], "model");
  std::string long_text;
  for (int i = 0; i < 400; ++i) long_text += "word ";
  EXPECT_EQ(post_json(c, "/v1/chat/completions", chat_body(long_text, 2), 400)["error"]["code"],
            "context_length_exceeded");
  EXPECT_EQ(post_json(c, "/v1/completions", {{"prompt", json::array({1, 2, 1 << 30})}}, 400)["error"]["param"], "prompt");

  r = c.Get("/v1/nothing");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_TRUE(json::parse(r->body).contains("error"));
  r = c.Get("/v1/chat/completions");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_TRUE(json::parse(r->body).contains("error"));
  // Still serving after all that.
  post_json(c, "/v1/chat/completions", chat_body("ok?", 1), 200);
}

int cancelled_count(httplib::Client& c) {
  auto r = c.Get("/metrics");
  if (!r) return -1;
  std::smatch m;
  static const std::regex re(R"(dseek_request_finish_total\{reason="cancelled"\} (\d+))");
  return std::regex_search(r->body, m, re) ? std::stoi(m[1]) : -1;
}

bool wait_cancelled(httplib::Client& c, int n) {
  for (int i = 0; i < 100; ++i) {
    if (cancelled_count(c) >= n) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

// A second server: API key, small body limit, a long context for disconnects, then SIGTERM.
TEST(ServeHttpKeyed, AuthBodyLimitDisconnectAndSigterm) {
  const std::string model = tiny_chat_model();
  ServerProcess s = start_server({"-m", model, "--api-key", "sesame", "--max-body", "4096", "-c", "4096"});
  ASSERT_GT(s.port, 0);
  auto c = client(s);
  auto r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "invalid_api_key");
  c.set_bearer_token_auth("wrong");
  EXPECT_EQ(c.Get("/v1/models")->status, 401);
  EXPECT_EQ(c.Get("/health")->status, 200);  // open without a key
  EXPECT_EQ(c.Get("/metrics")->status, 200);
  c.set_bearer_token_auth("sesame");
  r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  // Served under the model directory's name.
  EXPECT_EQ(json::parse(r->body)["data"][0]["id"], std::filesystem::path(model).filename().string());

  r = c.Post("/v1/chat/completions", std::string(10000, ' '), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_TRUE(json::parse(r->body).contains("error"));

  // A streaming client that leaves: its request is cancelled. (Greedy on this prompt, the tiny
  // random model keeps generating for many seconds.)
  json body = {{"prompt", "Go on"}, {"max_tokens", 3000}, {"temperature", 0}, {"stream", true}};
  auto request = [&](const json& b) {
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = b.dump();
    req.set_header("Content-Type", "application/json");
    req.set_header("Authorization", "Bearer sesame");
    return req;
  };
  httplib::Request req = request(body);
  int chunks = 0;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  EXPECT_FALSE(c.send(req, res, error));  // we hung up
  EXPECT_EQ(chunks, 3);
  EXPECT_TRUE(wait_cancelled(c, 1)) << "stream not cancelled";
  // A non-streaming client that gives up while the answer is computed: noticed through the
  // heartbeat spaces written while it waits.
  body["stream"] = false;
  httplib::Request req2 = request(body);
  std::string received;
  req2.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    received.append(data, n);
    return false;
  };
  httplib::Response res2;
  EXPECT_FALSE(c.send(req2, res2, error));
  EXPECT_EQ(res2.status, 200);
  EXPECT_EQ(received, " ");
  EXPECT_TRUE(wait_cancelled(c, 2)) << "non-streaming request not cancelled";

  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(stop_server(s), 0) << slurp(s.err_path);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  const std::string err = slurp(s.err_path);
  EXPECT_NE(err.find("POST /v1/chat/completions 413"), std::string::npos) << err;  // the request log
}

}  // namespace
}  // namespace dseek::testing
