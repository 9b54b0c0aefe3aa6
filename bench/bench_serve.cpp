// `baton bench serve --url URL --rate R --requests N [--prompt-len DIST] [--output-len DIST]
//   [--seed S] [--slo-ttft-ms X] [--slo-tpot-ms Y] [--model NAME] [--tokenizer FILE]
//   [--max-concurrency C] [--timeout-s T] [--ignore-eos] [--json] [--plot FILE.svg]
//   [--native HOST:PORT [--pairs K]] [--n K [--vs-separate]] [--temperature T]`:
// a serving benchmark against any OpenAI-compatible HTTP endpoint (Baton's router, vLLM,
// SGLang, TRT-LLM, ...), with the figures vLLM's serving benchmark and NVIDIA AIPerf report.
//
// N requests POST {URL}/v1/completions with "stream": true and
// "stream_options": {"include_usage": true}, sent open-loop at Poisson arrival times of
// rate R (seeded; --rate inf sends all at once), whatever the server's progress; at most C
// are in flight (later arrivals wait for a slot). DIST is `N`, `uniform:A:B` or
// `normal:MEAN:SD` (clamped to >= 1). Prompts are common words, about one token each,
// unless --tokenizer FILE (a llama2.c tokenizer) makes them exactly that many tokens.
// Without --model, the first model of GET {URL}/v1/models is used.
//
// Per request: TTFT = first chunk with text - send; E2E = end of stream - send; TPOT =
// (E2E - TTFT) / (output tokens - 1); ITL = the gaps between text chunks. Output tokens
// are usage.completion_tokens, else the text chunks. Goodput: requests meeting every SLO
// given, per second of the run; goodput_fraction: those over the requests sent.
//
// Prints a table, then one JSON line (only the JSON line with --json) with these fields,
// in this order:
//   url, model, seed, rate_req_s (null: inf), requests, completed, failed,
//   errors {kind: count} (http_NNN, connect, write, read, timeout, bad_chunk, stream_error),
//   duration_s, max_concurrency, prompt_len, output_len (DIST as given),
//   prompt_tokens_exact, prompt_tokens_mean, output_tokens_mean,
//   request_throughput_req_s, output_throughput_tok_s, total_throughput_tok_s,
//   {ttft,tpot,itl,e2e}_ms_{mean,p50,p90,p99} (null without samples),
//   slo_ttft_ms, slo_tpot_ms, goodput_req_s, goodput_fraction (null without SLOs),
//   native_pairs, native_ttft_ms_{p50,p90}, http_pair_ttft_ms_{p50,p90},
//   http_added_ttft_ms_p50, native_e2e_ms_{p50,p90}, http_pair_e2e_ms_{p50,p90},
//   http_added_e2e_ms_p50 (null without --native or without a completed pair),
//   n, temperature, prefill_jobs, prefill_compute_s, prefill_kv_bytes (deltas of the
//   server's /metrics counters over the run; null where it has none), separate (null, or
//   with --vs-separate: requests, completed, duration_s, output_throughput_tok_s,
//   {ttft,e2e}_ms_{p50,p90} and the prefill_* fields of the second run).
//
// --n K sends "n": K (K choices per request; output tokens count every choice).
// --vs-separate then sends the same requests again, each as K requests of n = 1 seeded as
// the server seeds choices (engine::choice_seed), at the same arrival times, so the two
// runs ask for the same texts: the difference is the work sharing the prompt saves.
//
// --native HOST:PORT (the router's native port of the same cluster) measures the HTTP
// layer's own added latency: after the main run, K more requests (--pairs, default 20;
// prompts and max_tokens drawn like the main run's, after them) go one at a time, each
// twice: once over HTTP exactly as above (a new connection each) and once through the
// native router client (one connection, opened before the main run), same prompt,
// max_tokens, temperature 0 and seed, alternating which goes first. TTFT and E2E are
// defined as above for both; http_added_*_p50 is the median of the per-pair differences
// (HTTP minus native). Pairs where either side failed are left out.
//
// A progress bar goes to stderr when it is a terminal. Figures only; no assertions. Exit
// status 1 on bad arguments, when /v1/models cannot be read, when --native cannot be
// connected, or when no request (with --native: no pair) completed (the figures are still
// printed); 0 otherwise. See docs/benchmarks.md.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded
#include <variant>
#include <vector>

#include <fmt/format.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "base/address.hpp"
#include "bench/commands.hpp"
#include "bench/serve_load.hpp"
#include "client/router_client.hpp"
#include "engine/sampler.hpp"
#include "engine/tokenizer.hpp"
#include "sim/workload.hpp"

namespace baton::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

constexpr std::size_t max_requests = 1'000'000;
constexpr std::size_t max_header_bytes = 64 * 1024;
constexpr std::uint64_t max_response_bytes = std::uint64_t{256} << 20;

struct serve_args {
  std::string url;
  std::string rate = "inf";
  std::size_t requests = 100;
  std::string prompt_len = "256";
  std::string output_len = "128";
  std::optional<std::uint64_t> seed;
  std::optional<double> slo_ttft_ms;
  std::optional<double> slo_tpot_ms;
  std::string model;
  std::string tokenizer;
  std::size_t max_concurrency = 512;
  double timeout_s = 600;
  bool ignore_eos = false;
  bool json = false;
  std::string plot;
  std::string native;  ///< the router's native port, HOST:PORT; empty: no pairs
  std::size_t pairs = 20;
  std::uint32_t n = 1;  ///< choices per request (OpenAI's n)
  float temperature = 0.0f;
  bool vs_separate = false;  ///< also send each request as n separate ones
  std::string api_key;       ///< sent as "Authorization: Bearer KEY"; empty: none
  std::string trace_out;     ///< write what was sent as a `baton sim` trace
};

/// http://HOST[:PORT][/PREFIX]: the pieces a request needs.
struct target {
  std::string host;
  std::string port = "80";
  std::string prefix;         ///< without a trailing '/'
  std::string authorization;  ///< the Authorization header's value; empty: none sent
};

