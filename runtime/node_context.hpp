#pragma once

// What every actor of a node shares: the node's identity, its local actors by name, the
// directory of other nodes (kept current by the membership driver), and one bridge actor
// per peer node. Thread-safe: actors on any scheduler thread and the fabric thread use it.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "runtime/frame_sink.hpp"
#include "runtime/kv_fabric.hpp"
#include "runtime/metrics.hpp"
#include "schemas/codec.hpp"
#include "schemas/membership.hpp"

namespace baton::runtime {

class peer_link;

struct bridge_config {
  std::uint32_t credit_window = 256;                ///< application frames in flight per peer
  std::size_t max_queued = 4096;                    ///< frames waiting for credit per peer
  std::chrono::milliseconds default_timeout{5000};  ///< sends without a deadline
  wire::codec_limits limits;
};

/// References passed to the constructor (system, sink, metrics) must outlive the context.
class node_context {
 public:
  node_context(std::string name, std::uint64_t incarnation, caf::actor_system& system,
               frame_sink& sink, metrics_registry& metrics, bridge_config config = {});

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] std::uint64_t incarnation() const { return incarnation_.load(); }
  /// The incarnation this process started with (refutations raise incarnation() from it).
  [[nodiscard]] std::uint64_t first_incarnation() const { return first_incarnation_; }
  /// Whether a frame addressed to `target_incarnation` of this node is for this process
  /// (0: for any); frames for the process before it are dropped.
  [[nodiscard]] bool for_this_process(std::uint64_t target_incarnation) const {
    return target_incarnation == 0 || target_incarnation >= first_incarnation_;
  }
  /// The incarnation of `node` the directory holds (0: unknown).
  [[nodiscard]] std::uint64_t incarnation_of(const std::string& node) const;
  void set_incarnation(std::uint64_t incarnation) { incarnation_.store(incarnation); }
  [[nodiscard]] std::uint64_t next_message_id() { return next_id_.fetch_add(1) + 1; }
  [[nodiscard]] const bridge_config& config() const { return config_; }
  [[nodiscard]] caf::actor_system& system() { return system_; }
  [[nodiscard]] frame_sink& sink() { return sink_; }
  [[nodiscard]] metrics_registry& metrics() { return metrics_; }
  /// One-sided RMA over this node's endpoint; null where the context has no fabric
  /// (unit tests with a recording sink).
  [[nodiscard]] kv_fabric* rma() const { return rma_.load(); }
  /// Set once by the node before its actors start; `rma` must outlive the context's use.
  void set_rma(kv_fabric* rma) { rma_.store(rma); }

  /// Makes `actor` reachable from other nodes as (this node, name).
  void publish(const std::string& name, caf::actor actor);
  void unpublish(const std::string& name);
  /// The local actor called `name`, or an invalid handle.
  [[nodiscard]] caf::actor lookup(const std::string& name) const;

  /// Records what membership knows of a node and tells every member watcher.
  void update_member(const wire::member& m);
  /// This node heard it had been declared dead (and refuted): every member watcher gets a
  /// member_update with `buried` set.
  void buried();
  /// `watcher` receives a member_update for every later change; returns what is known now.
  [[nodiscard]] std::vector<wire::member> watch_members(const caf::actor& watcher);
  [[nodiscard]] std::optional<wire::member> member(const std::string& node) const;
  [[nodiscard]] bool accepts(const std::string& node, std::uint64_t incarnation) const;

  /// Where membership frames (join, joinReply, heartbeat, leave) go: the node's
  /// membership driver. Set it before peers can reach the node; frames that arrive
  /// before, or with none set, are dropped.
  void set_membership(std::function<void(const wire::frame&)> handler);
  /// Hands `f` to the membership handler on the calling thread.
  void to_membership(const wire::frame& f) const;

  /// The bridge to `node`, spawned (and connected) on first use. `fabric_address` is
  /// needed only for a node not in the directory yet. Invalid if the address is unknown.
  /// A bridge is to one address: when `fabric_address` or the directory names another
  /// (the node restarted elsewhere), the old bridge fails its pending work and goes, and
  /// a new one connects to the new address.
  [[nodiscard]] caf::actor bridge(const std::string& node, const std::string& fabric_address = {});
  /// The sending half of the bridge to `node` (runtime/peer_link.hpp), for actors that
  /// send from other threads; spawns the bridge like bridge(). Null if the address is
  /// unknown.
  [[nodiscard]] std::shared_ptr<peer_link> link(const std::string& node,
                                                const std::string& fabric_address = {});
  /// Forgets the bridge to `node` (it stops itself after failing its pending work).
  void drop_bridge(const std::string& node);

  /// An actor's fast path: takes frames addressed to it on the thread that receives them
  /// (true: taken), instead of through the peer's bridge and the actor's mailbox. It must
  /// be quick and never block. Only frames under flow control that answer no request are
  /// offered; credit for those taken is returned here. An empty taker removes it.
  using frame_taker =
      std::function<bool(const wire::frame& f, std::chrono::steady_clock::time_point received)>;
  void set_taker(const std::string& actor, frame_taker taker);
  /// Offers an encoded frame from a peer to the taker of the actor it names; false (left
  /// to the bridge, which counts what it rejects) when none takes it.
  [[nodiscard]] bool take(std::span<const std::byte> bytes,
                          std::chrono::steady_clock::time_point received);

  /// What `actor` still holds (requests, attempts, jobs), as it reports it; a draining node
  /// leaves once the sum is zero. Any thread.
  void set_work(const std::string& actor, std::size_t n);
  [[nodiscard]] std::size_t work() const;

  /// Stops every published actor and bridge and forgets them (node shutdown); returns
  /// them, so the caller can wait until they are gone.
  [[nodiscard]] std::vector<caf::actor> shutdown();

 private:
  std::string name_;
  std::atomic<std::uint64_t> incarnation_;
  const std::uint64_t first_incarnation_;
  std::atomic<std::uint64_t> next_id_{0};
  caf::actor_system& system_;
  frame_sink& sink_;
  metrics_registry& metrics_;
  bridge_config config_;
  std::atomic<kv_fabric*> rma_{nullptr};
  mutable std::mutex mutex_;
  std::map<std::string, caf::actor> actors_;
  std::map<std::string, std::size_t> work_;
  std::map<std::string, wire::member> directory_;
  std::vector<caf::actor_addr> member_watchers_;
  struct bridge_entry {
    caf::actor actor;
    std::shared_ptr<peer_link> link;
    std::string address;  ///< the fabric address it is attached to
  };
  /// Takes `node`'s bridge out if it is attached to another address than `address`;
  /// the caller sends it retire() outside the lock. Under mutex_.
  [[nodiscard]] caf::actor take_moved_bridge(const std::string& node, const std::string& address);
  /// Tells a bridge taken out by take_moved_bridge() that its node moved to `address`.
  static void retire(const caf::actor& bridge, const std::string& node, const std::string& address);
  std::map<std::string, bridge_entry> bridges_;
  /// The bridge to `node` and its link, spawned (and connected) on first use; empty if
  /// the address is unknown.
  [[nodiscard]] bridge_entry entry(const std::string& node, const std::string& fabric_address);
  std::map<std::string, std::shared_ptr<const frame_taker>> takers_;
  std::atomic<bool> any_taker_{false};
  std::mutex take_mutex_;  // the decoder below
  wire::decoder take_decoder_;
  std::shared_ptr<const std::function<void(const wire::frame&)>> membership_;
};

}  // namespace baton::runtime
