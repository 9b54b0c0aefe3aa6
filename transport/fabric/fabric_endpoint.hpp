// transport/fabric/fabric_endpoint.hpp: internal to transport/fabric/.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>

#include "base/check.hpp"
#include "transport/endpoint.hpp"
#include "transport/fabric/fabric_types.hpp"
#include "transport/fabric/fid.hpp"
#include "transport/fabric/registration.hpp"
#include "transport/frame.hpp"
#include "transport/frame_mac.hpp"
#include "transport/grant_table.hpp"

namespace baton::transport::fabric {

/// The libfabric endpoint. The owner thread validates, builds operations and queues them;
/// the progress thread (progress_) makes every fi_* call after set-up, so libfabric sees
/// one thread per domain (FI_THREAD_DOMAIN). Shared state is behind the three mutexes.
class fabric_endpoint final : public endpoint {
 public:
  explicit fabric_endpoint(const endpoint_config& config);
  ~fabric_endpoint() override;
  void stop() override;
  fabric_endpoint(const fabric_endpoint&) = delete;
  fabric_endpoint& operator=(const fabric_endpoint&) = delete;

  /// Opens every fid from `info` and starts the progress thread; called once by the factory.
  [[nodiscard]] expected<void> open(info_ptr info);

  address local_address() const override { return local_; }
  node_id local_node() const override { return node_; }
  const endpoint_limits& limits() const override { return config_.limits; }
  expected<peer_id> add_peer(const address& peer, deadline until) override;
  void reset_peer(const address& peer) override;
  expected<region_id> allocate_region(std::size_t bytes) override;
  std::span<std::byte> region_bytes(region_id region) override;
  expected<void> free_region(region_id region) override;
  expected<remote_slice> grant(peer_id peer, const local_slice& slice) override;
  expected<op_id> send(peer_id to, std::span<const std::byte> bytes, deadline until) override;
  expected<op_id> write(const local_slice& source, const remote_slice& target, deadline until,
                        std::optional<std::uint64_t> notify) override;
  expected<op_id> read(const local_slice& target, const remote_slice& source,
                       deadline until) override;
  std::size_t poll(std::span<event> out) override;
  bool wait(std::chrono::milliseconds timeout) override;
  void interrupt() override;
  endpoint_stats stats() const override;
  bool set_event_handler(std::function<bool(event&)> handler) override;
  bool set_timer(deadline at) override;

 private:
  // Set-up (fabric_setup.cpp).
  [[nodiscard]] expected<void> open_fids();
  [[nodiscard]] expected<void> learn_local_address();
  /// Allocates (and with mr_local_ registers) the receive and send slabs, then posts
  /// every receive buffer.
  [[nodiscard]] expected<void> open_buffers();
  /// A fresh requested key for fi_mr_reg (see key_source).
  [[nodiscard]] std::uint64_t next_key();

  // Owner-thread helpers (fabric_endpoint.cpp).
  void run_on_progress(std::function<void()> command);
  void submit(std::unique_ptr<op> operation);
  [[nodiscard]] expected<void> admit();
  [[nodiscard]] expected<std::unique_ptr<op>> make_rma(op_kind kind, const local_slice& local,
                                                       const remote_slice& remote, deadline until);
  [[nodiscard]] expected<std::vector<std::byte>> raw_address_of(const address& peer) const;
  /// A raw provider address as text ("127.0.0.1:7000", or an shm name).
  [[nodiscard]] std::string text_of(const std::vector<std::byte>& raw) const;
  /// A hello to `peer`: a request (answer false) that the peer answers with its own, or
  /// the answer to one.
  void post_hello(peer_id peer, bool answer);
  /// Posts a hello to `peer` before the caller's next frame if an operation to it failed
  /// since our last one (peer_entry::rehello). Caller holds state_mu_.
  void hello_again_if_needed(peer_id peer);
  /// An operation to `peer` failed or expired: its next frame follows a hello.
  void note_failure(peer_id peer);

  // Progress thread (fabric_progress.cpp).
  void progress_loop();
  void wake();
  void progress_blocking(bool posted);
  void poll_with_backoff(bool posted);
  void take_submissions();
  /// Posts queued operations in order until the provider says -FI_EAGAIN; true if any
  /// was posted (or failed at once).
  bool post_pending();
  /// How many sends from `first` on can leave together as one batch frame (1: just it).
  [[nodiscard]] std::size_t batchable(std::deque<op*>::iterator first);
  /// The batch operation carrying the `count` sends from `first` on.
  [[nodiscard]] std::unique_ptr<op> make_batch(std::deque<op*>::iterator first, std::size_t count);
  [[nodiscard]] int post(op& operation);
  [[nodiscard]] int post_send(op& operation);
  /// `desc` for a data-transfer call; with mr_local_ it must be a registration's.
  [[nodiscard]] void* local_desc(void* desc) const {
    BATON_CHECK(!mr_local_ || desc != nullptr, "FI_MR_LOCAL: a local buffer without descriptor");
    return desc;
  }
  /// Reads every completion available, first blocking up to `block_ms` in fi_cq_sread
  /// unless it is negative. True if anything was read.
  bool read_completions(int block_ms);
  void on_completion(const fi_cq_tagged_entry& entry, fi_addr_t source);
  void on_error();
  void on_receive(rx_slot& slot, std::size_t bytes, fi_addr_t source);
  void on_frame(const frame::view& frame, fi_addr_t source);
  void on_hello(const frame::view& frame, fi_addr_t source);
  /// With a frame key: whether `frame` is sealed by its sender's session and new; if not,
  /// counted against `source`, whose connection closes after max_bad_tags.
  [[nodiscard]] bool authentic(const frame::view& frame, fi_addr_t source);
  /// Whether a new sender's session may be kept (at most 2 x max_peers; when full, the
  /// sessions of senders no peer maps to any more are dropped first). Caller holds
  /// state_mu_.
  [[nodiscard]] bool room_for_a_session();
  /// A hello that `authentic` refused: its sender is told why (a refuse frame, at most one
  /// a second per address), and if we were saying hello to that address ourselves, our
  /// add_peer fails with the reason.
  void refuse_hello(const frame::view& frame, frame::refusal reason);
  /// A refusal of our hello: the add_peer waiting for that peer fails with its reason.
  void on_refuse(const frame::view& frame);
  /// The peer at `raw`, added if new (unknown_peer if the table is full or the address
  /// is refused). Caller holds state_mu_.
  [[nodiscard]] peer_id peer_of_raw(const std::vector<std::byte>& raw);
  /// Closes the connection to `id` (rxm closes it as the address leaves the AV) and
  /// inserts the address again; the peer keeps its id and node. Caller holds state_mu_.
  void reset_connection(peer_id id);
  /// `o.frame` sealed under our session key into `o.sealed` (progress thread).
  std::span<const std::byte> seal(op& o);
  void finish(op* operation, expected<void> status);
  void expire(clock::time_point now);
  void repost(rx_slot& slot);
  void push_event(event ev);
  /// Offers the timer event once set_timer()'s time has passed.
  void fire_timer(clock::time_point now);
  [[nodiscard]] int next_timeout_ms() const;

