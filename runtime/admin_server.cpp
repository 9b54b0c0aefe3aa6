#include "runtime/admin_server.hpp"

#include <charconv>
#include <exception>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded

#include <boost/asio.hpp>
#include <boost/beast.hpp>

#include "base/address.hpp"

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
    // The failure boundary: a route that throws answers 500; the server goes on.
    try {
      handle(parser_->get());
    } catch (const std::exception& e) {
      const auto target = parser_->get().target();
      spdlog::error("admin port: {} failed: {}", std::string(target.data(), target.size()),
                    e.what());
      respond(http::status::internal_server_error, "text/plain", "internal error\n", false);
    }
  }

  void handle(const http::request<http::string_body>& req) {
    const bool keep = req.keep_alive();
    const auto target = req.target();
    if (req.method() == http::verb::post && target.starts_with("/drain"))
      return drain(std::string_view(target.data(), target.size()), keep);
    if (req.method() != http::verb::get) {
      return respond(http::status::method_not_allowed, "text/plain", "GET only (POST /drain)\n",
                     keep);
    }
    if (target == "/livez") {
      return respond(http::status::ok, "application/json", "{\"status\":\"live\"}\n", keep);
    }
    if (target == "/readyz") {
      const bool ok = routes_.ready ? routes_.ready() : routes_.healthy();
      return respond(ok ? http::status::ok : http::status::service_unavailable, "application/json",
                     fmt::format("{{\"status\":\"{}\"}}\n", ok ? "ready" : "not ready"), keep);
    }
    if (target == "/health") {
      const bool ok = routes_.healthy();
      return respond(ok ? http::status::ok : http::status::service_unavailable, "application/json",
                     fmt::format("{{\"status\":\"{}\"}}\n", ok ? "ok" : "unavailable"), keep);
    }
    if (target == "/metrics") {
      return respond(http::status::ok, "text/plain; version=0.0.4", routes_.metrics(), keep);
    }
    if (target == "/status") {
      return respond(http::status::ok, "application/json", routes_.status() + "\n", keep);
    }
    respond(http::status::not_found, "text/plain", "not found\n", keep);
  }

  /// POST /drain[?deadline_ms=N] (default 30 s).
  void drain(std::string_view target, bool keep) {
    if (!routes_.drain) return respond(http::status::not_found, "text/plain", "not found\n", keep);
    std::int64_t deadline_ms = 30'000;
    if (target != "/drain") {
      constexpr std::string_view key = "/drain?deadline_ms=";
      const auto value = target.starts_with(key) ? target.substr(key.size()) : std::string_view{};
      const auto [end, ec] =
          std::from_chars(value.data(), value.data() + value.size(), deadline_ms);
      if (value.empty() || ec != std::errc{} || end != value.data() + value.size() ||
          deadline_ms < 0 || deadline_ms > 3'600'000) {
        return respond(http::status::bad_request, "text/plain",
                       "expected POST /drain or /drain?deadline_ms=N (0 to 3600000)\n", keep);
      }
    }
    respond(http::status::accepted, "application/json",
            routes_.drain(std::chrono::milliseconds(deadline_ms)) + "\n", keep);
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

/// The first endpoint of "host:port" (`zero`: whether port 0 is allowed); the error names
/// `address`.
expected<tcp::endpoint> resolve(const std::string& address, port_zero zero) {
  auto parsed = parse_host_port(address, zero);
  if (!parsed) return tl::unexpected(parsed.error());
  asio::io_context io;
  tcp::resolver resolver(io);
  beast::error_code ec;
  const auto found = resolver.resolve(parsed->host, std::to_string(parsed->port),
                                      tcp::resolver::numeric_service, ec);
  if (ec || found.empty()) {
    return fail(errc::invalid_argument,
                fmt::format("address \"{}\": {}", address, ec ? ec.message() : "no such host"));
  }
  return found.begin()->endpoint();
}

expected<std::unique_ptr<admin_server>> admin_server::start(const std::string& address,
                                                            admin_routes routes) {
  auto at = resolve(address, port_zero::allowed);
  if (!at) return fail(at.error(), "admin port: ");
  beast::error_code ec;
  auto server = std::make_unique<beast_admin_server>(*at, std::move(routes), ec);
  if (ec) {
    return fail(errc::failed,
                fmt::format("admin port: cannot listen on {}: {}", address, ec.message()));
  }
  return server;
}

namespace {

expected<std::string> admin_request(http::verb verb, const std::string& address,
                                    const std::string& path, std::chrono::milliseconds timeout,
                                    const std::string& json_body = {}) {
  auto at = resolve(address, port_zero::refused);
  if (!at) return tl::unexpected(at.error());
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(timeout);
  beast::error_code ec;
  stream.connect(*at, ec);
  if (ec) return fail(errc::disconnected, fmt::format("{}: {}", address, ec.message()));
  http::request<http::string_body> req(verb, path, 11);
  req.set(http::field::host, address);
  if (!json_body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = json_body;
  }
  req.prepare_payload();
  http::write(stream, req, ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  if (!ec) http::read(stream, buffer, res, ec);
  if (ec) return fail(errc::disconnected, fmt::format("{}{}: {}", address, path, ec.message()));
  if (res.result_int() / 100 != 2) {
    return fail(errc::failed,
                fmt::format("{}{}: HTTP {} {}", address, path, res.result_int(), res.body()));
  }
  return std::move(res.body());
}

}  // namespace

expected<std::string> admin_get(const std::string& address, const std::string& path,
                                std::chrono::milliseconds timeout) {
  return admin_request(http::verb::get, address, path, timeout);
}

expected<std::string> admin_post(const std::string& address, const std::string& path,
                                 std::chrono::milliseconds timeout) {
  return admin_request(http::verb::post, address, path, timeout);
}

expected<std::string> http_post_json(const std::string& address, const std::string& path,
                                     const std::string& body, std::chrono::milliseconds timeout) {
  return admin_request(http::verb::post, address, path, timeout, body);
}

}  // namespace baton::runtime