expected<target> parse_url(const std::string& url) {
  constexpr std::string_view scheme = "http://";
  if (url.rfind(scheme, 0) != 0) {
    return fail(errc::invalid_argument,
                fmt::format("--url '{}': expected http://HOST[:PORT][/PREFIX] (no TLS)", url));
  }
  std::string rest = url.substr(scheme.size());
  target t;
  const auto slash = rest.find('/');
  if (slash != std::string::npos) {
    t.prefix = rest.substr(slash);
    rest.resize(slash);
  }
  while (!t.prefix.empty() && t.prefix.back() == '/') t.prefix.pop_back();
  // The authority is "host:port" as everywhere else; without a port it is 80.
  const bool has_port = !rest.empty() && rest.back() != ']' &&
                        rest.rfind(':') != std::string::npos &&
                        (rest.front() != '[' || rest.rfind(']') < rest.rfind(':'));
  auto address = parse_host_port(has_port ? rest : rest + ":80");
  if (!address) return fail(address.error(), fmt::format("--url '{}': ", url));
  t.host = address->host;
  t.port = std::to_string(address->port);
  return t;
}

/// The body of GET {URL}{path} answered 200.
expected<std::string> http_get(const target& t, const tcp::resolver::results_type& endpoints,
                               const std::string& path) {
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(std::chrono::seconds(10));
  beast::error_code ec;
  stream.connect(endpoints, ec);
  http::request<http::empty_body> req(http::verb::get, t.prefix + path, 11);
  req.set(http::field::host, t.host);
  req.set(http::field::user_agent, "baton-bench-serve");
  if (!t.authorization.empty()) req.set(http::field::authorization, t.authorization);
  if (!ec) http::write(stream, req, ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  if (!ec) http::read(stream, buffer, res, ec);
  if (ec) return fail(errc::disconnected, fmt::format("GET {}: {}", path, ec.message()));
  if (res.result() != http::status::ok) {
    return fail(errc::failed, fmt::format("GET {}: HTTP {}", path, res.result_int()));
  }
  return std::move(res.body());
}

/// GET {URL}/v1/models and the first model's id.
expected<std::string> first_model(const target& t, const tcp::resolver::results_type& endpoints) {
  auto body = http_get(t, endpoints, "/v1/models");
  if (!body) return tl::unexpected(body.error());
  const auto j = nlohmann::json::parse(*body, nullptr, false);
  if (j.is_discarded() || !j.contains("data") || !j["data"].is_array() || j["data"].empty() ||
      !j["data"][0].contains("id") || !j["data"][0]["id"].is_string()) {
    return fail(errc::invalid_argument, "GET /v1/models: no data[0].id; pass --model");
  }
  return j["data"][0]["id"].get<std::string>();
}

/// One planned request: its body, and what it asks for.
struct planned {
  std::string body;
  std::size_t prompt_tokens = 0;
  std::string prompt;  ///< what the body carries, for the native client
  std::size_t max_tokens = 0;
  std::uint64_t seed = 0;
};

class load_run;

/// One streaming request. Owned by its pending handlers; `run` outlives it.
class session : public std::enable_shared_from_this<session> {
 public:
  session(load_run& run, std::size_t index);
  void start();

 private:
  void on_connect(beast::error_code ec);
  void on_write(beast::error_code ec);
  void on_header(beast::error_code ec);
  void read_body();
  void on_body(beast::error_code ec);
  void consume(std::string_view bytes);
  void finish(bool ok, const std::string& kind, const std::string& detail);

  load_run& run_;
  std::size_t index_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  http::response_parser<http::buffer_body> parser_;
  std::array<char, 16 * 1024> chunk_{};
  serve::sse_parser sse_;
  std::size_t text_chunks_ = 0;
  bool finished_ = false;
};

/// The open-loop driver: one io_context, one arrival timer, sessions in flight.
class load_run {
 public:
  load_run(const serve_args& a, target t, tcp::resolver::results_type endpoints,
           std::vector<planned> plan, std::vector<double> schedule_s, bool progress)
      : args_(a),
        target_(std::move(t)),
        endpoints_(std::move(endpoints)),
        plan_(std::move(plan)),
        schedule_s_(std::move(schedule_s)),
        records_(plan_.size()),
        arrivals_(io_),
        progress_(progress && ::isatty(STDERR_FILENO) == 1) {}

  std::vector<serve::request_record> run() {
    start_ = clock_type::now();
    arrive();
    io_.run();
    if (progress_) {
      draw(true);
      std::fputc('\n', stderr);
    }
    return std::move(records_);
  }

  [[nodiscard]] double now_s() const {
    return std::chrono::duration<double>(clock_type::now() - start_).count();
  }
  [[nodiscard]] asio::io_context& io() { return io_; }
  [[nodiscard]] const target& where() const { return target_; }
  [[nodiscard]] const tcp::resolver::results_type& endpoints() const { return endpoints_; }
  [[nodiscard]] const planned& plan(std::size_t i) const { return plan_[i]; }
  [[nodiscard]] serve::request_record& record(std::size_t i) { return records_[i]; }
  [[nodiscard]] double timeout_s() const { return args_.timeout_s; }
  /// The first detail seen of each error kind, for the report.
  std::map<std::string, std::string> error_details;

  void done(std::size_t) {
    --inflight_;
    ++done_;
    if (!records_.empty() && !waiting_.empty()) {
      const auto next = waiting_.front();
      waiting_.pop_front();
      launch(next);
    }
    if (progress_) draw(false);
  }

 private:
  /// Launches every request whose time has come, then waits for the next one.
  void arrive() {
    const double now = now_s();
    while (next_ < plan_.size() && schedule_s_[next_] <= now) {
      if (inflight_ < args_.max_concurrency) {
        launch(next_);
      } else {
        waiting_.push_back(next_);
      }
      ++next_;
    }
    if (next_ == plan_.size()) return;
    arrivals_.expires_at(start_ + std::chrono::duration_cast<clock_type::duration>(
                                      std::chrono::duration<double>(schedule_s_[next_])));
    arrivals_.async_wait([this](beast::error_code ec) {
      if (!ec) arrive();
    });
  }

  void launch(std::size_t i) {
    ++inflight_;
    std::make_shared<session>(*this, i)->start();
    if (progress_) draw(false);
  }

  void draw(bool force) {
    const auto now = clock_type::now();
    if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    std::size_t failed = 0;
    for (std::size_t i = 0; i < records_.size(); ++i) {
      if (!records_[i].ok && !records_[i].error_kind.empty()) ++failed;
    }
    constexpr std::size_t width = 30;
    const std::size_t filled = plan_.empty() ? width : done_ * width / plan_.size();
    fmt::print(stderr, "\r[{:#<{}}{:.<{}}] {}/{} done, {} in flight, {} failed, {:.1f} s ", "",
               filled, "", width - filled, done_, plan_.size(), inflight_, failed, now_s());
  }

  const serve_args& args_;
  target target_;
  tcp::resolver::results_type endpoints_;
  std::vector<planned> plan_;
  std::vector<double> schedule_s_;
  std::vector<serve::request_record> records_;
  asio::io_context io_{1};
  asio::steady_timer arrivals_;
  clock_type::time_point start_;
  clock_type::time_point last_draw_;
  std::deque<std::size_t> waiting_;
  std::size_t next_ = 0;
  std::size_t inflight_ = 0;
  std::size_t done_ = 0;
  bool progress_;
};

session::session(load_run& run, std::size_t index) : run_(run), index_(index), stream_(run.io()) {}

void session::start() {
  auto& rec = run_.record(index_);
  rec.send_s = run_.now_s();
  rec.prompt_tokens = run_.plan(index_).prompt_tokens;
  req_ = {http::verb::post, run_.where().prefix + "/v1/completions", 11};
  req_.set(http::field::host, run_.where().host);
  req_.set(http::field::user_agent, "baton-bench-serve");
  if (!run_.where().authorization.empty()) {
    req_.set(http::field::authorization, run_.where().authorization);
  }
  req_.set(http::field::content_type, "application/json");
  req_.set(http::field::accept, "text/event-stream");
  req_.body() = run_.plan(index_).body;
  req_.prepare_payload();
  parser_.header_limit(max_header_bytes);
  parser_.body_limit(max_response_bytes);
  stream_.expires_after(std::chrono::duration_cast<clock_type::duration>(
      std::chrono::duration<double>(run_.timeout_s())));
  stream_.async_connect(run_.endpoints(),
                        [self = shared_from_this()](beast::error_code ec, const tcp::endpoint&) {
                          self->on_connect(ec);
                        });
}

void session::on_connect(beast::error_code ec) {
  if (ec) return finish(false, ec == beast::error::timeout ? "timeout" : "connect", ec.message());
  http::async_write(stream_, req_, [self = shared_from_this()](beast::error_code e, std::size_t) {
    self->on_write(e);
  });
}

void session::on_write(beast::error_code ec) {
  if (ec) return finish(false, ec == beast::error::timeout ? "timeout" : "write", ec.message());
  http::async_read_header(
      stream_, buffer_, parser_,
      [self = shared_from_this()](beast::error_code e, std::size_t) { self->on_header(e); });
}

void session::on_header(beast::error_code ec) {
  if (ec) return finish(false, ec == beast::error::timeout ? "timeout" : "read", ec.message());
  const auto status = parser_.get().result_int();
  if (status != 200) {
    return finish(false, fmt::format("http_{}", status),
                  fmt::format("HTTP {} {}", status, std::string(parser_.get().reason())));
  }
  if (parser_.is_done()) return finish(true, "", "");
  read_body();
}

void session::read_body() {
  parser_.get().body().data = chunk_.data();
  parser_.get().body().size = chunk_.size();
  http::async_read_some(
      stream_, buffer_, parser_,
      [self = shared_from_this()](beast::error_code e, std::size_t) { self->on_body(e); });
}

void session::on_body(beast::error_code ec) {
  if (ec == http::error::need_buffer) ec = {};
  const std::size_t got = chunk_.size() - parser_.get().body().size;
  if (got > 0) consume(std::string_view(chunk_.data(), got));
  if (finished_) return;
  if (ec) return finish(false, ec == beast::error::timeout ? "timeout" : "read", ec.message());
  if (parser_.is_done()) return finish(true, "", "");
  read_body();
}

void session::consume(std::string_view bytes) {
  const double at = run_.now_s();
  auto& rec = run_.record(index_);
  for (const auto& payload : sse_.feed(bytes)) {
    auto c = serve::parse_completion_chunk(payload);
    if (!c) return finish(false, "bad_chunk", c.error().message);
    if (c->error) return finish(false, "stream_error", *c->error);
    if (c->done) return finish(true, "", "");
    if (!c->text.empty()) {
      rec.token_s.push_back(at);
      ++text_chunks_;
    }
    if (c->completion_tokens) rec.output_tokens = *c->completion_tokens;
    if (c->prompt_tokens) rec.prompt_tokens = *c->prompt_tokens;
  }
  if (sse_.overflowed()) finish(false, "bad_chunk", "an event over the size limit");
}

void session::finish(bool ok, const std::string& kind, const std::string& detail) {
  if (finished_) return;
  finished_ = true;
  auto& rec = run_.record(index_);
  rec.end_s = run_.now_s();
  rec.ok = ok;
  rec.error_kind = kind;
  if (ok && rec.output_tokens == 0) rec.output_tokens = text_chunks_;
  if (!ok) run_.error_details.emplace(kind, detail);
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream_.socket().close(ignored);
  run_.done(index_);
}

/// The paired HTTP-vs-native latencies of --native, in milliseconds.
struct pair_results {
  std::size_t pairs = 0;                      ///< pairs where both sides completed
  std::size_t failed = 0;                     ///< pairs left out
  std::map<std::string, std::string> errors;  ///< the first detail of each side's failure
  report::summary native_ttft, http_ttft, added_ttft, native_e2e, http_e2e, added_e2e;
};

/// TTFT and E2E of one request, milliseconds.
struct one_latency {
  double ttft_ms = 0;
  double e2e_ms = 0;
};

/// `p` over HTTP on its own, as the main run sends it (a new connection).
expected<one_latency> http_once(const serve_args& a, const target& t,
                                const tcp::resolver::results_type& endpoints, const planned& p) {
  load_run one(a, t, endpoints, {p}, {0.0}, false);
  const auto records = one.run();
  const auto& rec = records.at(0);
  if (!rec.ok) {
    const auto d = one.error_details.find(rec.error_kind);
    return fail(errc::failed, fmt::format("HTTP {}: {}", rec.error_kind,
                                          d == one.error_details.end() ? "" : d->second));
  }
  const double first = rec.token_s.empty() ? rec.end_s : rec.token_s.front();
  return one_latency{(first - rec.send_s) * 1e3, (rec.end_s - rec.send_s) * 1e3};
}

/// `p` through the native router client: same prompt, max_tokens, temperature and seed.
expected<one_latency> native_once(client::router_client& c, const serve_args& a, const planned& p) {
  wire::generate_request r;
  r.prompt = p.prompt;
  r.max_tokens = static_cast<std::uint32_t>(p.max_tokens);
  r.params = {a.temperature, 1.0f, p.seed};
  r.has_seed = true;
  r.timeout_ms = static_cast<std::uint32_t>(
      std::min(a.timeout_s * 1e3, double{std::numeric_limits<std::uint32_t>::max()}));
  std::optional<clock_type::time_point> first;
  const auto start = clock_type::now();
  auto done = c.generate(std::move(r), [&first](const client::client_event& e) {
    const auto* chunk = std::get_if<wire::token_chunk>(&e);
    if (chunk != nullptr && !chunk->text.empty() && !first) first = clock_type::now();
    return true;
  });
  const auto end = clock_type::now();
  if (!done) return fail(done.error(), "native: ");
  const auto ms = [&](clock_type::time_point at) {
    return std::chrono::duration<double, std::milli>(at - start).count();
  };
  return one_latency{ms(first.value_or(end)), ms(end)};
}

/// K pairs, one request at a time, alternating which side goes first.
pair_results run_pairs(const serve_args& a, const target& t,
                       const tcp::resolver::results_type& endpoints, client::router_client& c,
                       const std::vector<planned>& plan) {
  pair_results out;
  std::vector<double> n_ttft, h_ttft, d_ttft, n_e2e, h_e2e, d_e2e;
  for (std::size_t i = 0; i < plan.size(); ++i) {
    expected<one_latency> h = fail(errc::failed, "not run");
    expected<one_latency> n = fail(errc::failed, "not run");
    if (i % 2 == 0) {
      h = http_once(a, t, endpoints, plan[i]);
      n = native_once(c, a, plan[i]);
    } else {
      n = native_once(c, a, plan[i]);
      h = http_once(a, t, endpoints, plan[i]);
    }
    if (!h) out.errors.emplace("http", h.error().to_string());
    if (!n) out.errors.emplace("native", n.error().to_string());
    if (!h || !n) {
      ++out.failed;
      continue;
    }
    ++out.pairs;
    n_ttft.push_back(n->ttft_ms);
    h_ttft.push_back(h->ttft_ms);
    d_ttft.push_back(h->ttft_ms - n->ttft_ms);
    n_e2e.push_back(n->e2e_ms);
    h_e2e.push_back(h->e2e_ms);
    d_e2e.push_back(h->e2e_ms - n->e2e_ms);
  }
  out.native_ttft = report::summarize(std::move(n_ttft));
  out.http_ttft = report::summarize(std::move(h_ttft));
  out.added_ttft = report::summarize(std::move(d_ttft));
  out.native_e2e = report::summarize(std::move(n_e2e));
  out.http_e2e = report::summarize(std::move(h_e2e));
  out.added_e2e = report::summarize(std::move(d_e2e));
  return out;
}

/// The number of tokens a llama2.c tokenizer file holds (load() needs the count).
expected<std::int32_t> tokenizer_vocab(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errc::not_found, fmt::format("{}: cannot open", path));
  std::int32_t max_len = 0;
  in.read(reinterpret_cast<char*>(&max_len), sizeof max_len);
  std::int32_t n = 0;
  for (;; ++n) {
    float score = 0;
    std::int32_t len = 0;
    if (!in.read(reinterpret_cast<char*>(&score), sizeof score)) break;
    if (!in.read(reinterpret_cast<char*>(&len), sizeof len) || len < 0 || len > max_len) {
      return fail(errc::invalid_argument, fmt::format("{}: token {} is malformed", path, n));
    }
    in.seekg(len, std::ios::cur);
  }
  return n;
}

