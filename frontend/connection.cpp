#include "frontend/connection.hpp"

#include <fmt/format.h>

namespace baton::frontend::detail {

expected<std::shared_ptr<ssl::context>> tls_server_context(const std::string& certificate_file,
                                                           const std::string& key_file) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  error_code ec;
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                           ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                           ssl::context::no_tlsv1_1 | ssl::context::single_dh_use,
                       ec);
  if (ec) return fail(errc::failed, fmt::format("TLS: {}", ec.message()));
  context->use_certificate_chain_file(certificate_file, ec);
  if (ec) {
    return fail(errc::invalid_argument,
                fmt::format("{}: not a PEM certificate chain: {}", certificate_file, ec.message()));
  }
  context->use_private_key_file(key_file, ssl::context::pem, ec);
  if (ec) {
    return fail(errc::invalid_argument, fmt::format("{}: not a PEM private key for {}: {}",
                                                    key_file, certificate_file, ec.message()));
  }
  if (SSL_CTX_check_private_key(context->native_handle()) != 1) {
    return fail(errc::invalid_argument,
                fmt::format("{}: the private key does not match {}", key_file, certificate_file));
  }
  return context;
}

expected<client_security> load_client_security(const std::string& server,
                                               const std::string& api_keys_file,
                                               const std::string& certificate_file,
                                               const std::string& key_file) {
  client_security s;
  if (!api_keys_file.empty()) {
    auto loaded = api_keys::load(api_keys_file);
    if (!loaded) return tl::unexpected(loaded.error());
    s.keys = std::make_unique<api_gate>(api_keys_file, std::move(*loaded));
  }
  if (certificate_file.empty() != key_file.empty()) {
    return fail(errc::invalid_argument,
                fmt::format("{}: TLS needs both a certificate file and a key file", server));
  }
  if (!certificate_file.empty()) {
    auto context = tls_server_context(certificate_file, key_file);
    if (!context) return tl::unexpected(context.error());
    s.tls = std::move(*context);
  }
  return s;
}

}  // namespace baton::frontend::detail
