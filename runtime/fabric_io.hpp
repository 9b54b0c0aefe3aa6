#pragma once

// The fabric thread: the one thread that owns a node's transport endpoint. Bridges post
// encoded frames to it (frame_sink); it sends them, and hands every frame that arrives to
// the bridge of its peer, or to the hub for a peer not attached yet. It blocks in the
// endpoint's wait() while idle and is woken for new work, so an idle node burns no CPU,
// and it hands frames to CAF with anon_send (no scheduler round trip of its own).

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <caf/actor.hpp>

#include "runtime/frame_sink.hpp"
#include "runtime/metrics.hpp"
#include "transport/endpoint.hpp"

namespace baton::runtime {

class fabric_io final : public frame_sink {
 public:
  /// Takes the endpoint and starts the thread. Frames from peers that are not attached
  /// go to `hub` as (raw_frame, transport::peer_id). `metrics` must outlive this.
  fabric_io(std::unique_ptr<transport::endpoint> endpoint, metrics_registry& metrics);
  /// Stops the thread; frames not yet sent are dropped.
  ~fabric_io() override;
  fabric_io(const fabric_io&) = delete;
  fabric_io& operator=(const fabric_io&) = delete;

  /// Where frames from unknown peers go; set before any peer can reach this node.
  void set_hub(caf::actor hub);
  void attach(const std::string& node, const std::string& fabric_address,
              caf::actor bridge) override;
  void post(const std::string& node, wire::encoded_frame frame) override;
  void detach(const std::string& node) override;
  /// Routes frames that arrive from `peer` (a peer that reached us first) to `node`'s bridge.
  void bind(const std::string& node, transport::peer_id peer);

  [[nodiscard]] const transport::address& local_address() const { return local_address_; }

 private:
  struct command {
    enum class kind : std::uint8_t { attach, post, detach, bind } what;
    std::string node;
    std::string address;
    caf::actor bridge;
    wire::encoded_frame frame;
    transport::peer_id peer{};
  };
  void push(command c);
  void run();
  void execute(command& c);
  void connect(const std::string& node, const std::string& address, caf::actor bridge);
  void retry_connects();
  void send_backlog(const std::string& node);
  void deliver(transport::event& e);

  std::unique_ptr<transport::endpoint> endpoint_;
  transport::address local_address_;
  counter& frames_sent_;
  counter& frames_received_;
  counter& send_failures_;
  std::mutex mutex_;
  std::vector<command> commands_;
  caf::actor hub_;
  std::atomic<bool> stop_{false};
  // Owned by the thread.
  std::map<std::string, transport::peer_id> peers_;                 // the id we connected with
  std::map<std::string, std::vector<transport::peer_id>> aliases_;  // ids it reached us by
  std::map<std::string, caf::actor> bridges_;
  std::map<transport::peer_id, caf::actor> routes_;
  std::map<std::string, std::deque<wire::encoded_frame>> backlog_;
  struct pending_connect {
    std::string address;
    caf::actor bridge;
    std::chrono::steady_clock::time_point retry_at;
    std::chrono::steady_clock::time_point give_up_at;
  };
  std::map<std::string, pending_connect> connecting_;
  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace baton::runtime