  endpoint_config config_;
  node_id node_{};
  address local_;
  std::vector<std::byte> raw_local_;
  bool virt_addr_ = false;
  bool prov_key_ = false;
  bool mr_endpoint_ = false;
  /// Every local buffer of a data transfer needs a descriptor (FI_MR_LOCAL, or
  /// config.require_local_mr): frames go through the registered slabs below.
  bool mr_local_ = false;
  /// fi_cq_sread sleeps on tcp; on shm it spins and ignores its timeout (measured: 67% of
  /// a core, no return in 2 s), so shm polls with a backoff and sleeps on wake_cv_.
  bool blocking_wait_ = true;
  /// shm with FI_MR_VIRT_ADDR: a plain write is copied by the initiator (CMA) and has
  /// landed when it completes (checked by the conformance suite).
  bool shm_direct_write_ = false;

  info_ptr info_;
  fid_ptr<fid_fabric> fabric_;
  fid_ptr<fid_domain> domain_;
  fid_ptr<fid_cq> cq_;
  fid_ptr<fid_av> av_;

  // Guarded by state_mu_: peers, grants received, regions.
  mutable std::mutex state_mu_;
  std::condition_variable state_cv_;
  std::vector<peer_entry> peers_;
  std::map<std::string, peer_id> peer_by_raw_;  // raw address bytes as a string
  std::map<node_id, peer_id> peer_by_node_;
  std::map<fi_addr_t, peer_id> peer_by_addr_;
  grant_table grants_;
  std::map<region_id, std::shared_ptr<region>> regions_;
  std::uint32_t next_region_ = 1;
  std::mt19937_64 rng_;

  // Guarded by submit_mu_: work for the progress thread.
  std::mutex submit_mu_;
  std::condition_variable command_cv_;
  std::condition_variable wake_cv_;  // the backoff sleeper's doorbell
  std::deque<std::unique_ptr<op>> submitted_;
  std::deque<std::function<void()>> commands_;
  std::uint64_t commands_queued_ = 0;
  std::uint64_t commands_done_ = 0;
  bool stopped_ = false;  ///< guarded by submit_mu_: stop() joined the progress thread

  // Guarded by events_mu_: completions for the owner.
  mutable std::mutex events_mu_;
  std::condition_variable events_cv_;
  std::deque<event> events_;
  bool interrupted_ = false;

  std::atomic<std::size_t> inflight_{0};
  std::atomic<std::uint64_t> next_op_{1};
  std::atomic<bool> stop_{false};
  std::atomic<bool> sleeping_{false};  ///< the progress thread is (about to be) in fi_cq_sread
  std::atomic<clock::rep> timer_at_{clock::time_point::max().time_since_epoch().count()};
  counters counters_;

  // Progress thread only.
  std::function<bool(event&)> handler_;  // set through run_on_progress
  // Declared before the operations and slots that use them; their registrations close
  // before domain_ (declared earlier) does.
  slab rx_memory_;  ///< receive_depth receive buffers, registered if mr_local_
  slab tx_memory_;  ///< send_depth send buffers, only with mr_local_
  std::unordered_map<op*, std::unique_ptr<op>> live_;
  std::deque<op*> pending_;
  std::vector<std::unique_ptr<rx_slot>> rx_;
  clock::time_point last_activity_{};
  // Frame authentication (with config_.frame_key), progress thread only.
  session_nonce nonce_{};             ///< announced in our hellos
  std::optional<frame_mac> own_mac_;  ///< our session key
  std::uint64_t next_sequence_ = 1;
  struct session {
    session_nonce nonce;
    frame_mac mac;
    replay_window window;
  };
  std::map<node_id, session> sessions_;  ///< by sender, from its sealed hello
  std::map<fi_addr_t, std::uint32_t> bad_tags_by_source_;
  std::map<std::string, clock::time_point> refused_at_;  ///< by raw address
  std::chrono::microseconds backoff_{0};

  fid_ptr<fid_ep> ep_;  // declared late: closed before everything it uses
  std::thread progress_;
};

}  // namespace baton::transport::fabric
