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
      error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      try {
        on_accept_(std::move(socket));
      } catch (const std::exception& e) {  // keep accepting: the next client is not at fault
        failures_.fetch_add(1);
        spdlog::error("{} server: accepting a connection failed: {}", what_, e.what());
      }
    }
    accept();
  });
}

void acceptor_thread::stop(const std::function<void()>& on_stop) {
  if (!thread_.joinable()) return;
  std::promise<void> stopped;
  asio::post(io_, [&] {
    error_code ignored;
    acceptor_.close(ignored);
    if (on_stop) on_stop();
    stopped.set_value();
  });
  stopped.get_future().wait();
  io_.stop();
  thread_.join();
}

}  // namespace baton::frontend::detail