/// A streaming completions request.
std::string request_body(const serve_args& a, const std::string& model, const std::string& prompt,
                         std::size_t max_tokens, std::uint64_t seed, std::uint32_t n) {
  nlohmann::json body = {{"model", model},
                         {"prompt", prompt},
                         {"max_tokens", max_tokens},
                         {"stream", true},
                         {"stream_options", {{"include_usage", true}}},
                         {"temperature", a.temperature},
                         {"seed", seed}};
  if (n > 1) body["n"] = n;
  if (a.ignore_eos) body["ignore_eos"] = true;
  return body.dump();
}

/// Bodies for `count` requests, drawn before the clock starts so prompt making costs
/// nothing. The first a.requests are the same whatever `count` is.
expected<std::vector<planned>> plan_requests(const serve_args& a, const std::string& model,
                                             std::uint64_t seed, std::size_t n_requests) {
  auto prompt_dist = serve::parse_length_dist(a.prompt_len);
  if (!prompt_dist) return fail(prompt_dist.error(), "--prompt-len: ");
  auto output_dist = serve::parse_length_dist(a.output_len);
  if (!output_dist) return fail(output_dist.error(), "--output-len: ");
  std::optional<engine::tokenizer> tok;
  if (!a.tokenizer.empty()) {
    auto vocab = tokenizer_vocab(a.tokenizer);
    if (!vocab) return tl::unexpected(vocab.error());
    auto loaded = engine::tokenizer::load(a.tokenizer, *vocab);
    if (!loaded) return tl::unexpected(loaded.error());
    tok.emplace(std::move(*loaded));
  }
  const auto count = [&](std::string_view text) { return tok->encode(text, false, false).size(); };
  // Lengths and prompts from their own stream, so the arrival schedule does not depend on them.
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  std::vector<planned> plan(n_requests);
  for (std::size_t i = 0; i < n_requests; ++i) {
    const std::size_t prompt_tokens = serve::sample_length(*prompt_dist, rng);
    const std::size_t output_tokens = serve::sample_length(*output_dist, rng);
    const std::string prompt = tok ? serve::exact_prompt(prompt_tokens, rng, count)
                                   : serve::synthetic_prompt(prompt_tokens, rng);
    plan[i] = {request_body(a, model, prompt, output_tokens, seed + i, a.n),
               tok ? count(prompt) : prompt_tokens, prompt, output_tokens, seed + i};
  }
  return plan;
}

