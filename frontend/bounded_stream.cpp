#include "frontend/bounded_stream.hpp"

#include <variant>

#include <boost/asio/post.hpp>

namespace baton::frontend {
namespace {

/// What a message costs against the bound until the io thread turns it into bytes: about
/// its encoded size (a token's text may double as JSON escapes).
std::size_t queue_cost(const response& r) {
  if (const auto* t = std::get_if<wire::token_chunk>(&r)) return 256 + 2 * t->text.size();
  return 256;
}

}  // namespace

bool io_gate::post(std::function<void()> fn) {
  std::lock_guard lock(mutex_);
  if (closed_) return false;
  boost::asio::post(executor_, std::move(fn));
  return true;
}

void io_gate::close() {
  std::lock_guard lock(mutex_);
  closed_ = true;
}

bounded_stream::bounded_stream(std::uint64_t id, std::uint64_t client_tag,
                               std::shared_ptr<io_gate> gate, std::weak_ptr<stream_sink> owner,
                               std::size_t max_queued_bytes)
    : id_(id),
      tag_(client_tag),
      gate_(std::move(gate)),
      owner_(std::move(owner)),
      max_queued_(max_queued_bytes) {}

bool bounded_stream::send(response r) {
  std::visit([this](auto& m) { m.client_tag = tag_; }, r);
  const bool final =
      std::holds_alternative<wire::finished>(r) || std::holds_alternative<wire::rejected>(r);
  const std::size_t cost = queue_cost(r);
  std::lock_guard lock(mutex_);
  if (!open_.load()) return false;
  if (!final && queued_.load() + cost > max_queued_) {
    open_.store(false);
    (void)gate_->post([owner = owner_, self = shared_from_this()] {
      if (auto s = owner.lock()) s->on_slow(self);
    });
    return false;
  }
  queued_.fetch_add(cost);
  const bool posted =
      gate_->post([owner = owner_, self = shared_from_this(), r = std::move(r), cost]() mutable {
        self->written(cost);
        if (auto s = owner.lock()) s->on_response(self, std::move(r));
      });
  if (!posted) {
    queued_.fetch_sub(cost);
    open_.store(false);
    return false;
  }
  if (final) open_.store(false);
  return true;
}

bool bounded_stream::end_by_server() {
  std::lock_guard lock(mutex_);
  return open_.exchange(false);
}

}  // namespace baton::frontend
