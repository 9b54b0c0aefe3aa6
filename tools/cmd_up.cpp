// `baton up [cluster.toml]`: runs every node of a topology on this machine as child
// processes (`baton node`), prefixes their output with the node name, and on SIGINT or
// SIGTERM asks each to leave, then stops them all; no process is left behind, even if
// `baton up` itself is killed (children die with their parent). Nodes start one after
// another, each once the one before reported its addresses, and join through the nodes
// already listening (so a topology may give port 0 everywhere). A node that ends
// abnormally (a crash, a kill, exit status 1) is started again with exponential backoff
// and a budget per minute, binding the ports it had; one that left (status 0), was
// misconfigured (2) or refused (3) is not. When the topology's model
// is not found, it says so loudly and serves a synthetic model of stories260K's shape.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded

#include <boost/asio.hpp>

#include "engine/model.hpp"
#include "engine/tokenizer.hpp"
#include "launcher/child_process.hpp"
#include "launcher/local_cluster.hpp"
#include "runtime/topology.hpp"
#include "tools/commands.hpp"

namespace baton::tools {
namespace {

namespace asio = boost::asio;
constexpr auto stop_grace = std::chrono::seconds(10);

/// When a node process ends abnormally (a non-zero status other than 2 and 3, or a signal):
/// start it again after `backoff`, doubled for each restart in the last minute up to
/// `max_backoff`, at most `per_minute` times a minute.
struct restart_policy {
  std::chrono::milliseconds backoff{200};
  std::chrono::milliseconds max_backoff{10'000};
  std::size_t per_minute = 5;
};

struct child {
  std::string name;
  pid_t pid = -1;
  std::unique_ptr<asio::posix::stream_descriptor> output;
  asio::streambuf buffer;
  bool listening = false;  ///< it reported its addresses
};

/// What `baton up` keeps about a node across its processes.
struct node_record {
  std::optional<launcher::node_addresses> addresses;  ///< bound again when it restarts
  std::uint32_t restarts = 0;
  std::deque<std::chrono::steady_clock::time_point> recent;  ///< restarts in the last minute
  bool running = false;
};

/// Starts `baton node` for `name`, its stdout and stderr into one pipe.
expected<pid_t> spawn_node(const std::string& config, const std::string& name,
                           const std::vector<std::string>& extra, int& read_fd) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return fail(errc::failed, "pipe failed");
  std::vector<std::string> argv = {"baton", "node", "--config", config, "--name", name};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const pid_t pid = launcher::spawn("/proc/self/exe", argv, fds[1]);
  close(fds[1]);
  if (pid < 0) {
    close(fds[0]);
    return fail(errc::failed, "fork failed");
  }
  read_fd = fds[0];
  return pid;
}

/// `baton node`'s exit codes that mean "do not start it again": it left (drained or
/// stopped by an operator), its configuration is wrong, or the cluster refused it.
bool deliberate(int status) {
  return WIFEXITED(status) &&
         (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 2 || WEXITSTATUS(status) == 3);
}

std::string describe(int status) {
  if (!WIFEXITED(status)) return fmt::format("signal {}", WTERMSIG(status));
  switch (WEXITSTATUS(status)) {
    case 0: return "status 0: it left";
    case 2: return "status 2: configuration error";
    case 3: return "status 3: the cluster refused it";
    default: return fmt::format("status {}", WEXITSTATUS(status));
  }
}

class supervisor {
 public:
  supervisor(asio::io_context& io, std::size_t width, std::string config,
             std::vector<std::string> model_args, restart_policy policy)
      : io_(io),
        signals_(io),
        width_(width),
        config_(std::move(config)),
        model_args_(std::move(model_args)),
        policy_(policy) {}

  /// Starts `names` in order, each once the one before reported its addresses.
  void start(std::vector<std::string> names) {
    waiting_.assign(names.begin(), names.end());
    start_next();
  }

  void watch_signals() {
    signals_.add(SIGINT);
    signals_.add(SIGTERM);
    signals_.add(SIGCHLD);
    on_signal();
  }

  [[nodiscard]] int exit_code() const { return failed_ ? 1 : 0; }

  /// Asks every node to leave (SIGTERM); a second call, or the grace period running out,
  /// kills what is left. Pending restarts are dropped.
  void stop_all(int sig) {
    if (!stopping_) {
      stopping_ = true;
      for (auto& t : restarts_) t->cancel();
      restarts_.clear();
      fmt::print("[{:<{}}] signal {}: stopping {} nodes\n", "up", width_, sig, children_.size());
      for (const auto& [pid, c] : children_) kill(pid, SIGTERM);
      timer_ = std::make_unique<asio::steady_timer>(io_, stop_grace);
      timer_->async_wait([this](auto ec) {
        if (ec) return;
        for (const auto& [pid, c] : children_) kill(pid, SIGKILL);
      });
    } else {
      for (const auto& [pid, c] : children_) kill(pid, SIGKILL);
    }
    finish_if_idle();
  }