/// --vs-separate: each planned request of n choices as n requests of one, choice c seeded
/// as the server seeds it (engine::choice_seed), so both runs ask for the same texts.
std::vector<planned> separate_requests(const serve_args& a, const std::string& model,
                                       const std::vector<planned>& plan) {
  std::vector<planned> out;
  out.reserve(plan.size() * a.n);
  for (const auto& p : plan) {
    for (std::uint32_t c = 0; c < a.n; ++c) {
      const std::uint64_t seed = engine::choice_seed(p.seed, c);
      out.push_back({request_body(a, model, p.prompt, p.max_tokens, seed, 1), p.prompt_tokens,
                     p.prompt, p.max_tokens, seed});
    }
  }
  return out;
}

/// Prefill work done by the cluster behind --url, from the counters its /metrics merges
/// from every node (Baton's router); each field nullopt where the server has no such
/// counter (another server).
struct prefill_work {
  std::optional<double> jobs;       ///< prompts computed: prefill nodes' and decode-local
  std::optional<double> compute_s;  ///< prefill nodes' compute time
  std::optional<double> kv_bytes;   ///< KV bytes prefill nodes wrote to decode nodes
};

prefill_work read_prefill_work(const target& t, const tcp::resolver::results_type& endpoints) {
  auto text = http_get(t, endpoints, "/metrics");
  if (!text) return {};
  const auto jobs = serve::sum_samples(*text, "baton_prefill_jobs_total");
  const auto local = serve::sum_samples(*text, "baton_decode_local_prefills_total");
  return {jobs || local ? std::optional(jobs.value_or(0) + local.value_or(0)) : std::nullopt,
          serve::sum_samples(*text, "baton_prefill_compute_seconds_sum"),
          serve::sum_samples(*text, "baton_prefill_kv_bytes_total")};
}

