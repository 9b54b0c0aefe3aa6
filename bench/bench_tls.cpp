// `baton bench tls [--requests N] [--tokens K] [--json]`: what TLS costs the HTTP API, side by
// side in one run. The router's HTTP server (frontend::http_server, the real one) runs in
// this process twice, plain and with TLS (a throwaway self-signed P-256 certificate made
// here), in front of a stub generate_handler that answers every completion at once with K
// tokens: no cluster and no engine, so only the front door is measured. A client (Beast
// over OpenSSL) sends N completions each way, on a new connection each (TCP connect, TLS
// handshake, request, answer) and on one kept-alive connection (the request alone), and
// prints p50 and p99 per way and the differences: the handshake's cost and TLS's cost per
// request. Figures only; no assertions.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <nlohmann/json.hpp>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "bench/commands.hpp"
#include "frontend/http_server.hpp"
#include "report/stats.hpp"

namespace baton::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

struct tls_args {
  std::size_t requests = 500;
  std::uint32_t tokens = 16;
  bool json = false;
};

/// Answers every request at once: accepted, `tokens` one-token chunks, finished.
class stub_handler final : public frontend::generate_handler {
 public:
  explicit stub_handler(std::uint32_t tokens) : tokens_(tokens) {}
  void start(const wire::generate_request&, std::shared_ptr<frontend::response_stream> s) override {
    wire::accepted a;
    a.prompt_tokens = 4;
    a.placement = "stub";
    s->send(a);
    for (std::uint32_t i = 0; i < tokens_; ++i) {
      wire::token_chunk t;
      t.first_position = 4 + i;
      t.tokens = {i + 1};
      t.text = " tok";
      s->send(t);
    }
    s->send(wire::finished{0, wire::finish_reason::length, 4, tokens_, 0});
  }
  void cancel(const frontend::response_stream&, frontend::cancel_reason) override {}

 private:
  std::uint32_t tokens_;
};

/// A self-signed certificate for 127.0.0.1 and its key, written to `dir`.
expected<void> write_certificate(const std::filesystem::path& dir) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  if (key == nullptr || cert == nullptr) return fail(errc::failed, "OpenSSL: no key or cert");
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  const bool signed_ok = X509_sign(cert, key, EVP_sha256()) > 0;
  FILE* c = std::fopen((dir / "tls.pem").c_str(), "w");
  FILE* k = std::fopen((dir / "tls.key").c_str(), "w");
  const bool written = signed_ok && c != nullptr && k != nullptr && PEM_write_X509(c, cert) == 1 &&
                       PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  if (c != nullptr) std::fclose(c);
  if (k != nullptr) std::fclose(k);
  X509_free(cert);
  EVP_PKEY_free(key);
  if (!written) return fail(errc::failed, "OpenSSL: cannot write the test certificate");
  return {};
}

/// One way's latencies, microseconds, sorted.
struct way {
  std::string name;
  std::vector<double> us;
  std::size_t failed = 0;
};

http::request<http::string_body> completion(std::uint32_t tokens) {
  http::request<http::string_body> req{http::verb::post, "/v1/completions", 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::content_type, "application/json");
  req.body() = fmt::format(R"({{"model":"bench","prompt":"hi","max_tokens":{}}})", tokens);
  req.prepare_payload();
  return req;
}

/// Sends one request on `stream` and reads the whole answer; true if it was a 200.
template <class Stream>
bool exchange(Stream& stream, beast::flat_buffer& buffer,
              const http::request<http::string_body>& req) {
  beast::error_code ec;
  http::write(stream, req, ec);
  http::response<http::string_body> res;
  if (!ec) http::read(stream, buffer, res, ec);
  return !ec && res.result() == http::status::ok;
}

