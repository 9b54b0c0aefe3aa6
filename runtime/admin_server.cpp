#include "runtime/admin_server.hpp"

#include <charconv>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded

#include <boost/asio.hpp>
#include <boost/beast.hpp>

namespace baton::runtime {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr auto request_timeout = std::chrono::seconds(5);
constexpr std::size_t max_header_bytes = 8 * 1024;
constexpr std::size_t max_body_bytes = 1024;  // admin requests carry no body

/// One connection: read a request, answer it, repeat while the client keeps it alive.
class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket socket, const admin_routes& routes)
      : stream_(std::move(socket)), routes_(routes) {}

  void start() { read(); }

 private:
  void read() {
    parser_.emplace();
    parser_->header_limit(max_header_bytes);
    parser_->body_limit(max_body_bytes);
    stream_.expires_after(request_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream) return close();
    if (ec) {
      // A malformed or oversized request gets a 400 before the connection closes.
      if (ec != beast::error::timeout && ec != asio::error::operation_aborted) {
        respond(http::status::bad_request, "text/plain", ec.message() + "\n", false);
      }
      return;
    }
    handle(parser_->get());
  }

  void handle(const http::request<http::string_body>& req) {
    const bool keep = req.keep_alive();
    if (req.method() != http::verb::get) {
      return respond(http::status::method_not_allowed, "text/plain", "GET only\n", keep);
    }
    const auto target = req.target();
    if (target == "/health") {
      const bool ok = routes_.healthy();
      return respond(ok ? http::status::ok : http::status::service_unavailable, "application/json",
                     fmt::format("{{\"status\":\"{}\"}}\n", ok ? "ok" : "unavailable"), keep);
    }
    if (target == "/metrics") {
      return respond(http::status::ok, "text/plain; version=0.0.4", routes_.metrics(), keep);
    }
    if (target == "/status") {
      return respond(http::status::ok, "application/json", routes_.status().dump() + "\n", keep);
    }
    respond(http::status::not_found, "text/plain", "not found\n", keep);
  }

  void respond(http::status status, const char* type, std::string body, bool keep) {
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->set(http::field::server, "baton");
    res->set(http::field::content_type, type);
    res->keep_alive(keep);
    res->body() = std::move(body);
    res->prepare_payload();
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, keep](beast::error_code ec, std::size_t) {
                        if (!ec && keep) return self->read();
                        self->close();
                      });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  const admin_routes& routes_;
};

class beast_admin_server final : public admin_server {
 public:
  beast_admin_server(tcp::endpoint at, admin_routes routes, beast::error_code& ec)
      : routes_(std::move(routes)), acceptor_(io_) {
    acceptor_.open(at.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(at, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return;
    accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~beast_admin_server() override {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] std::uint16_t port() const override { return acceptor_.local_endpoint().port(); }

 private:
  void accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) std::make_shared<session>(std::move(socket), routes_)->start();
      accept();
    });
  }

  admin_routes routes_;
  asio::io_context io_{1};
  tcp::acceptor acceptor_;
  std::thread thread_;
};

}  // namespace

/// Splits "host:port"; the error names `address`.
expected<tcp::endpoint> parse_endpoint(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    return fail(errc::invalid_argument, fmt::format("address '{}': expected host:port", address));
  }
  beast::error_code ec;
  const auto ip = asio::ip::make_address(address.substr(0, colon), ec);
  if (ec)
    return fail(errc::invalid_argument, fmt::format("address '{}': {}", address, ec.message()));
  unsigned port = 0;
  const auto digits = std::string_view(address).substr(colon + 1);
  auto [end, parse_error] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (parse_error != std::errc{} || end != digits.data() + digits.size() || port > 65535) {
    return fail(errc::invalid_argument, fmt::format("address '{}': bad port", address));
  }
  return tcp::endpoint(ip, static_cast<std::uint16_t>(port));
}

expected<std::unique_ptr<admin_server>> admin_server::start(const std::string& address,
                                                            admin_routes routes) {
  auto at = parse_endpoint(address);
  if (!at) return tl::unexpected(at.error());
  beast::error_code ec;
  auto server = std::make_unique<beast_admin_server>(*at, std::move(routes), ec);
  if (ec) return fail(errc::failed, fmt::format("admin address {}: {}", address, ec.message()));
  return server;
}

int free_port() {
  // Random ports below Linux's ephemeral range (32768-60999), so no outgoing connection
  // takes a picked port as its source port before its user binds it, and never the same
  // port twice in one process.
  static std::mutex mutex;
  static std::set<int> given;
  static std::mt19937 rng(std::random_device{}());
  std::lock_guard lock(mutex);
  asio::io_context io;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const int port = std::uniform_int_distribution<int>(20000, 32767)(rng);
    if (given.contains(port)) continue;
    tcp::acceptor acceptor(io);
    beast::error_code ec;
    const tcp::endpoint at(asio::ip::make_address("127.0.0.1"), static_cast<std::uint16_t>(port));
    acceptor.open(at.protocol(), ec);
    if (!ec) acceptor.bind(at, ec);
    if (ec) continue;
    given.insert(port);
    return port;
  }
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return acceptor.local_endpoint().port();
}

expected<std::string> admin_get(const std::string& address, const std::string& path,
                                std::chrono::milliseconds timeout) {
  auto at = parse_endpoint(address);
  if (!at) return tl::unexpected(at.error());
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(timeout);
  beast::error_code ec;
  stream.connect(*at, ec);
  if (ec) return fail(errc::disconnected, fmt::format("{}: {}", address, ec.message()));
  http::request<http::empty_body> req(http::verb::get, path, 11);
  req.set(http::field::host, address);
  http::write(stream, req, ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  if (!ec) http::read(stream, buffer, res, ec);
  if (ec) return fail(errc::disconnected, fmt::format("{}{}: {}", address, path, ec.message()));
  if (res.result() != http::status::ok) {
    return fail(errc::failed, fmt::format("{}{}: HTTP {}", address, path, res.result_int()));
  }
  return std::move(res.body());
}

}  // namespace baton::runtime
