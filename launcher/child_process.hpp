#pragma once

// A child process for tools and tests that run nodes (benchmarks, integration tests):
// started with fork/exec, its output in a log file, killed with its parent, and always
// killed and reaped on destruction.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace baton::launcher {

/// Forks and execs `path` with `argv` (argv[0] included), its standard output and error
/// on `output`, killed when the calling thread ends (PR_SET_PDEATHSIG fires when the
/// parent *thread* exits: start children from a thread that outlives them). The pid, or -1 when
/// fork fails. The caller reaps it.
[[nodiscard]] pid_t spawn(const std::string& path, const std::vector<std::string>& argv,
                          int output);

/// A child process; killed (SIGKILL) and reaped on destruction if still running.
class child_process {
 public:
  child_process(const std::vector<std::string>& argv, const std::filesystem::path& log);
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  void signal(int sig) const;
  /// The exit status (as waitpid reports it), or nullopt if still running after `timeout`.
  /// Once it has exited, every call returns the same status at once.
  [[nodiscard]] std::optional<int> wait(std::chrono::milliseconds timeout);
  /// The first line of the log that starts with `prefix`, waiting up to `timeout` for the
  /// child to write it; nullopt if the child exits or the time passes first.
  [[nodiscard]] std::optional<std::string> wait_for_line(std::string_view prefix,
                                                         std::chrono::milliseconds timeout);
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string log() const;

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;  ///< set once reaped
  std::filesystem::path log_;
};

}  // namespace baton::launcher
