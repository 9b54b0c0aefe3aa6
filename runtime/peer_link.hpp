#pragma once

// The sending half of one peer's bridge, and the credit accounting in both directions,
// shared by the bridge actor and by actors that send or take frames on other threads (a
// client's I/O thread, the transport's progress thread), so those never wait for a CAF
// worker to carry a frame. Stamps frames with this node's identity, encodes them, posts
// them through the frame sink under the peer's credit (flow_control.hpp) and returns
// credit for the frames delivered here. Thread-safe.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "base/error.hpp"
#include "runtime/flow_control.hpp"
#include "schemas/codec.hpp"

namespace baton::runtime {

class node_context;

class peer_link {
 public:
  /// `ctx` must outlive the link.
  peer_link(node_context& ctx, std::string peer);

  /// Sends `body` from `from` (an actor of this node) to `to` (on the peer). Frames under
  /// flow control wait for credit beyond the window; the message id it went with, or
  /// invalid_argument (it does not encode) or overloaded (too many wait). A `deadline`
  /// travels in the frame and also bounds how long the transport may try to send it.
  [[nodiscard]] expected<std::uint64_t> send(wire::actor_address from, wire::actor_address to,
                                             wire::body body, std::uint64_t in_reply_to = 0,
                                             std::chrono::steady_clock::time_point deadline = {});
  /// The peer returned `frames` credit: what waited for it leaves.
  void on_credit(std::uint32_t frames);
  /// A frame under flow control from the peer was delivered here; returns credit to the
  /// peer's `runtime` once half a window has been.
  void delivered();
  /// Forgets the frames waiting for credit (the peer is gone); returns their senders.
  [[nodiscard]] std::vector<wire::actor_address> drop_waiting();

  [[nodiscard]] const std::string& peer() const { return peer_; }
  /// A frame from the peer's `incarnation` was accepted here: what we send it from now on
  /// names at least that incarnation (its process may be newer than the directory says).
  void heard_from(std::uint64_t incarnation);

 private:
  node_context& ctx_;
  std::string peer_;
  std::mutex mutex_;  // held while posting, so frames leave in the order they were admitted
  flow_control flow_;
  std::deque<std::pair<wire::encoded_frame, wire::actor_address>> waiting_;  // for credit
  std::atomic<std::uint64_t> heard_{0};  // the newest incarnation of the peer heard from
};

}  // namespace baton::runtime
