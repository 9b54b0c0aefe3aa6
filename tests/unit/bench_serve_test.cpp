// `baton bench serve`: its network-free parts (tools/serve_load.hpp), then the real binary
// (BATON_BINARY) against a fake OpenAI-compatible SSE server on 127.0.0.1 in this process,
// and with --native against a fake router native port (client::native_server).
#include "tools/serve_load.hpp"

#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "client/native_server.hpp"
#include "engine/tokenizer.hpp"

namespace {

namespace serve = baton::tools::serve;

TEST(LengthDist, ParsesTheThreeShapes) {
  auto fixed = serve::parse_length_dist("128");
  ASSERT_TRUE(fixed) << fixed.error().to_string();
  EXPECT_EQ(fixed->shape, serve::length_dist::kind::fixed);
  EXPECT_EQ(fixed->a, 128);
  auto uniform = serve::parse_length_dist("uniform:10:20");
  ASSERT_TRUE(uniform);
  EXPECT_EQ(uniform->shape, serve::length_dist::kind::uniform);
  EXPECT_EQ(uniform->a, 10);
  EXPECT_EQ(uniform->b, 20);
  auto normal = serve::parse_length_dist("normal:100:12.5");
  ASSERT_TRUE(normal);
  EXPECT_EQ(normal->shape, serve::length_dist::kind::normal);
  EXPECT_EQ(normal->b, 12.5);
  EXPECT_EQ(normal->text, "normal:100:12.5");
}

TEST(LengthDist, RejectsMalformedInput) {
  for (const char* bad : {"", "0", "-3", "1.5", "abc", "uniform:5:3", "uniform:0:3", "uniform:1",
                          "uniform:1:x", "normal:10", "normal:10:-1", "normal:0:1", "gauss:1:2",
                          "uniform:1:2:3", "uniform:1.5:3", "2000000", "nan"}) {
    auto d = serve::parse_length_dist(bad);
    ASSERT_FALSE(d) << bad;
    EXPECT_EQ(d.error().code, baton::errc::invalid_argument) << bad;
    EXPECT_NE(d.error().message.find("uniform:A:B"), std::string::npos) << d.error().message;
  }
}

TEST(LengthDist, SamplesStayInRange) {
  std::mt19937_64 rng(7);
  const auto fixed = *serve::parse_length_dist("33");
  const auto uniform = *serve::parse_length_dist("uniform:5:9");
  const auto normal = *serve::parse_length_dist("normal:2:50");
  std::vector<int> seen(10, 0);
  double sum = 0;
  for (int i = 0; i < 5000; ++i) {
    EXPECT_EQ(serve::sample_length(fixed, rng), 33u);
    const auto u = serve::sample_length(uniform, rng);
    ASSERT_GE(u, 5u);
    ASSERT_LE(u, 9u);
    ++seen[u];
    EXPECT_GE(serve::sample_length(normal, rng), 1u);  // clamped
    sum +=
        static_cast<double>(serve::sample_length(*serve::parse_length_dist("normal:200:20"), rng));
  }
  for (int v = 5; v <= 9; ++v) EXPECT_GT(seen[v], 800) << v;  // both ends included
  EXPECT_NEAR(sum / 5000, 200, 2);
}

TEST(PoissonSchedule, IsSeededAndHasTheRightMean) {
  const auto a = serve::poisson_schedule_s(50, 20000, 42);
  const auto b = serve::poisson_schedule_s(50, 20000, 42);
  const auto c = serve::poisson_schedule_s(50, 20000, 43);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  ASSERT_EQ(a.size(), 20000u);
  EXPECT_EQ(a.front(), 0);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  // Mean gap 1/rate = 20 ms; the standard error over 20k gaps is 0.7%.
  EXPECT_NEAR(a.back() / 19999.0, 0.02, 0.02 * 0.03);
  // Exponential gaps: the standard deviation equals the mean.
  double sq = 0;
  for (std::size_t i = 1; i < a.size(); ++i) sq += std::pow(a[i] - a[i - 1] - 0.02, 2);
  EXPECT_NEAR(std::sqrt(sq / 19999.0), 0.02, 0.02 * 0.05);
}

TEST(PoissonSchedule, InfiniteRateSendsEverythingAtOnce) {
  const auto s = serve::poisson_schedule_s(std::numeric_limits<double>::infinity(), 5, 1);
  EXPECT_EQ(s, std::vector<double>(5, 0.0));
}

TEST(Percentile, InterpolatesLikeNumpy) {
  std::vector<double> v(10);
  std::iota(v.begin(), v.end(), 1.0);  // 1..10
  EXPECT_DOUBLE_EQ(serve::percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(serve::percentile(v, 50), 5.5);
  EXPECT_DOUBLE_EQ(serve::percentile(v, 90), 9.1);
  EXPECT_DOUBLE_EQ(serve::percentile(v, 99), 9.91);
  EXPECT_DOUBLE_EQ(serve::percentile(v, 100), 10);
  EXPECT_DOUBLE_EQ(serve::percentile({}, 50), 0);
  EXPECT_DOUBLE_EQ(serve::percentile({4.0}, 99), 4);
  const auto s = serve::summarize({10, 1, 9, 2, 8, 3, 7, 4, 6, 5});  // unsorted input
  EXPECT_EQ(s.count, 10u);
  EXPECT_DOUBLE_EQ(s.mean, 5.5);
  EXPECT_DOUBLE_EQ(s.p50, 5.5);
  EXPECT_DOUBLE_EQ(s.p90, 9.1);
  EXPECT_DOUBLE_EQ(s.p99, 9.91);
}

const std::string sample_stream =
    ": keep-alive comment\r\n"
    "data: {\"choices\":[{\"text\":\"Once\"}]}\r\n\r\n"
    "event: message\n"
    "data: {\"choices\":[{\"text\":\" upon\"}]}\n\n"
    "data: {\"choices\":[],\n"
    "data: \"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n"
    "data: [DONE]\n\n";

TEST(SseParser, SplitsEventsAcrossAnyChunkBoundary) {
  serve::sse_parser whole;
  const auto expected = whole.feed(sample_stream);
  ASSERT_EQ(expected.size(), 4u);
  EXPECT_EQ(expected[0], R"({"choices":[{"text":"Once"}]})");
  EXPECT_EQ(expected[2],
            "{\"choices\":[],\n\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}");
  EXPECT_EQ(expected[3], "[DONE]");
  for (std::size_t step = 1; step <= 7; ++step) {
    serve::sse_parser p;
    std::vector<std::string> got;
    for (std::size_t at = 0; at < sample_stream.size(); at += step) {
      for (auto& e : p.feed(std::string_view(sample_stream).substr(at, step))) got.push_back(e);
    }
    EXPECT_EQ(got, expected) << "step " << step;
  }
}

TEST(SseParser, WaitsForTheBlankLine) {
  serve::sse_parser p;
  EXPECT_TRUE(p.feed("data: {\"a\":1}\n").empty());
  EXPECT_TRUE(p.feed("data:x").empty());
  const auto events = p.feed("\n\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], "{\"a\":1}\nx");
  EXPECT_FALSE(p.overflowed());
}

TEST(CompletionChunk, ReadsTextUsageDoneAndErrors) {
  auto c = serve::parse_completion_chunk(R"({"choices":[{"index":0,"text":" hi"}],"usage":null})");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->text, " hi");
  EXPECT_FALSE(c->completion_tokens);
  c = serve::parse_completion_chunk(R"({"choices":[{"delta":{"content":"yo"}}]})");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->text, "yo");
  c = serve::parse_completion_chunk(
      R"({"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":12,"total_tokens":19}})");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->text, "");
  EXPECT_EQ(c->completion_tokens, 12u);
  EXPECT_EQ(c->prompt_tokens, 7u);
  c = serve::parse_completion_chunk("[DONE] ");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->done);
  c = serve::parse_completion_chunk(R"({"error":{"message":"overloaded","code":503}})");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->error, "overloaded");
  EXPECT_FALSE(serve::parse_completion_chunk("{\"choices\":"));
  EXPECT_FALSE(serve::parse_completion_chunk("[1,2]"));
}