/// after - before, field by field (nullopt where either is).
prefill_work operator-(const prefill_work& after, const prefill_work& before) {
  const auto diff = [](std::optional<double> x, std::optional<double> y) {
    return x && y ? std::optional(*x - *y) : std::nullopt;
  };
  return {diff(after.jobs, before.jobs), diff(after.compute_s, before.compute_s),
          diff(after.kv_bytes, before.kv_bytes)};
}

/// One load run's figures and the prefill work it caused.
struct phase {
  serve::results results;
  prefill_work work;
  std::map<std::string, std::string> error_details;
  std::vector<serve::request_record> records;
  std::vector<std::size_t> max_tokens;  ///< asked for, per record
};

phase run_phase(const serve_args& a, const target& t, const tcp::resolver::results_type& endpoints,
                std::vector<planned> plan, std::vector<double> schedule_s) {
  const auto before = read_prefill_work(t, endpoints);
  std::vector<std::size_t> max_tokens;
  for (const auto& p : plan) max_tokens.push_back(p.max_tokens);
  load_run run(a, t, endpoints, std::move(plan), std::move(schedule_s), true);
  auto records = run.run();
  phase out{serve::compute_results(records, {a.slo_ttft_ms, a.slo_tpot_ms}),
            read_prefill_work(t, endpoints) - before, std::move(run.error_details),
            std::move(records), std::move(max_tokens)};
  return out;
}

nlohmann::ordered_json or_null(const report::summary& s, double v) {
  return s.count == 0 ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(v);
}

template <class T>
nlohmann::ordered_json opt(const std::optional<T>& v) {
  return v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json(nullptr);
}

nlohmann::ordered_json work_json(const prefill_work& w, nlohmann::ordered_json j = {}) {
  j["prefill_jobs"] = opt(w.jobs);
  j["prefill_compute_s"] = opt(w.compute_s);
  j["prefill_kv_bytes"] = opt(w.kv_bytes);
  return j;
}

