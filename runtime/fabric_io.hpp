#pragma once

// The fabric thread: the one thread that owns a node's transport endpoint. Frames do not
// pass through it on the hot path: bridges post encoded frames (frame_sink) straight into
// the endpoint's thread-safe submission path once their peer is connected, and the
// endpoint's progress thread hands every frame that arrives to the bridge of its peer (or
// to the hub for a peer not attached yet) with anon_send, stamped with when it left the
// transport. So a frame crosses one thread per direction besides CAF's workers, as in
// CAF's own middleman. The fabric thread connects peers, sends what waits for a
// connection or for room in the endpoint, and carries actors' one-sided RMA (kv_fabric):
// their commands run on it, and write completions and notify events come out of its poll
// loop. It blocks in the endpoint's wait() while idle, so an idle node burns no CPU.
// Transports without a progress thread (loopback) deliver frames through its poll loop.

#include <atomic>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <caf/actor.hpp>

#include "runtime/frame_sink.hpp"
#include "runtime/kv_fabric.hpp"
#include "runtime/metrics.hpp"
#include "transport/endpoint.hpp"

namespace baton::runtime {

class fabric_io final : public frame_sink, public kv_fabric {
 public:
  /// Takes the endpoint and starts the thread. Frames from peers that are not attached
  /// go to `hub` as (raw_frame, transport::peer_id). `metrics` must outlive this.
  fabric_io(std::unique_ptr<transport::endpoint> endpoint, metrics_registry& metrics);
  /// Stops the thread; frames not yet sent are dropped, blocking calls still waiting
  /// return errc::disconnected, and every write not yet reported gets rma_done with
  /// errc::disconnected (its bytes may or may not have landed).
  ~fabric_io() override;

  /// Stops the endpoint's progress thread (transport::endpoint::stop): for a process that
  /// holds several (a test), before destroying any of them.
  void stop_transport() { endpoint_->stop(); }
  fabric_io(const fabric_io&) = delete;
  fabric_io& operator=(const fabric_io&) = delete;

  /// Where frames from unknown peers go; set before any peer can reach this node.
  void set_hub(caf::actor hub);
  /// Takes a frame from an attached peer before it is routed to the peer's bridge (true:
  /// taken), with the time it left the transport. Runs on the thread that receives frames
  /// (the endpoint's progress thread), so it must be quick and never block; it lets
  /// membership answer a probe, and an actor with a fast path (node_context::set_taker)
  /// take its frames, without waking a CAF worker. Frames it leaves go to the bridge.
  using frame_filter = std::function<bool(std::span<const std::byte> frame,
                                          std::chrono::steady_clock::time_point received)>;
  void set_filter(frame_filter filter);
  /// Keeps time for `tick`: it runs once the time last given to tick_at() has passed, on
  /// the endpoint's progress thread where there is one (it wakes for frames anyway, so a
  /// time moved later costs no wake-up), else on the fabric thread. It must be quick and
  /// never block. Set it before the first tick_at().
  void set_ticker(std::function<void()> tick);
  /// Told (on a transport thread) the name of a connected peer a send could not reach
  /// (connection refused, reset or unreachable): evidence that its process is gone. It
  /// must not block.
  void set_unreachable(std::function<void(const std::string& node)> hook);
  /// Called on the fabric thread when `node` refuses our hello (it does not accept this
  /// node's frame seals: another cluster secret, or one where we have none, or the reverse);
  /// attaching to it is given up. Set before attaching.
  void set_refused(std::function<void(const std::string& node, const std::string& why)> hook);
  /// When the ticker runs next (replacing the time given before); from any thread.
  void tick_at(std::chrono::steady_clock::time_point at);
  void attach(const std::string& node, const std::string& fabric_address,
              caf::actor bridge) override;
  void post(const std::string& node, wire::encoded_frame frame,
            std::chrono::steady_clock::time_point until = {}) override;
  void detach(const std::string& node, const caf::actor& bridge) override;
  void reconnect(const std::string& node) override;
  /// Routes frames that arrive from `peer` (a peer that reached us first) to `node`'s bridge.
  void bind(const std::string& node, transport::peer_id peer);

  [[nodiscard]] const transport::address& local_address() const { return local_address_; }

  // kv_fabric (see there for the contracts).
  [[nodiscard]] transport::node_id local_node() const override { return local_node_; }
  [[nodiscard]] expected<region> allocate_region(std::size_t bytes) override;
  [[nodiscard]] expected<void> free_region(transport::region_id id) override;
  [[nodiscard]] expected<transport::remote_slice> grant(const std::string& node,
                                                        const transport::local_slice& slice,
                                                        transport::deadline until) override;
  void write(const std::string& node, const transport::local_slice& source,
             const transport::remote_slice& target, std::optional<std::uint64_t> notify,
             transport::deadline until, caf::actor reply_to, std::uint64_t tag) override;
  void set_notify_sink(caf::actor sink) override;