TEST(ComputeResults, KnownRecords) {
  // Request 0: sent at 0, tokens at 0.1, 0.12, 0.16, ends at 0.16: TTFT 100, ITL 20 and 40,
  // TPOT (160 - 100) / 2 = 30. Request 1: sent at 1, one token at 1.5, ends 1.5.
  // Request 2 failed.
  std::vector<serve::request_record> recs(3);
  recs[0] = {0.0, {0.1, 0.12, 0.16}, 0.16, 3, 10, true, ""};
  recs[1] = {1.0, {1.5}, 1.5, 1, 20, true, ""};
  recs[2] = {1.2, {}, 2.0, 0, 0, false, "http_503"};
  auto r = serve::compute_results(recs, {});
  EXPECT_EQ(r.requests, 3u);
  EXPECT_EQ(r.completed, 2u);
  EXPECT_EQ(r.errors.at("http_503"), 1u);
  EXPECT_DOUBLE_EQ(r.duration_s, 2.0);
  ASSERT_EQ(r.ttft_ms.size(), 2u);
  EXPECT_NEAR(r.ttft_ms[0], 100, 1e-9);
  EXPECT_NEAR(r.ttft_ms[1], 500, 1e-9);
  ASSERT_EQ(r.tpot_ms.size(), 1u);
  EXPECT_NEAR(r.tpot_ms[0], 30, 1e-9);
  ASSERT_EQ(r.itl_ms.size(), 2u);
  EXPECT_NEAR(r.itl.mean, 30, 1e-9);
  EXPECT_NEAR(r.e2e.p50, 330, 1e-9);
  EXPECT_DOUBLE_EQ(r.request_throughput_req_s, 1.0);
  EXPECT_DOUBLE_EQ(r.output_throughput_tok_s, 2.0);
  EXPECT_DOUBLE_EQ(r.total_throughput_tok_s, 17.0);
  EXPECT_DOUBLE_EQ(r.prompt_tokens_mean, 15.0);
  EXPECT_FALSE(r.goodput_req_s);
  // Only request 0 meets TTFT <= 200 ms; a one-token request has no TPOT to miss.
  r = serve::compute_results(recs, {200.0, 35.0});
  ASSERT_TRUE(r.goodput_req_s);
  EXPECT_DOUBLE_EQ(*r.goodput_req_s, 0.5);
  EXPECT_DOUBLE_EQ(*r.goodput_fraction, 1.0 / 3);
  r = serve::compute_results(recs, {std::nullopt, 25.0});
  EXPECT_DOUBLE_EQ(*r.goodput_fraction, 1.0 / 3);  // request 1 only
}

