// dseek chat as a person uses it: in a pseudo-terminal, typing two turns and commands,
// reading the screen, stopping an answer with Ctrl-C, leaving with Ctrl-D.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "e2e_util.h"
#include "scratch_dir.h"

namespace dseek::testing {
namespace {

namespace fs = std::filesystem;

class Terminal {
 public:
  explicit Terminal(const std::vector<std::string>& args) {
    struct winsize ws {};
    ws.ws_row = 40;
    ws.ws_col = 120;
    pid_ = forkpty(&fd_, nullptr, nullptr, &ws);
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      setenv("TERM", "xterm", 1);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~Terminal() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) close(fd_);
  }

  void type(const std::string& keys) { ASSERT_EQ(write(fd_, keys.data(), keys.size()), (ssize_t)keys.size()); }

  // Reads the screen until `needle` appears after position `from` (or the timeout passes).
  bool wait_for(const std::string& needle, size_t from, double seconds = 60) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (screen_.find(needle, from) == std::string::npos) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      struct pollfd p {fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      const ssize_t n = read(fd_, buf, sizeof buf);
      if (n <= 0) return screen_.find(needle, from) != std::string::npos;
      screen_.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  // Waits for `text` after `from`, then for the prompt that follows it: as a person would, we
  // type only at a prompt (libedit flushes keys typed ahead while it sets up the terminal).
  bool wait_then_prompt(const std::string& text, size_t from, double seconds = 60) {
    if (!wait_for(text, from, seconds)) return false;
    if (!wait_for("> ", screen_.find(text, from) + text.size(), seconds)) return false;
    // libedit prints the prompt just before it switches the terminal to raw mode; keys that
    // arrive in between are handled by the cooked terminal (a Ctrl-D there is lost). A person
    // is never that fast: let the prompt settle.
    usleep(200 * 1000);
    return true;
  }
  const std::string& screen() const { return screen_; }
  std::string state() const {  // for failure messages: what the child is doing
    return slurp("/proc/" + std::to_string(pid_) + "/wchan") + " " +
           slurp("/proc/" + std::to_string(pid_) + "/stat").substr(0, 60);
  }
  size_t size() const { return screen_.size(); }

  int wait_exit(double seconds = 30) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      char buf[4096];
      struct pollfd p {fd_, POLLIN, 0};
      if (poll(&p, 1, 50) > 0) {
        const ssize_t n = read(fd_, buf, sizeof buf);
        if (n > 0) screen_.append(buf, static_cast<size_t>(n));
      }
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
    }
    return -2;
  }

 private:
  int fd_ = -1;
  pid_t pid_ = -1;
  bool exited_ = false;
  std::string screen_;
};

TEST(ChatInTerminal, TwoTurnsCommandsCtrlCAndCtrlD) {
  const std::string model = tiny_chat_model();
  ASSERT_TRUE(fs::exists(model + "/config.json")) << model;
  const ScratchDir scratch("chat-pty");
  const fs::path saved = scratch.path() / "chat.json";
  Terminal term({DSEEK_BINARY, "chat", "-m", model, "-n", "12", "--temp", "0.7", "--seed", "1", "-t", "1"});

  ASSERT_TRUE(term.wait_then_prompt("/help for commands", 0)) << term.screen();

  size_t mark = term.size();
  term.type("Hello! Who are you?\r");
  ASSERT_TRUE(term.wait_for("Hello! Who are you?", mark)) << "typed text is echoed:\n" << term.screen();
  ASSERT_TRUE(term.wait_for("\n> ", mark + 20)) << "an answer, then a new prompt:\n" << term.screen();

  mark = term.size();
  term.type("/system You are terse.\r");
  ASSERT_TRUE(term.wait_then_prompt("[system prompt set]", mark)) << term.screen();

  mark = term.size();
  term.type("And a second question?\r");
  ASSERT_TRUE(term.wait_for("\n> ", mark + 25)) << term.screen();

  mark = term.size();
  term.type("/save " + saved.string() + "\r");
  ASSERT_TRUE(term.wait_then_prompt("[saved 5 messages", mark)) << term.screen();  // system + 2 x (user, assistant)
  const auto j = nlohmann::json::parse(slurp(saved));
  ASSERT_EQ(j.size(), 5u);
  EXPECT_EQ(j[0]["role"], "system");
  EXPECT_EQ(j[1]["content"], "Hello! Who are you?");
  EXPECT_EQ(j[2]["role"], "assistant");
  EXPECT_EQ(j[3]["content"], "And a second question?");

  mark = term.size();
  term.type("/bogus\r");
  ASSERT_TRUE(term.wait_then_prompt("unknown command /bogus", mark)) << term.screen();

  mark = term.size();
  term.type("/reset\r");
  ASSERT_TRUE(term.wait_then_prompt("[conversation cleared]", mark)) << term.screen();

  // Ctrl-D leaves. libedit prints its prompt a moment before it puts the terminal in raw mode,
  // which discards keys already typed; like a person, press again if nothing happened.
  int exit_code = -2;
  for (int attempt = 0; attempt < 5 && exit_code == -2; ++attempt) {
    term.type("\x04");
    exit_code = term.wait_exit(2);
  }
  EXPECT_EQ(exit_code, 0) << term.screen() << "\nprocess state: " << term.state();
}

TEST(ChatInTerminal, CtrlCStopsTheAnswerButNotTheChat) {
  const std::string model = tiny_chat_model();
  ASSERT_TRUE(fs::exists(model + "/config.json")) << model;
  // No token limit and EOS ignored: the answer runs until stopped.
  Terminal term({DSEEK_BINARY, "chat", "-m", model, "-n", "-1", "--ignore-eos", "-c", "4000", "-t", "1"});
  ASSERT_TRUE(term.wait_then_prompt("/help for commands", 0)) << term.screen();
  size_t mark = term.size();
  term.type("Talk forever.\r");
  ASSERT_TRUE(term.wait_for("Talk forever.", mark)) << term.screen();
  mark = term.size();
  ASSERT_TRUE(term.wait_for(" ", mark + 40, 30)) << "some answer text streams in:\n" << term.screen();
  term.type("\x03");  // Ctrl-C
  ASSERT_TRUE(term.wait_then_prompt("[stopped]", mark, 30)) << term.screen();
  mark = term.size();
  term.type("/exit\r");
  EXPECT_EQ(term.wait_exit(), 0) << term.screen();
}

}  // namespace
}  // namespace dseek::testing
