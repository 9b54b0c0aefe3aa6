#pragma once

// A child process for tools and tests that run nodes (`baton bench disagg`, integration
// tests): started with fork/exec, its output in a log file, killed with its parent, and
// always killed and reaped on destruction.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace baton::launcher {

/// A child process; killed (SIGKILL) and reaped on destruction if still running.
class child_process {
 public:
  child_process(const std::vector<std::string>& argv, const std::filesystem::path& log);
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  void signal(int sig) const;
  /// The exit status (as waitpid reports it), or nullopt if still running after `timeout`.
  [[nodiscard]] std::optional<int> wait(std::chrono::milliseconds timeout);
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string log() const;

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::filesystem::path log_;
};

}  // namespace baton::launcher