 private:
  void start_next() {
    if (waiting_.empty() || stopping_) return;
    const auto name = waiting_.front();
    waiting_.erase(waiting_.begin());
    if (!spawn(name)) {
      failed_ = true;
      stop_all(SIGTERM);
    }
  }

  /// Starts `name`'s process, joining through the nodes listening; a restarted node binds
  /// the addresses it had and says how many times it was restarted.
  bool spawn(const std::string& name) {
    auto& record = nodes_[name];
    auto extra = model_args_;
    for (const auto& [other, r] : nodes_) {
      if (other != name && r.running && r.addresses) {
        extra.insert(extra.end(), {"--join", r.addresses->fabric});
      }
    }
    if (record.addresses) {
      const auto& a = *record.addresses;
      extra.insert(extra.end(), {"--fabric", a.fabric, "--admin", a.admin});
      if (!a.native.empty()) extra.insert(extra.end(), {"--native", a.native});
      if (!a.http.empty()) extra.insert(extra.end(), {"--http", a.http});
      extra.insert(extra.end(), {"--restarts", std::to_string(record.restarts)});
    }
    int fd = -1;
    auto pid = spawn_node(config_, name, extra, fd);
    if (!pid) {
      fmt::print(stderr, "baton up: {}: {}\n", name, pid.error().message);
      return false;
    }
    auto c = std::make_unique<child>();
    c->name = name;
    c->pid = *pid;
    c->output = std::make_unique<asio::posix::stream_descriptor>(io_, fd);
    read(*c);
    children_.emplace(*pid, std::move(c));
    return true;
  }

  void read(child& c) {
    asio::async_read_until(*c.output, c.buffer, '\n', [this, &c](auto ec, std::size_t n) {
      if (ec) return;  // the child closed its output
      std::string line(asio::buffers_begin(c.buffer.data()),
                       asio::buffers_begin(c.buffer.data()) + static_cast<std::ptrdiff_t>(n));
      c.buffer.consume(n);
      fmt::print("[{:<{}}] {}", c.name, width_, line);
      announce_ready(line);
      if (line.starts_with(fmt::format("node {} listening ", c.name))) {
        if (auto a = launcher::parse_listening_line(line.substr(0, line.find('\n')))) {
          c.listening = true;
          auto& record = nodes_[c.name];
          record.addresses = *a;
          record.running = true;
          start_next();
        }
      }
      std::fflush(stdout);
      read(c);
    });
  }

  /// The first router that places on both roles makes the cluster ready: one line, no
  /// prefix, for scripts to wait for.
  void announce_ready(const std::string& line) {
    constexpr std::string_view marker = "router ready native=";
    const auto at = line.find(marker);
    if (ready_ || at == std::string::npos) return;
    ready_ = true;
    const auto begin = at + marker.size();
    const auto address = line.substr(begin, line.find(' ', begin) - begin);
    // The router's HTTP API, when it has one: " http=http://HOST:PORT" (https with TLS)
    // after the address.
    std::string http;
    if (const auto h = line.find(" http=", begin); h != std::string::npos) {
      http = line.substr(h, line.find(' ', h + 1) - h);
    }
    fmt::print("ready: router native={}{}\n", address, http);
  }

  void on_signal() {
    signals_.async_wait([this](auto ec, int sig) {
      if (ec) return;
      if (sig == SIGCHLD) {
        reap();
      } else {
        stop_all(sig);
      }
      if (!finish_if_idle()) on_signal();
    });
  }

  /// Stops the loop once no process runs and none waits to be restarted.
  bool finish_if_idle() {
    if (!children_.empty() || !restarts_.empty() || (!waiting_.empty() && !stopping_)) {
      return false;
    }
    signals_.cancel();
    if (timer_) timer_->cancel();
    io_.stop();
    return true;
  }

  void reap() {
    int status = 0;
    pid_t pid = 0;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      auto it = children_.find(pid);
      if (it == children_.end()) continue;
      const auto name = it->second->name;
      const bool started = it->second->listening;
      children_.erase(it);
      auto& record = nodes_[name];
      record.running = false;
      fmt::print("[{:<{}}] {} exited ({})\n", "up", width_, name, describe(status));
      if (stopping_) {
        // A node stopped while it was still starting has nothing to leave: any end is
        // clean (libraries loaded before main exit(1) on SIGTERM until it installs its
        // handler).
        failed_ = failed_ || !(deliberate(status) || !started);
        continue;
      }
      if (!record.addresses) {  // it never started: the next nodes would wait for ever
        fmt::print("[{:<{}}] a node failed to start: stopping the others\n", "up", width_);
        failed_ = true;
        stop_all(SIGTERM);
        continue;
      }
      if (deliberate(status)) {
        failed_ = failed_ || WEXITSTATUS(status) != 0;
        fmt::print("[{:<{}}] {} is not restarted\n", "up", width_, name);
        continue;
      }
      schedule_restart(name);
    }
  }