TEST(Prompts, SyntheticPromptsAreSeededWords) {
  std::mt19937_64 a(3), b(3);
  const auto p = serve::synthetic_prompt(50, a);
  EXPECT_EQ(p, serve::synthetic_prompt(50, b));
  EXPECT_EQ(std::count(p.begin(), p.end(), ' '), 49);
  EXPECT_NE(p, serve::synthetic_prompt(50, a));
}

TEST(Prompts, ExactPromptsWithAToyCounter) {
  // A toy tokenizer: one token per 3 characters, rounded up.
  const auto count = [](std::string_view s) { return (s.size() + 2) / 3; };
  std::mt19937_64 rng(1);
  for (const std::size_t n : {1u, 2u, 7u, 64u, 300u}) {
    EXPECT_EQ(count(serve::exact_prompt(n, rng, count)), n) << n;
  }
}

TEST(Prompts, ExactPromptsWithTheLlama2cTokenizer) {
  auto tok =
      baton::engine::tokenizer::load(std::string(BATON_SHARED_MODELS_DIR) + "/tok512.bin", 512);
  ASSERT_TRUE(tok) << tok.error().to_string();
  const auto count = [&](std::string_view s) { return tok->encode(s, false, false).size(); };
  std::mt19937_64 rng(5);
  for (const std::size_t n : {1u, 16u, 100u, 256u}) {
    EXPECT_EQ(count(serve::exact_prompt(n, rng, count)), n) << n;
  }
}

