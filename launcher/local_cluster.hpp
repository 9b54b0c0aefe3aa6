#pragma once

// A local cluster of `baton node` processes on 127.0.0.1, for benchmarks and tests: a
// topology in a fresh temporary folder with every port 0, and one child process per node
// with its log there. Each node binds free ports and reports them on its "listening"
// line, which start() waits for; later nodes join through the running ones' fabric
// addresses, and a restarted node binds the ports it had before. Processes are always
// killed and reaped, and the folder removed, on destruction (BATON_KEEP=1 keeps it).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "launcher/child_process.hpp"

namespace baton::launcher {

class netns_lab;

/// One [[node]] table.
struct cluster_node {
  std::string name;
  std::vector<std::string> roles;  ///< "router", "prefill", "decode", "kv"
  std::string kind = "cpu";        ///< "trainium", "wafer-scale", "cpu"
  std::string device = "cpu";
  std::string extra = {};  ///< more TOML lines for the table ("kv_blocks = 64")
};

struct local_cluster_options {
  std::string name;  ///< names the folder: baton-NAME-<random>
  std::filesystem::path checkpoint;
  std::filesystem::path tokenizer;
  std::vector<cluster_node> nodes;  ///< the first is the cluster's seed
  std::string sections = {};        ///< more TOML tables: "[limits]\n...", "[router]\n..."
  std::string provider = "tcp";
  std::filesystem::path binary = "/proc/self/exe";  ///< the `baton` executable
  /// Nodes on separate network stacks: node i runs in host nodes[i].name of this lab, with
  /// address host_address(i) and fixed ports (add_hosts() makes them), and the nodes hold
  /// a fresh cluster secret. The lab must outlive the cluster; the caller reaches the
  /// nodes from a host of its own (netns_lab::enter). Null: 127.0.0.1, ports 0.
  netns_lab* lab = nullptr;
};

/// What a node reported it bound ("host:port"; empty: none).
struct node_addresses {
  std::string fabric;
  std::string admin;
  std::string native;
  std::string http;
};

/// Reads a `baton node` "node NAME listening fabric=... admin=... [native=...] [http=...]"
/// line; nullopt for any other line.
[[nodiscard]] std::optional<node_addresses> parse_listening_line(const std::string& line);

class local_cluster {
 public:
  /// Node i's address with a lab: 10.77.0.(i+1).
  [[nodiscard]] static std::string host_address(std::size_t i);
  /// Adds a host to `lab` for each node, named as it, at host_address(i).
  [[nodiscard]] static expected<void> add_hosts(netns_lab& lab,
                                                const std::vector<cluster_node>& nodes);

  /// Writes the topology; starts nothing.
  explicit local_cluster(local_cluster_options options);
  ~local_cluster();
  local_cluster(const local_cluster&) = delete;
  local_cluster& operator=(const local_cluster&) = delete;

  /// Starts node `name` (`baton node --config ... --name NAME EXTRA...`, joining through
  /// the nodes running unless EXTRA has a --join) and waits for its listening line; fails with its
  /// log when it exits first or does not report within 30 s. `config` replaces the topology file.
  expected<void> start(const std::string& name, std::vector<std::string> extra = {},
                       std::optional<std::filesystem::path> config = std::nullopt);
  /// Starts every node (`extra` arguments by node name) in order.
  expected<void> start_all(const std::map<std::string, std::vector<std::string>>& extra = {});
  /// SIGTERM (the node leaves) and waits up to 10 s for it to exit.
  void stop(const std::string& name);
  /// The process of a started node.
  [[nodiscard]] child_process& process(const std::string& name);

  /// Waits until every running node sees every other alive and each router places on
  /// every running prefill and decode node; fails with the router's log on timeout or
  /// when a node exits meanwhile.
  [[nodiscard]] expected<void> ready(std::chrono::milliseconds timeout);

  /// The addresses `name` reported (its last start); empty strings before it started.
  [[nodiscard]] const node_addresses& addresses(const std::string& name) const;
  [[nodiscard]] std::string fabric(const std::string& name) const;
  [[nodiscard]] std::string admin(const std::string& name) const;
  [[nodiscard]] std::string native(const std::string& name) const;
  [[nodiscard]] std::string http(const std::string& name) const;

  /// `name`'s /status JSON text, or nullopt if it does not answer.
  [[nodiscard]] std::optional<std::string> status(const std::string& name) const;
  /// The state `observer` reports for `node` ("alive", "dead", ...), or "" if unknown.
  [[nodiscard]] std::string state_of(const std::string& observer, const std::string& node) const;
  /// `name`'s /metrics text, or "".
  [[nodiscard]] std::string metrics(const std::string& name) const;
  /// A counter or gauge `series` (name with labels) on node `name`, or -1.
  [[nodiscard]] double metric(const std::string& name, const std::string& series) const;

  /// What node `name` has logged so far.
  [[nodiscard]] std::string log(const std::string& name) const;
  /// When `name` logged its first line holding `text` (spdlog's "[YYYY-mm-dd HH:MM:SS.mmm]"
  /// local wall clock, on the steady clock), or nullopt if it has not.
  [[nodiscard]] std::optional<std::chrono::steady_clock::time_point> logged_at(
      const std::string& name, const std::string& text) const;
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }
  [[nodiscard]] const std::filesystem::path& topology_file() const { return topology_; }
  /// Writes the topology again with another checkpoint, as `file` in dir(), for a
  /// mismatched node.
  [[nodiscard]] std::filesystem::path write_variant(const std::string& file,
                                                    const std::filesystem::path& checkpoint) const;

 private:
  [[nodiscard]] std::string topology_text(const std::filesystem::path& checkpoint) const;
  [[nodiscard]] const cluster_node* find(const std::string& name) const;
  [[nodiscard]] bool running(const std::string& name);

  local_cluster_options options_;
  std::filesystem::path dir_;
  std::filesystem::path topology_;
  std::map<std::string, node_addresses> addresses_;
  std::map<std::string, std::unique_ptr<child_process>> procs_;
};

}  // namespace baton::launcher
