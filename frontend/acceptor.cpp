#include "frontend/acceptor.hpp"

#include <exception>
#include <future>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "base/address.hpp"

namespace baton::frontend::detail {

acceptor_thread::acceptor_thread(std::string what) : what_(std::move(what)) {}

acceptor_thread::~acceptor_thread() {
  stop();
}

expected<void> acceptor_thread::listen(const std::string& address, accept_fn on_accept) {
  auto parsed = parse_host_port(address, port_zero::allowed);
  if (!parsed) return fail(parsed.error(), fmt::format("{} port: ", what_));
  error_code ec;
  tcp::resolver resolver(io_);
  const auto found = resolver.resolve(parsed->host, std::to_string(parsed->port),
                                      tcp::resolver::numeric_service | tcp::resolver::passive, ec);
  if (ec || found.empty()) {
    return fail(errc::invalid_argument, fmt::format("{} port: address \"{}\": {}", what_, address,
                                                    ec ? ec.message() : "no such host"));
  }
  const auto at = found.begin()->endpoint();
  acceptor_.open(at.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(at, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return fail(errc::failed,
                fmt::format("{} port: cannot listen on {}: {}", what_, address, ec.message()));
  }
  port_ = acceptor_.local_endpoint().port();
  on_accept_ = std::move(on_accept);
  accept();
  thread_ = std::thread([this] { run(); });
  return {};
}

void acceptor_thread::run() {
  for (;;) {
    try {
      io_.run();
      return;
    } catch (const std::exception& e) {
      failures_.fetch_add(1);
      spdlog::error("{} server: a handler failed: {}; serving on", what_, e.what());
    } catch (...) {
      failures_.fetch_add(1);
      spdlog::error("{} server: a handler failed; serving on", what_);
    }
  }
}

void acceptor_thread::accept() {
  acceptor_.async_accept([this](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      accept_failing_ = false;
      error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      try {
        on_accept_(std::move(socket));
      } catch (const std::exception& e) {  // keep accepting: the next client is not at fault
        failures_.fetch_add(1);
        spdlog::error("{} server: accepting a connection failed: {}", what_, e.what());
      }
      accept();
      return;
    }
    // Out of file descriptors (or memory): the pending connection stays queued, and
    // accepting again at once would spin. Pause briefly; say so once per episode.
    if (!accept_failing_) spdlog::warn("{} server: cannot accept: {}", what_, ec.message());
    accept_failing_ = true;
    backoff_.expires_after(std::chrono::milliseconds(50));
    backoff_.async_wait([this](error_code wait_ec) {
      if (wait_ec) return;
      accept();
    });
  });
}

void acceptor_thread::stop(const std::function<void()>& on_stop) {
  if (!thread_.joinable()) return;
  std::promise<void> stopped;
  asio::post(io_, [&] {
    error_code ignored;
    acceptor_.close(ignored);
    backoff_.cancel();
    if (on_stop) on_stop();
    stopped.set_value();
  });
  stopped.get_future().wait();
  io_.stop();
  thread_.join();
}

std::optional<std::string> connection_count::admit(const asio::ip::address& peer) {
  std::lock_guard lock(mutex_);
  if (total_ >= max_total_) return fmt::format("{} connections open, the limit", max_total_);
  auto& mine = per_address_[peer];
  if (mine >= max_per_address_) {
    return fmt::format("{} connections open from {}, the limit per client address",
                       max_per_address_, peer.to_string());
  }
  ++mine;
  ++total_;
  return std::nullopt;
}

void connection_count::release(const asio::ip::address& peer) {
  std::lock_guard lock(mutex_);
  auto it = per_address_.find(peer);
  if (it == per_address_.end() || it->second == 0) return;
  if (--it->second == 0) per_address_.erase(it);
  --total_;
}

asio::ip::address peer_address(const tcp::socket& socket) {
  error_code ec;
  auto endpoint = socket.remote_endpoint(ec);
  return ec ? asio::ip::address{} : endpoint.address();
}

}  // namespace baton::frontend::detail