nlohmann::ordered_json to_json(const serve_args& a, const std::string& model, std::uint64_t seed,
                               double rate, const phase& main, const std::optional<phase>& apart,
                               const std::optional<pair_results>& pr) {
  const serve::results& r = main.results;
  nlohmann::ordered_json j = {{"url", a.url},
                              {"model", model},
                              {"seed", seed},
                              {"rate_req_s", std::isinf(rate) ? nlohmann::ordered_json(nullptr)
                                                              : nlohmann::ordered_json(rate)},
                              {"requests", r.requests},
                              {"completed", r.completed},
                              {"failed", r.requests - r.completed},
                              {"errors", r.errors},
                              {"duration_s", r.duration_s},
                              {"max_concurrency", a.max_concurrency},
                              {"prompt_len", a.prompt_len},
                              {"output_len", a.output_len},
                              {"prompt_tokens_exact", !a.tokenizer.empty()},
                              {"prompt_tokens_mean", r.prompt_tokens_mean},
                              {"output_tokens_mean", r.output_tokens_mean},
                              {"request_throughput_req_s", r.request_throughput_req_s},
                              {"output_throughput_tok_s", r.output_throughput_tok_s},
                              {"total_throughput_tok_s", r.total_throughput_tok_s}};
  for (const auto& [name, s] : {std::pair{"ttft", r.ttft}, std::pair{"tpot", r.tpot},
                                std::pair{"itl", r.itl}, std::pair{"e2e", r.e2e}}) {
    j[fmt::format("{}_ms_mean", name)] = or_null(s, s.mean);
    j[fmt::format("{}_ms_p50", name)] = or_null(s, s.p50);
    j[fmt::format("{}_ms_p90", name)] = or_null(s, s.p90);
    j[fmt::format("{}_ms_p99", name)] = or_null(s, s.p99);
  }
  j["slo_ttft_ms"] = opt(a.slo_ttft_ms);
  j["slo_tpot_ms"] = opt(a.slo_tpot_ms);
  j["goodput_req_s"] = opt(r.goodput_req_s);
  j["goodput_fraction"] = opt(r.goodput_fraction);
  j["native_pairs"] = pr ? nlohmann::ordered_json(pr->pairs) : nlohmann::ordered_json(nullptr);
  const report::summary none;
  for (const auto& [name, native, via_http, added] :
       {std::tuple{"ttft", pr ? pr->native_ttft : none, pr ? pr->http_ttft : none,
                   pr ? pr->added_ttft : none},
        std::tuple{"e2e", pr ? pr->native_e2e : none, pr ? pr->http_e2e : none,
                   pr ? pr->added_e2e : none}}) {
    j[fmt::format("native_{}_ms_p50", name)] = or_null(native, native.p50);
    j[fmt::format("native_{}_ms_p90", name)] = or_null(native, native.p90);
    j[fmt::format("http_pair_{}_ms_p50", name)] = or_null(via_http, via_http.p50);
    j[fmt::format("http_pair_{}_ms_p90", name)] = or_null(via_http, via_http.p90);
    j[fmt::format("http_added_{}_ms_p50", name)] = or_null(added, added.p50);
  }
  j["n"] = a.n;
  j["temperature"] = a.temperature;
  j = work_json(main.work, std::move(j));
  j["separate"] = nullptr;
  if (apart) {
    const auto& s = apart->results;
    j["separate"] = work_json(apart->work, {{"requests", s.requests},
                                            {"completed", s.completed},
                                            {"duration_s", s.duration_s},
                                            {"output_throughput_tok_s", s.output_throughput_tok_s},
                                            {"ttft_ms_p50", or_null(s.ttft, s.ttft.p50)},
                                            {"ttft_ms_p90", or_null(s.ttft, s.ttft.p90)},
                                            {"e2e_ms_p50", or_null(s.e2e, s.e2e.p50)},
                                            {"e2e_ms_p90", or_null(s.e2e, s.e2e.p90)}});
  }
  return j;
}

std::string work_text(std::optional<double> v, const char* format) {
  return v ? fmt::format(fmt::runtime(format), *v) : std::string("n/a");
}

/// --vs-separate: the run with n choices per request beside the run of n requests each.
void print_separate(const serve_args& a, const phase& main, const phase& apart) {
  fmt::print("n = {} vs {} separate requests of the same prompt (same seeds per choice)\n", a.n,
             a.n);
  fmt::print("{:<26} {:>14} {:>14}\n", "", fmt::format("n = {}", a.n),
             fmt::format("{} x n = 1", a.n));
  const auto row = [](const char* name, const std::string& x, const std::string& y) {
    fmt::print("{:<26} {:>14} {:>14}\n", name, x, y);
  };
  const auto& m = main.results;
  const auto& s = apart.results;
  row("HTTP requests", fmt::format("{}/{}", m.completed, m.requests),
      fmt::format("{}/{}", s.completed, s.requests));
  row("prefill jobs", work_text(main.work.jobs, "{:.0f}"), work_text(apart.work.jobs, "{:.0f}"));
  row("prefill compute s", work_text(main.work.compute_s, "{:.3f}"),
      work_text(apart.work.compute_s, "{:.3f}"));
  row("KV bytes sent", work_text(main.work.kv_bytes, "{:.0f}"),
      work_text(apart.work.kv_bytes, "{:.0f}"));
  row("duration s", fmt::format("{:.2f}", m.duration_s), fmt::format("{:.2f}", s.duration_s));
  row("output tok/s", fmt::format("{:.1f}", m.output_throughput_tok_s),
      fmt::format("{:.1f}", s.output_throughput_tok_s));
  row("TTFT p50 ms", fmt::format("{:.2f}", m.ttft.p50), fmt::format("{:.2f}", s.ttft.p50));
  row("E2E p50 ms", fmt::format("{:.2f}", m.e2e.p50), fmt::format("{:.2f}", s.e2e.p50));
}

