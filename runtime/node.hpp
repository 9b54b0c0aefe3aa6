#pragma once

// One node process's runtime: the CAF actor system, the transport endpoint and its fabric
// thread, the bridges to peers, and membership. Role actors (router, prefill, decode) are
// published on it and reach actors on other nodes through remote_actor.

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "base/error.hpp"
#include "runtime/cluster_secret.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node_context.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/topology.hpp"
#include "transport/endpoint.hpp"

namespace baton::runtime {

class fabric_io;
class membership_driver;
class peer_watch;

struct node_options {
  runtime::topology topology;
  std::string name;  ///< this node, as named in the topology
  /// The admin port as bound, which peers learn from membership; empty: the topology's.
  std::string admin_address;
  std::vector<std::string> join;  ///< seeds (node names or fabric addresses); empty: the topology's
  wire::join identity;            ///< what peers must match: model hash, KV layout, numerics
  std::uint64_t random_seed = 0;  ///< probe order; printed in the log
  std::vector<child_spec> actors;  ///< the node's role actors, supervised
  restart_budget budget;
  std::uint32_t restarts = 0;  ///< times baton up (or systemd) restarted this node: gossiped
  /// The cluster secret joins prove (runtime/membership.hpp); null: the cluster has none.
  std::shared_ptr<const cluster_secret> secret;
};

/// Why a node stopped.
enum class stop_reason : std::uint8_t {
  left,     ///< it left the cluster (leave()): the one clean end
  refused,  ///< the cluster refused its join (model, KV layout or numerics differ, name in use)
  stopped,  ///< stop() (a second signal, say)
  failed,   ///< its actors crashed past their restart budget
};

[[nodiscard]] std::string_view to_string(stop_reason r) noexcept;

struct node_stop {
  stop_reason reason = stop_reason::stopped;
  std::string detail;  ///< what happened, for the log
};

class node {
 public:
  /// Starts the node: binds its fabric address, then joins (or, as the first seed,
  /// forms) the cluster. Fails with not_found for a name not in the topology and with the
  /// transport's error when the address cannot be bound.
  [[nodiscard]] static expected<std::unique_ptr<node>> start(node_options options);
  /// Stops every actor and the fabric thread.
  ~node();
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  [[nodiscard]] node_context& context() { return *context_; }
  [[nodiscard]] caf::actor_system& system() { return system_; }
  [[nodiscard]] metrics_registry& metrics() { return metrics_; }
  /// This node's topology entry, with the addresses it actually bound (port 0 resolved).
  [[nodiscard]] const node_spec& spec() const { return spec_; }
  /// The membership table as this node sees it.
  [[nodiscard]] std::vector<wire::member> members() const;

  /// Applies the CAF settings every node uses (scheduler threads, hand-off latency).
  static caf::actor_system_config& configure(caf::actor_system_config& config);

  /// Announces that this node leaves; wait() returns `left` once the news has spread.
  void leave();
  /// Announces that this node takes no new work; it stays a member until leave().
  void drain();
  [[nodiscard]] bool draining() const { return draining_.load(); }
  /// Joined, every role actor running, and not draining: routers may place work here.
  [[nodiscard]] bool ready() const;
  /// Makes wait() return; the first call's reason wins.
  void stop(stop_reason reason, std::string detail);
  /// Blocks until the node stops (refused join, leave, failure or stop()); returns why.
  [[nodiscard]] node_stop wait();

 private:
  node(node_options options, node_spec spec, std::unique_ptr<transport::endpoint> endpoint);

  caf::actor_system_config config_;
  caf::actor_system system_;
  metrics_registry metrics_;
  node_spec spec_;
  std::unique_ptr<fabric_io> io_;
  std::unique_ptr<node_context> context_;
  std::unique_ptr<membership_driver> membership_;
  std::unique_ptr<peer_watch> watch_;
  caf::actor supervisor_;
  std::vector<std::string> actor_names_;
  std::atomic<bool> draining_{false};
  mutable std::mutex mutex_;
  std::condition_variable stopped_cv_;
  std::optional<node_stop> stopped_;
};

}  // namespace baton::runtime
