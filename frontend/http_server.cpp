#include "frontend/http_server.hpp"

#include <unordered_map>

#include "frontend/http_session.hpp"

namespace baton::frontend {
namespace {

using detail::http_core;
using detail::http_session;
using detail::tcp;

class server_impl final : public http_server {
 public:
  server_impl(http_options options, generate_handler& handler, std::unique_ptr<api_gate> keys,
              std::shared_ptr<detail::ssl::context> tls)
      : tls_(std::move(tls)),
        core_{std::move(options), {}, handler, {}, {}, {1}, nullptr, nullptr, nullptr} {
    core_.limits = {core_.options.model, core_.options.max_tokens_limit,
                    core_.options.max_prompt_bytes};
    core_.gate = std::make_shared<io_gate>(server_.io().get_executor());
    core_.connections = std::make_unique<detail::connection_count>(
        core_.options.max_connections, core_.options.max_connections_per_client);
    core_.keys = std::move(keys);
  }

  expected<void> listen() {
    return server_.listen(core_.options.address,
                          [this](tcp::socket socket) { on_accept(std::move(socket)); });
  }

  ~server_impl() override {
    server_.stop([this] {
      for (auto& [ptr, weak] : sessions_) {
        if (auto s = weak.lock()) s->close(cancel_reason::server_stopping);
      }
      core_.gate->close();
    });
  }

  [[nodiscard]] std::uint16_t local_port() const override { return server_.port(); }

  [[nodiscard]] http_stats stats() const override {
    auto s = core_.stats.snapshot();
    s.handler_failures += server_.handler_failures();
    return s;
  }

 private:
  void on_accept(tcp::socket socket) {
    std::erase_if(sessions_, [](const auto& entry) { return entry.second.expired(); });
    auto s = std::make_shared<http_session>(
        tls_ ? detail::connection(std::move(socket), tls_) : detail::connection(std::move(socket)),
        core_);
    sessions_.emplace(s.get(), s);
    if (auto refused = core_.connections->admit(s->peer())) {
      s->refuse(*refused);
      return;
    }
    core_.stats.connections_accepted.fetch_add(1);
    core_.stats.connections_open.fetch_add(1);
    s->start();
  }

  std::shared_ptr<detail::ssl::context> tls_;  // null: plain HTTP
  http_core core_;
  std::unordered_map<http_session*, std::weak_ptr<http_session>> sessions_;  // io thread only
  detail::acceptor_thread server_{"http"};  // last: its thread stops first
};

}  // namespace

expected<std::unique_ptr<http_server>> http_server::start(http_options options,
                                                          generate_handler& handler) {
  if (options.max_connections == 0 || options.max_connections_per_client == 0 ||
      options.max_open_requests == 0 || options.max_body_bytes == 0 ||
      options.max_queued_bytes_per_stream == 0 || options.idle_timeout_ms == 0 ||
      options.header_timeout_ms == 0) {
    return fail(errc::invalid_argument, "http server: every limit must be positive");
  }
  if (options.model.empty()) return fail(errc::invalid_argument, "http server: no model id");
  auto security = detail::load_client_security("http server", options.api_keys_file,
                                               options.tls_certificate_file, options.tls_key_file);
  if (!security) return tl::unexpected(security.error());
  auto server = std::make_unique<server_impl>(std::move(options), handler,
                                              std::move(security->keys), std::move(security->tls));
  if (auto ok = server->listen(); !ok) return tl::unexpected(ok.error());
  return server;
}

}  // namespace baton::frontend
