#include "runtime/peer_link.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "runtime/bridge.hpp"
#include "runtime/node_context.hpp"

namespace baton::runtime {
namespace {

using clock = std::chrono::steady_clock;

std::uint64_t unix_us(clock::time_point deadline) {
  if (deadline == clock::time_point{}) return 0;
  const auto left = deadline - clock::now();
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(now + left).count());
}

}  // namespace

peer_link::peer_link(node_context& ctx, std::string peer)
    : ctx_(ctx),
      peer_(std::move(peer)),
      flow_(ctx.config().credit_window, ctx.config().max_queued) {}

void peer_link::heard_from(std::uint64_t incarnation) {
  auto known = heard_.load();
  while (known < incarnation && !heard_.compare_exchange_weak(known, incarnation)) {
  }
}

expected<std::uint64_t> peer_link::send(wire::actor_address from, wire::actor_address to,
                                        wire::body body, std::uint64_t in_reply_to,
                                        clock::time_point deadline) {
  wire::frame f;
  f.source = std::move(from);
  f.target = std::move(to);
  f.sender_incarnation = ctx_.incarnation();
  f.target_incarnation = std::max(ctx_.incarnation_of(f.target.node), heard_.load());
  f.message_id = ctx_.next_message_id();
  f.deadline_unix_us = unix_us(deadline);
  f.in_reply_to = in_reply_to;
  f.body = std::move(body);
  auto encoded = wire::encode(f, ctx_.config().limits);
  if (!encoded) return tl::unexpected(encoded.error());
  std::lock_guard lock(mutex_);
  if (!flow_controlled(f.body)) {
    ctx_.sink().post(peer_, std::move(*encoded), deadline);
    return f.message_id;
  }
  switch (flow_.admit()) {
    case flow_control::verdict::send: ctx_.sink().post(peer_, std::move(*encoded), deadline); break;
    case flow_control::verdict::queue: waiting_.emplace_back(std::move(*encoded), f.source); break;
    case flow_control::verdict::overloaded:
      return fail(errc::overloaded,
                  fmt::format("{} frames wait for credit to {}", waiting_.size(), peer_));
  }
  return f.message_id;
}

void peer_link::on_credit(std::uint32_t frames) {
  std::lock_guard lock(mutex_);
  for (auto n = flow_.on_credit(frames); n > 0 && !waiting_.empty(); --n) {
    ctx_.sink().post(peer_, std::move(waiting_.front().first));
    waiting_.pop_front();
  }
}

void peer_link::delivered() {
  std::optional<std::uint32_t> credit;
  {
    std::lock_guard lock(mutex_);
    credit = flow_.on_delivered();
  }
  if (credit) {
    (void)send({ctx_.name(), "runtime"}, {peer_, "runtime"}, wire::credit{*credit});
  }
}

std::vector<wire::actor_address> peer_link::drop_waiting() {
  std::lock_guard lock(mutex_);
  std::vector<wire::actor_address> senders;
  for (auto& [bytes, source] : waiting_) senders.push_back(std::move(source));
  waiting_.clear();
  return senders;
}

}  // namespace baton::runtime