 private:
  struct pending_grant {
    transport::local_slice slice;
    transport::deadline until;
    std::shared_ptr<std::promise<expected<transport::remote_slice>>> result;
  };
  struct pending_write {
    transport::local_slice source;
    transport::remote_slice target;
    std::optional<std::uint64_t> notify;
    transport::deadline until;
    caf::actor reply_to;
    std::uint64_t tag = 0;
  };
  struct command {
    enum class kind : std::uint8_t { attach, detach, reconnect, bind, call, grant, write } what;
    std::string node;
    std::string address;
    caf::actor bridge;
    transport::peer_id peer{};
    /// kind::call: runs on the fabric thread with true, or with false when it never will.
    std::function<void(bool)> call;
    pending_grant grant;
    pending_write write;
  };
  void push(command c);
  /// Runs `fn` on the fabric thread and waits for its result until `until`.
  template <class T>
  [[nodiscard]] expected<T> call(std::function<expected<T>()> fn, transport::deadline until);
  /// Answers a command that will never run (shutdown) so nobody waits for it.
  void abandon(command& c);
  [[nodiscard]] std::string name_of(transport::peer_id peer) const;
  void fail_waiting(const std::string& node, const error& why);
  /// Connecting and not given up on: grants and writes wait for it.
  [[nodiscard]] bool being_connected(const std::string& node) const;
  void serve_waiting();
  void serve_grants(const std::string& node);
  void send_writes(const std::string& node);
  void report(const pending_write& w, expected<void> status);
  void run();
  void execute(command& c);
  void connect(const std::string& node, const std::string& address, caf::actor bridge);
  /// Forgets `node`'s connection and bridge (its routes, its peer): what is posted to it
  /// waits in the backlog, for a connection being made or until its deadline.
  void drop_connection(const std::string& node);
  void retry_connects();
  /// Sends what waits for `node` (caller holds send_mu_); false if the endpoint is full.
  bool send_backlog_locked(const std::string& node);
  void send_backlogs();
  void deliver(transport::event& e);
  /// The endpoint's event handler (its progress thread): takes frames and send completions.
  bool on_event(transport::event& e);
  void route(transport::event& e);
  void tick();
  bool handle_event(transport::event& e);
  /// A failed send: tells the unreachable hook when the peer could not be reached.
  void send_failed(const transport::event& e);
  /// A handler on a transport thread threw: count and log it (the boundary's one place).
  void handler_failed(const char* what);

  std::unique_ptr<transport::endpoint> endpoint_;
  transport::address local_address_;
  transport::node_id local_node_;
  counter& frames_sent_;
  counter& frames_received_;
  counter& send_failures_;
  counter& handler_failures_;
  std::mutex mutex_;
  std::vector<command> commands_;
  counter& rma_writes_;
  counter& rma_failures_;
  /// The endpoint's refusals (endpoint_stats), mirrored into counters on each tick.
  void mirror_refusals();
  counter& malformed_frames_;
  counter& bad_tags_;
  counter& connections_closed_;
  counter& descriptors_refused_;
  transport::endpoint_stats mirrored_{};  // tick thread only
  caf::actor hub_;
  caf::actor notify_sink_;
  bool closed_ = false;  // guarded by mutex_: the thread is gone, commands fail at once
  std::atomic<bool> stop_{false};
  // The submission path, from any thread: connected peers and frames waiting to be sent
  // (for the connection, or for room in the endpoint), in order per node.
  std::mutex send_mu_;
  std::map<std::string, transport::peer_id> connected_;
  struct waiting_frame {
    wire::encoded_frame frame;
    transport::deadline until;
  };
  std::map<std::string, std::deque<waiting_frame>> backlog_;
  bool sending_closed_ = false;
  std::atomic<bool> endpoint_full_{false};  // a send found no room: wake us on a completion
  // Where arriving frames go, read by the endpoint's progress thread.
  std::mutex routes_mu_;
  std::map<transport::peer_id, caf::actor> routes_;
  std::map<transport::peer_id, std::string> names_;  // of connected peers, for send_failed
  std::map<std::string, std::chrono::steady_clock::time_point> reset_at_;  // last reconnect
  std::shared_ptr<const std::function<void(const std::string&)>> unreachable_;
  std::function<void(const std::string&, const std::string&)> refused_;  // fabric thread
  std::shared_ptr<const frame_filter> filter_;
  std::shared_ptr<const std::function<void()>> ticker_;
  bool progress_thread_ = false;  // the endpoint delivers on its own thread (set_event_handler)
  // Without one, the fabric thread runs the ticker at this time (steady_clock ticks).
  std::atomic<std::chrono::steady_clock::rep> tick_at_{
      std::chrono::steady_clock::time_point::max().time_since_epoch().count()};
  // Owned by the thread.
  std::map<std::string, transport::peer_id> peers_;  // the id we connected with
  /// The address each node was last attached at, kept across detach: a reconnect must
  /// reach the old connection, or the connect still under way, even while the node is
  /// being attached again (a dead member's reconnect probes attach it, and that attach
  /// waits on the very connection to replace).
  std::map<std::string, std::string> known_;
  std::map<std::string, std::vector<transport::peer_id>> aliases_;  // ids it reached us by
  std::map<std::string, caf::actor> bridges_;
  struct pending_connect {
    std::string address;
    caf::actor bridge;
    std::chrono::steady_clock::time_point retry_at;
    std::chrono::steady_clock::time_point give_up_at;
    bool unanswered = false;  ///< past give_up_at: retried slowly, nothing waits for it
  };
  std::map<std::string, pending_connect> connecting_;
  std::map<std::string, std::deque<pending_grant>> waiting_grants_;  // for their connection
  std::map<std::string, std::deque<pending_write>> waiting_writes_;  // connection or capacity
  struct write_reply {
    caf::actor reply_to;
    std::uint64_t tag = 0;
  };
  std::map<transport::op_id, write_reply> writes_in_flight_;
  std::thread thread_;  // started by the constructor's body, after everything above exists
};

}  // namespace baton::runtime