way run_way(const std::string& name, std::uint16_t port, ssl::context* tls, bool keep_alive,
            const tls_args& args) {
  way w{name, {}, 0};
  asio::io_context io;
  const tcp::endpoint at(asio::ip::make_address("127.0.0.1"), port);
  const auto req = completion(args.tokens);
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> kept_tls;
  std::unique_ptr<beast::tcp_stream> kept_plain;
  beast::flat_buffer buffer;
  const auto connect = [&]() -> bool {
    beast::error_code ec;
    if (tls != nullptr) {
      kept_tls = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(io, *tls);
      beast::get_lowest_layer(*kept_tls).connect(at, ec);
      if (!ec) kept_tls->handshake(ssl::stream_base::client, ec);
    } else {
      kept_plain = std::make_unique<beast::tcp_stream>(io);
      kept_plain->connect(at, ec);
    }
    buffer.clear();
    return !ec;
  };
  if (keep_alive && !connect()) {
    w.failed = args.requests;
    return w;
  }
  for (std::size_t i = 0; i < args.requests; ++i) {
    const auto start = clock_type::now();
    bool ok = keep_alive || connect();
    if (ok)
      ok = tls != nullptr ? exchange(*kept_tls, buffer, req) : exchange(*kept_plain, buffer, req);
    const auto us = std::chrono::duration<double, std::micro>(clock_type::now() - start).count();
    if (ok) {
      w.us.push_back(us);
    } else {
      ++w.failed;
      if (keep_alive && !connect()) break;
    }
  }
  std::sort(w.us.begin(), w.us.end());
  return w;
}

int run(const tls_args& args) {
  const auto dir =
      std::filesystem::temp_directory_path() / fmt::format("baton-bench-tls-{}", ::getpid());
  std::filesystem::create_directories(dir);
  if (auto ok = write_certificate(dir); !ok) {
    fmt::print(stderr, "baton bench tls: {}\n", ok.error().message);
    return 1;
  }
  stub_handler handler(args.tokens);
  frontend::http_options plain_options;
  plain_options.model = "bench";
  auto tls_options = plain_options;
  tls_options.tls_certificate_file = (dir / "tls.pem").string();
  tls_options.tls_key_file = (dir / "tls.key").string();
  auto plain = frontend::http_server::start(plain_options, handler);
  auto secure = frontend::http_server::start(tls_options, handler);
  if (!plain || !secure) {
    fmt::print(stderr, "baton bench tls: {}\n", (!plain ? plain.error() : secure.error()).message);
    return 1;
  }
  ssl::context client(ssl::context::tls_client);
  client.load_verify_file((dir / "tls.pem").string());
  client.set_verify_mode(ssl::verify_peer);
  const auto plain_port = (*plain)->local_port();
  const auto tls_port = (*secure)->local_port();
  // Interleaved, so that both see the same machine.
  std::vector<way> ways = {run_way("http, new connection", plain_port, nullptr, false, args),
                           run_way("https, new connection", tls_port, &client, false, args),
                           run_way("http, kept alive", plain_port, nullptr, true, args),
                           run_way("https, kept alive", tls_port, &client, true, args)};
  std::filesystem::remove_all(dir);
  const auto p = [](const way& w, double q) { return report::percentile(w.us, q); };
  const double handshake_us = p(ways[1], 50) - p(ways[0], 50) - (p(ways[3], 50) - p(ways[2], 50));
  const double per_request_us = p(ways[3], 50) - p(ways[2], 50);
  if (args.json) {
    nlohmann::json j;
    for (const auto& w : ways) {
      j["ways"].push_back({{"way", w.name},
                           {"requests", w.us.size()},
                           {"failed", w.failed},
                           {"p50_us", p(w, 50)},
                           {"p99_us", p(w, 99)}});
    }
    j["tls_handshake_us_p50"] = handshake_us;
    j["tls_per_request_us_p50"] = per_request_us;
    j["tokens"] = args.tokens;
    fmt::print("{}\n", j.dump());
    return 0;
  }
  fmt::print("{:<24} {:>9} {:>7} {:>10} {:>10}\n", "way", "requests", "failed", "p50 us", "p99 us");
  for (const auto& w : ways) {
    fmt::print("{:<24} {:>9} {:>7} {:>10.0f} {:>10.0f}\n", w.name, w.us.size(), w.failed, p(w, 50),
               p(w, 99));
  }
  fmt::print(
      "TLS costs (p50): the handshake {:.0f} us, each request {:.0f} us ({}-token "
      "completions from a stub handler: the HTTP server alone)\n",
      handshake_us, per_request_us, args.tokens);
  return 0;
}

}  // namespace

void add_bench_tls_command(CLI::App& app, int& exit_code) {
  auto& bench = bench_command(app);
  static tls_args args;
  auto* cmd = bench.add_subcommand("tls", "The HTTP API's TLS costs: handshake and per request");
  cmd->add_option("--requests", args.requests, "Requests per way")->capture_default_str();
  cmd->add_option("--tokens", args.tokens, "Tokens per answer")->capture_default_str();
  cmd->add_flag("--json", args.json, "One JSON object");
  cmd->callback([&exit_code] { exit_code = run(args); });
}

}  // namespace baton::bench
