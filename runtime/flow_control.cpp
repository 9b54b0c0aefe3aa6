#include "runtime/flow_control.hpp"

#include <algorithm>

#include "base/check.hpp"

namespace baton::runtime {

flow_control::flow_control(std::uint32_t window, std::size_t max_queued)
    : window_(window), max_queued_(max_queued), credit_(window) {
  BATON_CHECK(window >= 2, "a credit window holds at least two frames");
}

flow_control::verdict flow_control::admit() {
  if (credit_ > 0 && queued_ == 0) {
    --credit_;
    return verdict::send;
  }
  if (queued_ < max_queued_) {
    ++queued_;
    return verdict::queue;
  }
  return verdict::overloaded;
}

std::size_t flow_control::on_credit(std::uint32_t frames) {
  // A peer never returns more than it was given; cap in case of a confused peer.
  credit_ = std::min(window_, credit_ + frames);
  const std::size_t release = std::min<std::size_t>(credit_, queued_);
  credit_ -= static_cast<std::uint32_t>(release);
  queued_ -= release;
  return release;
}

std::optional<std::uint32_t> flow_control::on_delivered() {
  if (++delivered_ < window_ / 2) return std::nullopt;
  const auto credit = delivered_;
  delivered_ = 0;
  return credit;
}

}  // namespace baton::runtime