void print_table(const serve_args& a, const std::string& model, std::uint64_t seed,
                 const phase& main, const std::optional<pair_results>& pr) {
  const serve::results& r = main.results;
  const auto& details = main.error_details;
  const prefill_work& w = main.work;
  fmt::print("bench serve {} model {} seed {}\n", a.url, model, seed);
  fmt::print("{} requests at {} req/s (Poisson, open loop), max concurrency {}\n", r.requests,
             a.rate, a.max_concurrency);
  fmt::print("prompt {} tokens{}, output {} tokens (max_tokens{})\n", a.prompt_len,
             a.tokenizer.empty() ? " (approximate: words; exact with --tokenizer)" : " (exact)",
             a.output_len, a.ignore_eos ? ", ignore_eos" : "");
  if (a.n > 1) fmt::print("n = {} choices per request, temperature {}\n", a.n, a.temperature);
  fmt::print("completed {} of {} in {:.2f} s\n", r.completed, r.requests, r.duration_s);
  for (const auto& [kind, count] : r.errors) {
    const auto d = details.find(kind);
    fmt::print("  failed {:<14} {:6}  ({})\n", kind, count, d == details.end() ? "" : d->second);
  }
  fmt::print("{:<10} {:>10} {:>10} {:>10} {:>10} {:>8}\n", "ms", "mean", "p50", "p90", "p99",
             "samples");
  for (const auto& [name, s] : {std::pair{"TTFT", r.ttft}, std::pair{"TPOT", r.tpot},
                                std::pair{"ITL", r.itl}, std::pair{"E2E", r.e2e}}) {
    fmt::print("{:<10} {:10.2f} {:10.2f} {:10.2f} {:10.2f} {:8}\n", name, s.mean, s.p50, s.p90,
               s.p99, s.count);
  }
  fmt::print("request throughput  {:10.2f} req/s\n", r.request_throughput_req_s);
  fmt::print("output throughput   {:10.2f} tok/s\n", r.output_throughput_tok_s);
  fmt::print("total throughput    {:10.2f} tok/s (prompt + output)\n", r.total_throughput_tok_s);
  fmt::print("mean tokens         {:10.1f} prompt, {:.1f} output\n", r.prompt_tokens_mean,
             r.output_tokens_mean);
  if (r.goodput_req_s) {
    fmt::print(
        "goodput             {:10.2f} req/s ({:.3f} of requests) with TTFT <= {} ms, "
        "TPOT <= {} ms\n",
        *r.goodput_req_s, *r.goodput_fraction,
        a.slo_ttft_ms ? fmt::format("{}", *a.slo_ttft_ms) : "any",
        a.slo_tpot_ms ? fmt::format("{}", *a.slo_tpot_ms) : "any");
  }
  if (w.jobs) {
    fmt::print("prefill work        {} jobs, {} s compute, {} KV bytes sent (from /metrics)\n",
               work_text(w.jobs, "{:.0f}"), work_text(w.compute_s, "{:.3f}"),
               work_text(w.kv_bytes, "{:.0f}"));
  }
  if (!pr) return;
  fmt::print("HTTP vs native {}: {} pairs one at a time ({} failed)\n", a.native, pr->pairs,
             pr->failed);
  for (const auto& [side, detail] : pr->errors) fmt::print("  failed {:<8} {}\n", side, detail);
  fmt::print("{:<10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12}\n", "ms", "native p50", "native p90",
             "HTTP p50", "HTTP p90", "added p50", "added p90");
  for (const auto& [name, native, via_http, added] :
       {std::tuple{"TTFT", pr->native_ttft, pr->http_ttft, pr->added_ttft},
        std::tuple{"E2E", pr->native_e2e, pr->http_e2e, pr->added_e2e}}) {
    fmt::print("{:<10} {:10.2f} {:10.2f} {:10.2f} {:10.2f} {:12.2f} {:12.2f}\n", name, native.p50,
               native.p90, via_http.p50, via_http.p90, added.p50, added.p90);
  }
  fmt::print("(added: per-pair HTTP minus native)\n");
}

/// The arrival rate of --rate (a number > 0 or "inf"), after checking every argument.
expected<double> checked_rate(const serve_args& a) {
  double rate = std::numeric_limits<double>::infinity();
  if (a.rate != "inf") {
    char* end = nullptr;
    rate = std::strtod(a.rate.c_str(), &end);
    if (end != a.rate.c_str() + a.rate.size() || !(rate > 0) || std::isinf(rate)) {
      return fail(errc::invalid_argument,
                  fmt::format("--rate '{}': expected a number > 0 or inf", a.rate));
    }
  }
  if (a.requests == 0 || a.requests > max_requests) {
    return fail(errc::invalid_argument, fmt::format("--requests must be 1..{}", max_requests));
  }
  if (a.max_concurrency == 0) return fail(errc::invalid_argument, "--max-concurrency must be >= 1");
  if (!(a.timeout_s > 0)) return fail(errc::invalid_argument, "--timeout-s must be > 0");
  if (a.n == 0 || a.n > wire::max_choices) {
    return fail(errc::invalid_argument, fmt::format("--n must be 1..{}", wire::max_choices));
  }
  if (a.vs_separate && a.n < 2) return fail(errc::invalid_argument, "--vs-separate needs --n >= 2");
  if (!(a.temperature >= 0 && a.temperature <= 2)) {
    return fail(errc::invalid_argument, "--temperature must be in [0, 2]");
  }
  if (!a.native.empty() && (a.pairs == 0 || a.pairs > max_requests)) {
    return fail(errc::invalid_argument, fmt::format("--pairs must be 1..{}", max_requests));
  }
  return rate;
}

