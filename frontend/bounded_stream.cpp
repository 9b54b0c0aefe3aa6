#include "frontend/bounded_stream.hpp"

#include <variant>

#include <boost/asio/post.hpp>

namespace baton::frontend {
namespace {

/// What a message costs against the bound until the io thread turns it into bytes: at
/// least its native encoding's size (Cap'n Proto: 4 bytes a token, text and lists padded
/// to words), so that swapping the estimate for the bytes never takes the count past the
/// bound; about its size as JSON (a token's text may double as escapes).
std::size_t queue_cost(const response& r) {
  if (const auto* a = std::get_if<wire::accepted>(&r)) {
    return 256 + 2 * (a->prompt_text.size() + a->prefill_node.size() + a->decode_node.size() +
                      a->placement.size());
  }
  if (const auto* j = std::get_if<wire::rejected>(&r)) return 256 + 2 * j->message.size();
  const auto* t = std::get_if<wire::token_chunk>(&r);
  if (t == nullptr) return 256;
  std::size_t cost = 256 + 2 * t->text.size() + 8 * t->tokens.size();
  for (const auto& l : t->logprobs) cost += 64 + 2 * l.text.size() + 64 * l.top.size();
  return cost;
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
