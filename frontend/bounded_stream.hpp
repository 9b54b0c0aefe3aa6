#pragma once

// Internal to frontend/: the response_stream both servers hand the router. Messages go,
// in send order, to the session that owns the request, on its server's io thread; the
// bytes waiting for a slow client are bounded.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded

#include <boost/asio/any_io_executor.hpp>

#include "frontend/service.hpp"

namespace baton::frontend {

/// Hands work to a server's io thread until the server closes it at shutdown; after
/// close() nothing more reaches the io_context. Thread-safe.
class io_gate {
 public:
  explicit io_gate(boost::asio::any_io_executor executor) : executor_(std::move(executor)) {}

  /// Runs `fn` on the io thread, in post order; false (and `fn` dropped) once closed.
  bool post(std::function<void()> fn);
  void close();

 private:
  std::mutex mutex_;
  bool closed_ = false;
  boost::asio::any_io_executor executor_;
};

class bounded_stream;

/// The session that owns a stream's request: receives its messages on the io thread.
class stream_sink {
 public:
  virtual ~stream_sink() = default;
  /// A message the router sent, in send order.
  virtual void on_response(const std::shared_ptr<bounded_stream>& stream, response r) = 0;
  /// A send() found the stream's queue over its bound; the stream is closed already and
  /// the router has not been told.
  virtual void on_slow(const std::shared_ptr<bounded_stream>& stream) = 0;
};

class bounded_stream final : public response_stream,
                             public std::enable_shared_from_this<bounded_stream> {
 public:
  /// `owner` may go away first: messages for it are then dropped.
  bounded_stream(std::uint64_t id, std::uint64_t client_tag, std::shared_ptr<io_gate> gate,
                 std::weak_ptr<stream_sink> owner, std::size_t max_queued_bytes);

  [[nodiscard]] std::uint64_t id() const noexcept override { return id_; }
  [[nodiscard]] std::uint64_t client_tag() const noexcept override { return tag_; }
  [[nodiscard]] std::size_t queued_bytes() const noexcept override { return queued_.load(); }
  [[nodiscard]] bool open() const noexcept override { return open_.load(); }

  /// Stamps the client tag and posts `r` to the owner. Each message counts against the
  /// bound from here until the owner's io thread has taken it (an estimate of its bytes),
  /// and its encoded bytes from then until they are written (add_queued, written).
  bool send(response r) override;

  /// The server ends the request; true if it was still open (then the router is told).
  [[nodiscard]] bool end_by_server();

  void add_queued(std::size_t bytes) noexcept { queued_.fetch_add(bytes); }
  void written(std::size_t bytes) noexcept { queued_.fetch_sub(bytes); }

 private:
  const std::uint64_t id_;
  const std::uint64_t tag_;
  const std::shared_ptr<io_gate> gate_;
  const std::weak_ptr<stream_sink> owner_;
  const std::size_t max_queued_;
  std::mutex mutex_;  // orders sends, so messages reach the io thread in send order
  std::atomic<bool> open_{true};
  std::atomic<std::size_t> queued_{0};
};

}  // namespace baton::frontend