std::size_t occurrences(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(Svg, IsWellFormedWithFourPanels) {
  std::vector<serve::request_record> recs;
  for (int i = 0; i < 40; ++i) {
    const double t = i * 0.1;
    recs.push_back({t, {t + 0.05 + i * 0.001, t + 0.07, t + 0.1}, t + 0.1, 3, 8, true, ""});
  }
  const auto r = serve::compute_results(recs, {});
  const auto svg = serve::render_svg(r, "a <title> & more", {60.0, 1e6});
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  for (const char* id : {"panel-ttft", "panel-tpot", "panel-itl", "panel-e2e"}) {
    EXPECT_EQ(occurrences(svg, fmt::format("<g id=\"{}\">", id)), 1u) << id;
  }
  EXPECT_EQ(occurrences(svg, "<g "), occurrences(svg, "</g>"));
  EXPECT_EQ(occurrences(svg, "<text"), occurrences(svg, "</text>"));
  EXPECT_EQ(occurrences(svg, "<polyline"), 4u);
  EXPECT_NE(svg.find("a &lt;title&gt; &amp; more"), std::string::npos);
  EXPECT_EQ(occurrences(svg, ">SLO 60.0<"), 1u);             // on the TTFT panel
  EXPECT_EQ(occurrences(svg, ">SLO 1000000 &#8594;<"), 1u);  // TPOT's is off the scale
  EXPECT_EQ(svg.find("e+"), std::string::npos);              // no exponents in labels
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
  // No samples: the panels still draw, and say so.
  const auto empty = serve::render_svg(serve::compute_results({}, {}), "none");
  EXPECT_EQ(occurrences(empty, "no samples"), 4u);
  EXPECT_EQ(occurrences(empty, "<polyline"), 0u);
}

// ---- the real binary against a fake server ---------------------------------------------

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

/// A tiny OpenAI-compatible server: GET /v1/models, and POST /v1/completions streamed as
/// chunked SSE (20 ms to the first token, then 5 ms per token, every event split across two
/// HTTP chunks). The `fail_nth` completion request (1-based) gets HTTP 503. A thread per
/// connection; all joined on destruction.
class fake_openai_server {
 public:
  explicit fake_openai_server(int fail_nth)
      : acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)), fail_nth_(fail_nth) {
    accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~fake_openai_server() {
    stopping_ = true;
    beast::error_code ignored;
    tcp::socket wake(io_);
    wake.connect(acceptor_.local_endpoint(), ignored);  // unblocks accept()
    accept_thread_.join();
    std::lock_guard lock(mutex_);
    for (auto& t : workers_) t.join();
  }
  [[nodiscard]] std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  [[nodiscard]] std::vector<nlohmann::json> bodies() {
    std::lock_guard lock(mutex_);
    return bodies_;
  }

 private:
  void accept_loop() {
    for (;;) {
      beast::error_code ec;
      tcp::socket s(io_);
      acceptor_.accept(s, ec);
      if (stopping_) return;
      if (ec) continue;
      std::lock_guard lock(mutex_);
      workers_.emplace_back([this, sock = std::move(s)]() mutable { handle(std::move(sock)); });
    }
  }

  static void send(tcp::socket& s, std::string_view bytes, beast::error_code& ec) {
    if (!ec) asio::write(s, asio::buffer(bytes.data(), bytes.size()), ec);
  }

  void handle(tcp::socket s) {
    beast::flat_buffer buffer;
    http::request<http::string_body> req;
    beast::error_code ec;
    http::read(s, buffer, req, ec);
    if (ec) return;
    if (req.method() == http::verb::get && req.target() == "/v1/models") {
      http::response<http::string_body> res(http::status::ok, 11);
      res.set(http::field::content_type, "application/json");
      res.body() = R"({"object":"list","data":[{"id":"fake-model","object":"model"}]})";
      res.prepare_payload();
      http::write(s, res, ec);
      return;
    }
    const auto body = nlohmann::json::parse(req.body(), nullptr, false);
    {
      std::lock_guard lock(mutex_);
      bodies_.push_back(body);
    }
    if (++completions_ == fail_nth_ || req.target() != "/v1/completions" || body.is_discarded()) {
      send(s, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
           ec);
      return;
    }
    send(s,
         "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
         "Connection: close\r\n\r\n",
         ec);
    const auto chunk = [&](std::string_view data) {
      send(s, fmt::format("{:x}\r\n{}\r\n", data.size(), data), ec);
    };
    const auto event = [&](const nlohmann::json& j) {
      const std::string e = "data: " + j.dump() + "\n\n";
      chunk(std::string_view(e).substr(0, e.size() / 2));
      chunk(std::string_view(e).substr(e.size() / 2));
    };
    const int n = body.value("max_tokens", 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    for (int i = 0; i < n && !ec; ++i) {
      if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      event({{"id", "cmpl-1"},
             {"object", "text_completion"},
             {"choices", {{{"index", 0}, {"text", fmt::format(" w{}", i)}}}}});
    }
    event({{"choices", nlohmann::json::array()},
           {"usage", {{"prompt_tokens", 9}, {"completion_tokens", n}, {"total_tokens", n + 9}}}});
    chunk("data: [DONE]\n\n");
    send(s, "0\r\n\r\n", ec);
  }

  asio::io_context io_;
  tcp::acceptor acceptor_;
  int fail_nth_;
  std::atomic<int> completions_{0};
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::mutex mutex_;
  std::vector<std::thread> workers_;
  std::vector<nlohmann::json> bodies_;
};

struct run_result {
  int exit_code = -1;
  std::string out;
};

/// Runs the baton binary with `args` through /bin/sh; captures stdout only.
run_result run_baton(const std::string& args) {
  const std::string command = fmt::format("'{}' {}", BATON_BINARY, args);
  run_result result;
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.out.append(buffer, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

TEST(BenchServeCli, MeasuresAFakeServer) {
  fake_openai_server server(3);
  const std::string svg_path =
      fmt::format("{}/bench_serve_test_{}.svg", ::testing::TempDir(), ::getpid());
  const auto r = run_baton(fmt::format(
      "bench serve --url http://127.0.0.1:{} --rate 100 --requests 8 --prompt-len uniform:4:12 "
      "--output-len 6 --seed 11 --slo-ttft-ms 10000 --slo-tpot-ms 10000 --json --plot '{}' "
      "2>/dev/null",
      server.port(), svg_path));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["model"], "fake-model");
  EXPECT_EQ(j["seed"], 11);
  EXPECT_EQ(j["rate_req_s"], 100.0);
  EXPECT_EQ(j["requests"], 8);
  EXPECT_EQ(j["completed"], 7);
  EXPECT_EQ(j["failed"], 1);
  EXPECT_EQ(j["errors"]["http_503"], 1);
  EXPECT_EQ(j["prompt_tokens_exact"], false);
  EXPECT_DOUBLE_EQ(j["output_tokens_mean"].get<double>(), 6.0);  // usage.completion_tokens
  EXPECT_DOUBLE_EQ(j["prompt_tokens_mean"].get<double>(), 9.0);  // usage.prompt_tokens
  for (const char* m : {"ttft", "tpot", "itl", "e2e"}) {
    for (const char* p : {"mean", "p50", "p90", "p99"}) {
      ASSERT_TRUE(j[fmt::format("{}_ms_{}", m, p)].is_number()) << m << "_ms_" << p;
      EXPECT_GT(j[fmt::format("{}_ms_{}", m, p)].get<double>(), 0) << m << "_ms_" << p;
    }
    EXPECT_LE(j[fmt::format("{}_ms_p50", m)].get<double>(),
              j[fmt::format("{}_ms_p90", m)].get<double>());
    EXPECT_LE(j[fmt::format("{}_ms_p90", m)].get<double>(),
              j[fmt::format("{}_ms_p99", m)].get<double>());
  }
  // The server waits 20 ms before the first token, 5 ms between tokens.
  EXPECT_GE(j["ttft_ms_p50"].get<double>(), 19.0);
  EXPECT_GE(j["itl_ms_p50"].get<double>(), 4.0);
  EXPECT_GE(j["e2e_ms_p50"].get<double>(), j["ttft_ms_p50"].get<double>() + 20.0);
  EXPECT_GT(j["request_throughput_req_s"].get<double>(), 0);
  EXPECT_GT(j["output_throughput_tok_s"].get<double>(), 0);
  EXPECT_GT(j["duration_s"].get<double>(), 0);
  EXPECT_DOUBLE_EQ(j["goodput_fraction"].get<double>(), 7.0 / 8);
  EXPECT_EQ(j["slo_ttft_ms"], 10000.0);

  const auto bodies = server.bodies();
  ASSERT_EQ(bodies.size(), 8u);
  for (const auto& b : bodies) {
    EXPECT_EQ(b["model"], "fake-model");
    EXPECT_EQ(b["max_tokens"], 6);
    EXPECT_EQ(b["stream"], true);
    EXPECT_EQ(b["stream_options"]["include_usage"], true);
    const auto prompt = b["prompt"].get<std::string>();
    const auto words = std::count(prompt.begin(), prompt.end(), ' ') + 1;
    EXPECT_GE(words, 4);
    EXPECT_LE(words, 12);
  }
  std::ifstream in(svg_path);
  const std::string svg{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("panel-ttft"), std::string::npos);
  std::remove(svg_path.c_str());
}

TEST(BenchServeCli, TableThenJsonWithModelGiven) {
  fake_openai_server server(0);
  const auto r = run_baton(
      fmt::format("bench serve --url http://127.0.0.1:{}/ --model m1 --rate inf --requests 3 "
                  "--output-len 2 --seed 5 2>/dev/null",
                  server.port()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("TTFT"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("approximate"), std::string::npos) << r.out;
  ASSERT_EQ(r.out.back(), '\n');
  const auto last = r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1);
  EXPECT_EQ(last.rfind("{\"url\":", 0), 0u) << last;
  const auto j = nlohmann::json::parse(last, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["model"], "m1");
  EXPECT_TRUE(j["rate_req_s"].is_null());
  EXPECT_EQ(j["completed"], 3);
  EXPECT_TRUE(j["goodput_req_s"].is_null());
  EXPECT_EQ(server.bodies().at(0)["model"], "m1");
}

/// A fake router native port: each request gets accepted, then (on its own thread) its
/// max_tokens tokens, 5 ms to the first and 2 ms between the others, faster than the fake
/// HTTP server, so HTTP's added latency comes out positive by construction.
class fake_native_handler final : public baton::client::generate_handler {
 public:
  ~fake_native_handler() override {
    std::lock_guard lock(mutex_);
    for (auto& t : workers_) t.join();
  }

  void start(const baton::wire::generate_request& request,
             std::shared_ptr<baton::client::response_stream> stream) override {
    std::lock_guard lock(mutex_);
    requests_.push_back(request);
    workers_.emplace_back([request, stream] {
      stream->send(baton::wire::accepted{0, baton::wire::request_id{stream->id()},
                                         request.params.seed, 9, request.prompt, "prefill-0",
                                         "decode-0", "disaggregated"});
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      for (std::uint32_t i = 0; i < request.max_tokens; ++i) {
        if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        if (!stream->send(baton::wire::token_chunk{0, 9 + i, {100 + i}, fmt::format(" w{}", i)})) {
          return;
        }
      }
      stream->send(
          baton::wire::finished{0, baton::wire::finish_reason::length, 9, request.max_tokens});
    });
  }

  void cancel(const baton::client::response_stream&, baton::client::cancel_reason) override {}

  std::vector<baton::wire::generate_request> requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  std::mutex mutex_;
  std::vector<std::thread> workers_;
  std::vector<baton::wire::generate_request> requests_;
};

TEST(BenchServeCli, NativePairsMeasureTheHttpLayer) {
  fake_openai_server server(0);
  fake_native_handler handler;
  auto native = baton::client::native_server::start({}, handler);
  ASSERT_TRUE(native) << native.error().to_string();
  const auto r = run_baton(fmt::format(
      "bench serve --url http://127.0.0.1:{} --requests 2 --prompt-len 6 --output-len 4 "
      "--seed 3 --native 127.0.0.1:{} --pairs 5 --json 2>/dev/null",
      server.port(), (*native)->local_port()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["completed"], 2);
  EXPECT_EQ(j["native_pairs"], 5);
  for (const char* f :
       {"native_ttft_ms_p50", "native_ttft_ms_p90", "http_pair_ttft_ms_p50",
        "http_pair_ttft_ms_p90", "http_added_ttft_ms_p50", "native_e2e_ms_p50", "native_e2e_ms_p90",
        "http_pair_e2e_ms_p50", "http_pair_e2e_ms_p90", "http_added_e2e_ms_p50"}) {
    ASSERT_TRUE(j[f].is_number()) << f << ": " << r.out;
    EXPECT_GT(j[f].get<double>(), 0) << f;
  }
  // Native: 5 ms to the first token, 2 ms per token after; HTTP: 20 ms, then 5 ms.
  EXPECT_GE(j["native_ttft_ms_p50"].get<double>(), 4.0);
  EXPECT_GE(j["native_e2e_ms_p50"].get<double>(), 10.0);
  EXPECT_GE(j["http_pair_ttft_ms_p50"].get<double>(), 19.0);
  EXPECT_GE(j["http_pair_e2e_ms_p50"].get<double>(), 34.0);
  EXPECT_LE(j["native_ttft_ms_p50"].get<double>(), j["native_ttft_ms_p90"].get<double>());

  // Each pair: the same prompt, max_tokens and seed both ways, temperature 0.
  const auto bodies = server.bodies();
  ASSERT_EQ(bodies.size(), 2u + 5u);
  const auto natives = handler.requests();
  ASSERT_EQ(natives.size(), 5u);
  for (const auto& n : natives) {
    EXPECT_TRUE(n.has_seed);
    EXPECT_EQ(n.params.temperature, 0.0f);
    EXPECT_EQ(n.max_tokens, 4u);
    std::size_t same = 0;
    for (const auto& b : bodies) {
      if (b["prompt"] == n.prompt && b["seed"] == n.params.seed && b["max_tokens"] == 4) ++same;
    }
    EXPECT_EQ(same, 1u) << n.prompt;
    EXPECT_NE(n.params.seed, bodies[0]["seed"]);  // after the main run's requests
    EXPECT_NE(n.params.seed, bodies[1]["seed"]);
  }

  // Without --native the fields are there, and null.
  const auto plain = run_baton(fmt::format(
      "bench serve --url http://127.0.0.1:{} --model m --requests 1 --output-len 2 --json "
      "2>/dev/null",
      server.port()));
  const auto p = nlohmann::json::parse(plain.out, nullptr, false);
  ASSERT_FALSE(p.is_discarded()) << plain.out;
  EXPECT_TRUE(p["native_pairs"].is_null());
  EXPECT_TRUE(p["http_added_e2e_ms_p50"].is_null());
}

TEST(BenchServeCli, TableShowsThePairs) {
  fake_openai_server server(0);
  fake_native_handler handler;
  auto native = baton::client::native_server::start({}, handler);
  ASSERT_TRUE(native) << native.error().to_string();
  const auto r = run_baton(
      fmt::format("bench serve --url http://127.0.0.1:{} --model m --requests 1 --output-len 2 "
                  "--native 127.0.0.1:{} --pairs 2 2>/dev/null",
                  server.port(), (*native)->local_port()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("HTTP vs native 127.0.0.1:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("added p50"), std::string::npos) << r.out;
}

TEST(BenchServeCli, UnreachableServerAndBadArguments) {
  tcp::endpoint closed;
  {
    asio::io_context io;
    tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    closed = a.local_endpoint();
  }  // closed now: connections are refused
  auto r = run_baton(
      fmt::format("bench serve --url http://127.0.0.1:{} --model x --requests 2 --json 2>/dev/null",
                  closed.port()));
  EXPECT_EQ(r.exit_code, 1) << r.out;  // nothing completed, but the figures are printed
  const auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["errors"]["connect"], 2);
  EXPECT_TRUE(j["ttft_ms_p50"].is_null());
  r = run_baton(fmt::format("bench serve --url http://127.0.0.1:{} --requests 2 2>&1 >/dev/null",
                            closed.port()));
  EXPECT_EQ(r.exit_code, 1);  // no --model and no /v1/models to ask
  EXPECT_NE(r.out.find("/v1/models"), std::string::npos) << r.out;
  r = run_baton("bench serve --url http://127.0.0.1:1 --model x --prompt-len uniform:9:3 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("low > high"), std::string::npos) << r.out;
  r = run_baton(fmt::format(
      "bench serve --url http://127.0.0.1:1 --model x --native 127.0.0.1:{} 2>&1 >/dev/null",
      closed.port()));
  EXPECT_EQ(r.exit_code, 1);  // --native is connected before the main run
  EXPECT_NE(r.out.find("--native"), std::string::npos) << r.out;
  r = run_baton("bench serve --url https://example.com --model x 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("no TLS"), std::string::npos) << r.out;
}

}  // namespace
