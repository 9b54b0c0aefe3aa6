#include "launcher/child_process.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

namespace baton::launcher {

pid_t spawn(const std::string& path, const std::vector<std::string>& argv, int output) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the parent
    if (getppid() != parent) _exit(1);
    if (output >= 0) {
      dup2(output, STDOUT_FILENO);  // dup2's copies are not close-on-exec
      dup2(output, STDERR_FILENO);
    }
    execv(path.c_str(), args.data());
    _exit(127);
  }
  return pid;
}

child_process::child_process(const std::vector<std::string>& argv, const std::filesystem::path& log)
    : log_(log) {
  // Truncated here, before the child exists: a reader never sees a previous run's lines.
  const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  pid_ = spawn(argv.at(0), argv, out);
  if (out >= 0) ::close(out);
}

child_process::~child_process() {
  if (pid_ > 0 && !status_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

void child_process::signal(int sig) const {
  if (pid_ > 0 && !status_) kill(pid_, sig);
}

std::optional<int> child_process::wait(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!status_ && pid_ > 0) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      status_ = status;
      break;
    }
    if (std::chrono::steady_clock::now() > until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status_;
}

std::optional<std::string> child_process::wait_for_line(std::string_view prefix,
                                                        std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const bool exited = wait(std::chrono::milliseconds(0)).has_value();  // then the log is whole
    std::istringstream text(log());
    for (std::string line; std::getline(text, line);) {
      if (line.starts_with(prefix)) return line;
    }
    if (exited || std::chrono::steady_clock::now() > until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::string child_process::log() const {
  std::ifstream in(log_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace baton::launcher