int run_serve(const serve_args& a) {
  const auto fail_with = [](const std::string& what) {
    fmt::print(stderr, "baton bench serve: {}\n", what);
    return 1;
  };
  auto t = parse_url(a.url);
  if (t && !a.api_key.empty()) t->authorization = "Bearer " + a.api_key;
  if (!t) return fail_with(t.error().to_string());
  const auto checked = checked_rate(a);
  if (!checked) return fail_with(checked.error().message);
  const double rate = *checked;
  // No seed means the time; it is printed so the run can be replayed.
  const std::uint64_t seed = a.seed.value_or(static_cast<std::uint64_t>(
      std::chrono::system_clock::now().time_since_epoch() / std::chrono::microseconds(1)));
  asio::io_context resolve_io;
  tcp::resolver resolver(resolve_io);
  beast::error_code ec;
  auto endpoints = resolver.resolve(t->host, t->port, ec);
  if (ec) return fail_with(fmt::format("{}: {}", a.url, ec.message()));
  std::string model = a.model;
  if (model.empty()) {
    auto m = first_model(*t, endpoints);
    if (!m) return fail_with(m.error().to_string());
    model = *m;
  }
  // The pairs' requests come after the main run's, so those do not depend on --native.
  auto plan = plan_requests(a, model, seed, a.requests + (a.native.empty() ? 0 : a.pairs));
  if (!plan) return fail_with(plan.error().to_string());
  std::vector<planned> pair_plan(std::make_move_iterator(plan->begin() + a.requests),
                                 std::make_move_iterator(plan->end()));
  plan->resize(a.requests);
  // Connected before the main run, so a wrong --native fails before it.
  std::unique_ptr<client::router_client> native;
  if (!a.native.empty()) {
    client::client_options co;
    co.routers = {a.native};
    auto c = client::router_client::connect(std::move(co));
    if (!c) return fail_with(fmt::format("--native {}: {}", a.native, c.error().to_string()));
    native = std::move(*c);
  }
  fmt::print(stderr, "bench serve: {} requests to {} (model {}), seed {}\n", a.requests, a.url,
             model, seed);
  const auto schedule = serve::poisson_schedule_s(rate, a.requests, seed);
  const auto apart_plan =
      a.vs_separate ? separate_requests(a, model, *plan) : std::vector<planned>{};
  const phase main = run_phase(a, *t, endpoints, std::move(*plan), schedule);
  const serve::results& r = main.results;
  std::optional<phase> apart;
  if (a.vs_separate) {
    // The same arrivals: a request's n copies all go at its time.
    std::vector<double> copies;
    for (const double at : schedule) copies.insert(copies.end(), a.n, at);
    fmt::print(stderr, "bench serve: the same {} requests as {} of n = 1\n", a.requests,
               apart_plan.size());
    apart = run_phase(a, *t, endpoints, apart_plan, std::move(copies));
  }
  std::optional<pair_results> pr;
  if (native) {
    fmt::print(stderr, "bench serve: {} HTTP vs native pairs ({})\n", a.pairs, a.native);
    pr = run_pairs(a, *t, endpoints, *native, pair_plan);
  }
  if (!a.plot.empty()) {
    std::ofstream out(a.plot, std::ios::binary);
    out << serve::render_svg(r,
                             fmt::format("bench serve {} ({}), {} requests at {} req/s, seed {}",
                                         a.url, model, a.requests, a.rate, seed),
                             {a.slo_ttft_ms, a.slo_tpot_ms});
    if (!out) return fail_with(fmt::format("--plot {}: cannot write", a.plot));
  }
  if (!a.trace_out.empty()) {
    // What was sent, as `baton sim` replays it: the send time, the prompt the server
    // counted and the tokens it produced (asked for, when the request failed).
    std::ofstream out(a.trace_out, std::ios::binary);
    for (std::size_t i = 0; i < main.records.size(); ++i) {
      const auto& rec = main.records[i];
      out << sim::trace_line(
                 {rec.send_s, static_cast<std::uint32_t>(rec.prompt_tokens),
                  static_cast<std::uint32_t>(rec.ok && rec.output_tokens > 0 ? rec.output_tokens
                                                                             : main.max_tokens[i]),
                  0})
          << '\n';
    }
    if (!out) return fail_with(fmt::format("--trace-out {}: cannot write", a.trace_out));
  }
  const auto j = to_json(a, model, seed, rate, main, apart, pr);
  if (!a.json) {
    print_table(a, model, seed, main, pr);
    if (apart) print_separate(a, main, *apart);
    if (!a.plot.empty()) fmt::print("plot                {}\n", a.plot);
  }
  fmt::print("{}\n", j.dump());
  return r.completed == 0 || (apart && apart->results.completed == 0) || (pr && pr->pairs == 0) ? 1
                                                                                                : 0;
}

}  // namespace

void add_bench_serve_command(CLI::App& app, int& exit_code) {
  static serve_args args;
  auto* cmd = bench_command(app).add_subcommand(
      "serve",
      "Open-loop serving benchmark of any OpenAI-compatible endpoint: TTFT, TPOT, "
      "ITL, E2E, throughput, goodput");
  cmd->add_option("--url", args.url, "Server base URL, http://HOST:PORT[/PREFIX]")->required();
  cmd->add_option("--api-key", args.api_key,
                  "Sent as Authorization: Bearer KEY (a router with [router] api_keys)");
  cmd->add_option("--rate", args.rate, "Poisson arrival rate, requests/s, or inf")
      ->capture_default_str();
  cmd->add_option("--requests", args.requests, "Requests to send")->capture_default_str();
  cmd->add_option("--prompt-len", args.prompt_len, "Prompt tokens: N, uniform:A:B, normal:MEAN:SD")
      ->capture_default_str();
  cmd->add_option("--output-len", args.output_len, "max_tokens: N, uniform:A:B, normal:MEAN:SD")
      ->capture_default_str();
  cmd->add_option("--seed", args.seed, "Seed of arrivals, lengths and prompts (default: time)");
  cmd->add_option("--slo-ttft-ms", args.slo_ttft_ms, "Goodput SLO on time to first token");
  cmd->add_option("--slo-tpot-ms", args.slo_tpot_ms, "Goodput SLO on time per output token");
  cmd->add_option("--model", args.model, "Model name (default: first of GET /v1/models)");
  cmd->add_option("--tokenizer", args.tokenizer,
                  "llama2.c tokenizer: prompts of exactly --prompt-len tokens");
  cmd->add_option("--max-concurrency", args.max_concurrency, "Requests in flight at most")
      ->capture_default_str();
  cmd->add_option("--timeout-s", args.timeout_s, "Deadline of each request")->capture_default_str();
  cmd->add_flag("--ignore-eos", args.ignore_eos,
                "Send \"ignore_eos\": true (vLLM/SGLang) so outputs reach max_tokens");
  cmd->add_flag("--json", args.json, "Print only the JSON line");
  cmd->add_option("--plot", args.plot, "Write CDFs of TTFT, TPOT, ITL and E2E to FILE.svg");
  cmd->add_option("--trace-out", args.trace_out,
                  "Write what was sent as a JSON-lines trace that `baton sim` replays");
  cmd->add_option("--native", args.native,
                  "The router's native port (HOST:PORT): also measure HTTP's added latency");
  cmd->add_option("--pairs", args.pairs, "HTTP vs native request pairs, with --native")
      ->capture_default_str();
  cmd->add_option("--n", args.n, "Choices per request (OpenAI's n)")->capture_default_str();
  cmd->add_option("--temperature", args.temperature, "Sampling temperature of every request")
      ->capture_default_str();
  cmd->add_flag("--vs-separate", args.vs_separate,
                "After the run, send each request again as n separate requests and compare "
                "prefill work and throughput");
  cmd->callback([&exit_code] { exit_code = run_serve(args); });
}

}  // namespace baton::bench
