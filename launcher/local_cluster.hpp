#pragma once

// A local cluster for benchmarks: `baton node` processes of this binary on 127.0.0.1 with
// free ports, a router (`router-0`, with a native port) and the workers asked for, in a
// temporary folder with its topology and one log per node. Processes are killed and the
// folder removed on destruction (BATON_KEEP=1 keeps the folder).

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "launcher/child_process.hpp"

namespace baton::launcher {

struct cluster_worker {
  std::string name;  ///< "prefill-0", "decode-0", ...
  std::string kind;  ///< "trainium", "wafer-scale", "cpu"
  std::string role;  ///< "prefill" or "decode"
  std::string device = "cpu";
  std::size_t kv_blocks = 0;  ///< 0: the node's default
};

struct local_cluster_options {
  std::string name;  ///< names the folder: baton-bench-NAME-<random>
  std::filesystem::path checkpoint;
  std::filesystem::path tokenizer;
  std::vector<cluster_worker> workers;
  /// TOML tables added to the topology as they are, e.g. "[emulated]\ntime_scale = 0\n".
  std::string extra_toml;
};

class local_cluster {
 public:
  /// Writes the topology; starts nothing.
  explicit local_cluster(const local_cluster_options& options);
  ~local_cluster();
  local_cluster(const local_cluster&) = delete;
  local_cluster& operator=(const local_cluster&) = delete;

  /// Starts node `name` (`baton node --config ... --name NAME EXTRA...`).
  void start(const std::string& name, std::vector<std::string> extra = {});
  /// Starts the router and every worker.
  void start_all();
  /// Asks `name` to leave and waits for it to exit.
  void stop(const std::string& name);

  /// A metric's value on node `name` (its admin port), or -1.
  [[nodiscard]] double metric(const std::string& name, const std::string& series) const;
  /// Waits until the router places on every prefill and decode worker of the topology;
  /// fails at once, with its log, when a node exits meanwhile.
  [[nodiscard]] expected<void> ready(std::chrono::seconds timeout);

  /// The router's native port, "127.0.0.1:PORT".
  [[nodiscard]] const std::string& native() const { return native_; }
  /// What node `name` has logged so far.
  [[nodiscard]] std::string log(const std::string& name) const;

 private:
  local_cluster_options options_;
  std::filesystem::path dir_;
  std::map<std::string, std::string> admin_;
  std::string native_;
  std::map<std::string, std::unique_ptr<child_process>> procs_;
};

}  // namespace baton::launcher