  /// Restarts `name` after a backoff that doubles with each restart in the last minute;
  /// gives up when the minute's budget is spent.
  void schedule_restart(const std::string& name) {
    auto& record = nodes_[name];
    const auto now = std::chrono::steady_clock::now();
    while (!record.recent.empty() && now - record.recent.front() > std::chrono::minutes(1)) {
      record.recent.pop_front();
    }
    if (record.recent.size() >= policy_.per_minute) {
      fmt::print(
          "[{:<{}}] {} restarted {} times in the last minute (the budget): not "
          "restarting it\n",
          "up", width_, name, record.recent.size());
      failed_ = true;
      return;
    }
    const auto delay =
        std::min(policy_.max_backoff,
                 policy_.backoff * (1u << std::min<std::size_t>(record.recent.size(), 16)));
    record.recent.push_back(now);
    ++record.restarts;
    fmt::print("[{:<{}}] restarting {} in {} ms (restart {}, {} in the last minute)\n", "up",
               width_, name, delay.count(), record.restarts, record.recent.size());
    auto timer = std::make_shared<asio::steady_timer>(io_, delay);
    restarts_.push_back(timer);
    timer->async_wait([this, name, timer](auto ec) {
      std::erase(restarts_, timer);
      if (ec || stopping_) return;
      if (!spawn(name)) schedule_restart(name);
    });
  }

  asio::io_context& io_;
  asio::signal_set signals_;
  std::size_t width_;
  std::map<pid_t, std::unique_ptr<child>> children_;
  std::map<std::string, node_record> nodes_;
  std::vector<std::shared_ptr<asio::steady_timer>> restarts_;  ///< pending restarts
  std::unique_ptr<asio::steady_timer> timer_;
  bool stopping_ = false;
  bool failed_ = false;
  bool ready_ = false;
  std::string config_;
  std::vector<std::string> model_args_;
  restart_policy policy_;
  std::vector<std::string> waiting_;  ///< nodes not started yet, in order
};

int run_up(const std::string& config, const restart_policy& policy) {
  auto topology = runtime::load_topology(config);
  if (!topology) {
    fmt::print(stderr, "baton up: {}\n", topology.error().message);
    return 2;
  }
  // No real checkpoint: say so loudly and serve a synthetic one, never silently.
  std::vector<std::string> model_args;
  const auto synthetic =
      std::filesystem::temp_directory_path() / fmt::format("baton-up-synthetic-{}", getpid());
  if (const auto missing = topology->model.missing(); !missing.empty()) {
    std::filesystem::create_directories(synthetic);
    const auto checkpoint = (synthetic / "synthetic-stories260K-shape.bin").string();
    const auto tokenizer = (synthetic / "synthetic-tok512.bin").string();
    const engine::model_config shape{64, 172, 5, 8, 4, 512, 512, true};
    if (auto ok = engine::write_synthetic_model(checkpoint, shape, 1); !ok) {
      fmt::print(stderr, "baton up: {}\n", ok.error().message);
      return 2;
    }
    if (auto ok = engine::write_synthetic_tokenizer(tokenizer, shape.vocab_size); !ok) {
      fmt::print(stderr, "baton up: {}\n", ok.error().message);
      return 2;
    }
    fmt::print(stderr,
               "baton up: WARNING: {}\n"
               "baton up: WARNING: serving a SYNTHETIC model instead (random weights, seed 1, "
               "stories260K's shape): its text means nothing. Put the checkpoint in a folder "
               "of BATON_MODEL_PATH, ./models or ../shared/models.\n",
               missing);
    model_args = {"--checkpoint", checkpoint, "--tokenizer", tokenizer};
  }
  asio::io_context io;
  std::size_t width = 2;
  for (const auto& n : topology->nodes) width = std::max(width, n.name.size());
  supervisor sup(io, width, config, model_args, policy);
  sup.watch_signals();
  std::vector<std::string> names;
  for (const auto& n : topology->nodes) names.push_back(n.name);
  sup.start(names);
  io.run();
  std::error_code ignored;
  std::filesystem::remove_all(synthetic, ignored);
  return sup.exit_code();
}

}  // namespace

void add_up_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("up", "Run every node of a topology on this machine");
  static std::string config = "cluster.toml";
  static restart_policy policy;
  cmd->add_option("config", config, "Topology file")->capture_default_str();
  cmd->add_option("--restarts-per-minute", policy.per_minute,
                  "Restarts of one node allowed in a minute before giving up on it (0: never "
                  "restart)")
      ->capture_default_str();
  cmd->callback([&exit_code] { exit_code = run_up(config, policy); });
}

}  // namespace baton::tools
