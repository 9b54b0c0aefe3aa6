#include "client/stream_io.hpp"

#include <charconv>
#include <future>
#include <string_view>

#include <fmt/format.h>

namespace baton::client::detail {

expected<std::vector<tcp::endpoint>> resolve(asio::io_context& io, const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return fail(errc::invalid_argument, fmt::format("address '{}': expected host:port", address));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned port = 0;
  const auto digits = std::string_view(address).substr(colon + 1);
  auto [end, parse_error] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (digits.empty() || parse_error != std::errc{} || end != digits.data() + digits.size() ||
      port > 65535) {
    return fail(errc::invalid_argument, fmt::format("address '{}': bad port", address));
  }
  boost::system::error_code ec;
  tcp::resolver resolver(io);
  auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::numeric_service, ec);
  if (ec || results.empty()) {
    return fail(errc::not_found,
                fmt::format("address '{}': {}", address, ec ? ec.message() : "no such host"));
  }
  std::vector<tcp::endpoint> out;
  for (const auto& entry : results) out.push_back(entry.endpoint());
  return out;
}

acceptor_thread::acceptor_thread(std::string what) : what_(std::move(what)) {}

acceptor_thread::~acceptor_thread() {
  stop();
}

expected<void> acceptor_thread::listen(const std::string& address, accept_fn on_accept) {
  auto endpoints = resolve(io_, address);
  if (!endpoints) return tl::unexpected(endpoints.error());
  boost::system::error_code ec;
  const auto at = endpoints->front();
  acceptor_.open(at.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(at, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(errc::failed, fmt::format("{} address {}: {}", what_, address, ec.message()));
  port_ = acceptor_.local_endpoint().port();
  on_accept_ = std::move(on_accept);
  accept();
  thread_ = std::thread([this] { io_.run(); });
  return {};
}

void acceptor_thread::accept() {
  acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      boost::system::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      on_accept_(std::move(socket));
    }
    accept();
  });
}

void acceptor_thread::stop(const std::function<void()>& on_stop) {
  if (!thread_.joinable()) return;
  std::promise<void> stopped;
  asio::post(io_, [&] {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    if (on_stop) on_stop();
    stopped.set_value();
  });
  stopped.get_future().wait();
  io_.stop();
  thread_.join();
}

}  // namespace baton::client::detail
