#pragma once

// Credit-based flow control between two nodes, since CAF mailboxes are unbounded. The
// sender may have at most `window` application frames outstanding to a peer; the
// receiver returns credit once it has delivered half a window. Frames beyond the window
// wait in a bounded queue; beyond that the sender is told the peer is overloaded.
// Membership and runtime control frames are exempt, so a slow peer is never mistaken
// for a dead one.

#include <cstddef>
#include <cstdint>
#include <optional>

namespace baton::runtime {

class flow_control {
 public:
  flow_control(std::uint32_t window, std::size_t max_queued);

  enum class verdict : std::uint8_t { send, queue, overloaded };

  /// Sender side: may one more application frame go now?
  [[nodiscard]] verdict admit();
  /// Sender side: the peer returned `frames` credit; returns how many queued frames may
  /// now be sent (the caller sends that many from the front of its queue).
  [[nodiscard]] std::size_t on_credit(std::uint32_t frames);
  /// Receiver side: one application frame was delivered; returns the credit to send
  /// back when half a window has accumulated.
  [[nodiscard]] std::optional<std::uint32_t> on_delivered();

  [[nodiscard]] std::uint32_t credit() const { return credit_; }
  [[nodiscard]] std::size_t queued() const { return queued_; }

 private:
  std::uint32_t window_;
  std::size_t max_queued_;
  std::uint32_t credit_;
  std::size_t queued_ = 0;
  std::uint32_t delivered_ = 0;
};

}  // namespace baton::runtime
