// `baton bench serve` as a user runs it: the real binary (BATON_BINARY) against a fake
// OpenAI-compatible SSE server on 127.0.0.1 in this process, and with --native against a
// fake router native port (frontend::native_server).
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <mutex>
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

#include "engine/sampler.hpp"
#include "frontend/native_server.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

/// A tiny OpenAI-compatible server: GET /v1/models, GET /metrics (as Baton's router: two
/// nodes' baton_prefill_jobs_total, together the completion requests so far, and 0.5 s of
/// compute and 1000 KV bytes per request), and POST /v1/completions streamed as chunked SSE
/// (20 ms to the first token, then 5 ms per token, every event split across two HTTP
/// chunks; one chunk per choice of "n"). The `fail_nth` completion request (1-based) gets
/// HTTP 503. A thread per connection; all joined on destruction.
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
    if (req.method() == http::verb::get && req.target() == "/metrics") {
      const int done = completions_;
      http::response<http::string_body> res(http::status::ok, 11);
      res.set(http::field::content_type, "text/plain; version=0.0.4");
      res.body() = fmt::format(
          "# TYPE baton_prefill_jobs_total counter\n"
          "baton_prefill_jobs_total{{node=\"prefill-0\"}} {}\n"
          "baton_prefill_jobs_total{{node=\"prefill-1\"}} {}\n"
          "baton_prefill_compute_seconds_sum{{node=\"prefill-0\"}} {}\n"
          "baton_prefill_kv_bytes_total{{node=\"prefill-0\"}} {}\n",
          done / 2, done - done / 2, 0.5 * done, 1000 * done);
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
    const int choices = body.value("n", 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    for (int i = 0; i < n && !ec; ++i) {
      if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      for (int c = 0; c < choices; ++c) {
        event({{"id", "cmpl-1"},
               {"object", "text_completion"},
               {"choices", {{{"index", c}, {"text", fmt::format(" w{}", i)}}}}});
      }
    }
    const int generated = n * choices;
    event({{"choices", nlohmann::json::array()},
           {"usage",
            {{"prompt_tokens", 9},
             {"completion_tokens", generated},
             {"total_tokens", generated + 9}}}});
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
  // The server's /metrics counters, read before and after the run.
  EXPECT_EQ(j["n"], 1);
  EXPECT_DOUBLE_EQ(j["prefill_jobs"].get<double>(), 8.0);
  EXPECT_DOUBLE_EQ(j["prefill_compute_s"].get<double>(), 4.0);
  EXPECT_DOUBLE_EQ(j["prefill_kv_bytes"].get<double>(), 8000.0);
  EXPECT_TRUE(j["separate"].is_null());

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

TEST(BenchServeCli, ChoicesAgainstSeparateRequestsOfTheSamePrompts) {
  fake_openai_server server(0);
  const auto r = run_baton(
      fmt::format("bench serve --url http://127.0.0.1:{} --rate inf --requests 3 --output-len 4 "
                  "--seed 21 --n 4 --temperature 0.8 --vs-separate 2>/dev/null",
                  server.port()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("n = 4 vs 4 separate requests"), std::string::npos) << r.out;
  const auto j = nlohmann::json::parse(r.out.substr(r.out.rfind("{\"url\":")), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["n"], 4);
  EXPECT_EQ(j["completed"], 3);
  EXPECT_DOUBLE_EQ(j["output_tokens_mean"].get<double>(), 16.0);  // every choice counts
  EXPECT_DOUBLE_EQ(j["prefill_jobs"].get<double>(), 3.0);
  ASSERT_TRUE(j["separate"].is_object()) << r.out;
  EXPECT_EQ(j["separate"]["requests"], 12);
  EXPECT_EQ(j["separate"]["completed"], 12);
  EXPECT_DOUBLE_EQ(j["separate"]["prefill_jobs"].get<double>(), 12.0);
  EXPECT_DOUBLE_EQ(j["separate"]["prefill_kv_bytes"].get<double>(), 12000.0);

  // First the 3 requests of n = 4; then each as 4 requests of one choice, seeded as the
  // server seeds that choice, so both runs ask for the same texts.
  const auto bodies = server.bodies();
  ASSERT_EQ(bodies.size(), 15u);
  std::vector<std::pair<std::string, std::uint64_t>> asked, separately;
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    const auto& b = bodies[i];
    EXPECT_FLOAT_EQ(b["temperature"].get<float>(), 0.8f);
    const auto prompt = b["prompt"].get<std::string>();
    const auto seed = b["seed"].get<std::uint64_t>();
    if (i < 3) {
      EXPECT_EQ(b["n"], 4);
      for (std::uint32_t c = 0; c < 4; ++c) {
        asked.emplace_back(prompt, baton::engine::choice_seed(seed, c));
      }
    } else {
      EXPECT_FALSE(b.contains("n")) << b.dump();
      separately.emplace_back(prompt, seed);
    }
  }
  std::sort(asked.begin(), asked.end());
  std::sort(separately.begin(), separately.end());
  EXPECT_EQ(asked, separately);
}

/// A fake router native port: each request gets accepted, then (on its own thread) its
/// max_tokens tokens, 5 ms to the first and 2 ms between the others, faster than the fake
/// HTTP server, so HTTP's added latency comes out positive by construction.
class fake_native_handler final : public baton::frontend::generate_handler {
 public:
  ~fake_native_handler() override {
    std::lock_guard lock(mutex_);
    for (auto& t : workers_) t.join();
  }

  void start(const baton::wire::generate_request& request,
             std::shared_ptr<baton::frontend::response_stream> stream) override {
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

  void cancel(const baton::frontend::response_stream&, baton::frontend::cancel_reason) override {}

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
  auto native = baton::frontend::native_server::start({}, handler);
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
  auto native = baton::frontend::native_server::start({}, handler);
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
  for (const auto& [args, why] :
       {std::pair{"--n 0", "--n must be 1..16"}, std::pair{"--n 17", "--n must be 1..16"},
        std::pair{"--vs-separate", "--vs-separate needs --n >= 2"},
        std::pair{"--temperature 3", "--temperature must be in [0, 2]"}}) {
    r = run_baton(fmt::format("bench serve --url http://127.0.0.1:1 --model x {} 2>&1", args));
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_NE(r.out.find(why), std::string::npos) << args << ": " << r.out;
  }
}

}  // namespace
