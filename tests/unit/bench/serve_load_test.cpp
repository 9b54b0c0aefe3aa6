// `baton bench serve`'s network-free parts (bench/serve_load.hpp): length distributions,
// arrivals, prompts, the SSE parser, statistics and the SVG report. The binary itself is
// tested against fake servers in tests/integration/bench/bench_serve_cli_test.cpp.
#include "bench/serve_load.hpp"

#include <chrono>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/tokenizer.hpp"

namespace {

namespace serve = baton::bench::serve;

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

TEST(Metrics, SumsEverySampleOfOneMetricAcrossNodes) {
  const std::string text =
      "# HELP baton_prefill_jobs_total Prompts computed\n"
      "# TYPE baton_prefill_jobs_total counter\n"
      "baton_prefill_jobs_total{node=\"prefill-0\"} 12\n"
      "baton_prefill_jobs_total{node=\"prefill-1\",note=\"a b\"} 30 1700000000\n"
      "baton_prefill_jobs_total_other 99\n"
      "baton_prefill_compute_seconds_sum{node=\"prefill-0\"} 0.25\n"
      "baton_prefill_compute_seconds_count{node=\"prefill-0\"} 12\n"
      "baton_router_workers 3\n";
  EXPECT_EQ(serve::sum_samples(text, "baton_prefill_jobs_total"), 42.0);
  EXPECT_EQ(serve::sum_samples(text, "baton_prefill_compute_seconds_sum"), 0.25);
  EXPECT_EQ(serve::sum_samples(text, "baton_router_workers"), 3.0);
  EXPECT_FALSE(serve::sum_samples(text, "baton_prefill_kv_bytes_total"));
  EXPECT_FALSE(serve::sum_samples("baton_x{node=\"a\"} not-a-number\n", "baton_x"));
}

}  // namespace
