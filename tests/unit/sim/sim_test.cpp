// The fleet simulator (sim/): its files' errors, its timing model on an idle fleet, its
// capacity estimate against its own saturation, node deaths survived by the real router's
// retries, and refusals of workloads that cannot be served.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "sim/fleet.hpp"
#include "sim/simulator.hpp"
#include "sim/workload.hpp"

namespace baton::sim {
namespace {

fleet_spec fleet_of(gen_options o) {
  auto text = generate_fleet(o);
  EXPECT_TRUE(text) << text.error().message;
  auto f = parse_fleet(*text, "fleet.toml");
  EXPECT_TRUE(f) << f.error().message;
  return *f;
}

workload_spec poisson(std::size_t requests, const char* prompt, const char* output) {
  workload_spec w;
  w.requests = requests;
  w.prompt = *bench::serve::parse_length_dist(prompt);
  w.output = *bench::serve::parse_length_dist(output);
  w.seed = 11;
  return w;
}

std::string error_of(const expected<fleet_spec>& f) {
  return f ? "" : f.error().message;
}

TEST(FleetFile, AGeneratedFileParsesBackToItsFleet) {
  gen_options o;
  o.prefill = 3;
  o.decode = 5;
  o.profile_prefill = "h100";
  o.link = "100gbe";
  o.routers = 4;
  o.decode_max_batch = 8;
  o.decode_kv_blocks = 1234;
  o.block_tokens = 64;
  o.message_us = 21;
  const auto f = fleet_of(o);
  EXPECT_EQ(f.nodes(wire::role::prefill), 3u);
  EXPECT_EQ(f.nodes(wire::role::decode), 5u);
  EXPECT_EQ(f.routers, 4u);
  EXPECT_EQ(f.block_tokens, 64u);
  EXPECT_DOUBLE_EQ(f.message_s, 21e-6);
  EXPECT_EQ(f.shape.name, "llama-3.1-70b");
  ASSERT_EQ(f.groups.size(), 2u);
  EXPECT_EQ(f.groups[0].hardware.name, "h100");
  EXPECT_EQ(f.groups[1].hardware.name, "cs3");
  EXPECT_EQ(f.groups[1].kv_blocks, 1234u);
  EXPECT_EQ(f.groups[1].max_batch, 8u);
  EXPECT_DOUBLE_EQ(f.links[f.groups[1].link].bandwidth_bytes_per_s, 12.5e9);
}

TEST(FleetFile, ErrorsNameTheFileLineAndWhatWasExpected) {
  const std::string model = "[model]\nshape = \"llama-3.1-8b\"\n";
  const std::string link = "[link.l]\nbandwidth_gbytes_per_s = 1\n";
  const std::string prefill =
      "[[group]]\nname = \"p\"\nrole = \"prefill\"\nprofile = \"trn2\"\ncount = 1\nlink = \"l\"\n";
  const std::string decode =
      "[[group]]\nname = \"d\"\nrole = \"decode\"\nprofile = \"cs3\"\ncount = 1\nlink = "
      "\"l\"\nkv_blocks = 10\nmax_batch = 2\n";
  ASSERT_EQ(error_of(parse_fleet(model + link + prefill + decode, "f.toml")), "");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[model\n", "f.toml:1:"},
      {"[model]\nshap = \"x\"\n" + link + prefill + decode,
       "f.toml:2:1: model: unknown key 'shap'"},
      {"[model]\nshape = \"llama-9\"\n" + link + prefill + decode, "f.toml:2:9: model.shape: "},
      {model + link + prefill.substr(0, prefill.size() - 11) + "link = \"x\"\n" + decode,
       "group[0].link: no [link.x] table (there are: l)"},
      {model + link + prefill + decode.substr(0, decode.size() - 14),
       "group[1]: missing required key 'max_batch'"},
      {model + link + prefill + "max_batch = 2\n" + decode,
       "group[0].max_batch: only a decode group"},
      {model + link + prefill, "fleet: no decode nodes"},
      {model + link +
           "[[group]]\nname = \"p\"\nrole = \"prefill\"\nprofile = \"tpu\"\ncount = 1\nlink = "
           "\"l\"\n" +
           decode,
       "group[0].profile: "},
      {model + "[link.l]\nlatency_us = 3\n" + prefill + decode,
       "link.l: missing required key 'bandwidth_gbytes_per_s'"},
      {model + link + prefill + "count = -1\n", "f.toml:"},
  };
  for (const auto& [text, want] : cases) {
    const auto got = error_of(parse_fleet(text, "f.toml"));
    EXPECT_NE(got.find(want), std::string::npos) << "got: " << got << "\nwant: " << want;
  }
}

TEST(WorkloadFile, ErrorsNameTheFileLineAndWhatWasExpected) {
  const std::string lengths = "[lengths]\nprompt = \"100\"\noutput = \"normal:50:5\"\n";
  const auto ok =
      parse_workload("[arrivals]\nprocess = \"bursty\"\nrate = 3\n" + lengths, "w.toml");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->arrivals, arrival_process::bursty);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[arrivals]\nprocess = \"gamma\"\nrate = 1\n" + lengths,
       "w.toml:2:11: arrivals.process: expected one of \"poisson\", \"bursty\", \"trace\""},
      {"[arrivals]\nprocess = \"poisson\"\nrate = 1\nload = 0.5\n" + lengths,
       "exactly one of 'rate'"},
      {"[arrivals]\nprocess = \"poisson\"\nrate = 1\n[lengths]\nprompt = \"uniform:9:3\"\noutput = "
       "\"5\"\n",
       "w.toml:5:10: lengths.prompt: "},
      {"[arrivals]\nprocess = \"poisson\"\nrate = 1\n", "missing required table [lengths]"},
      {"[arrivals]\nprocess = \"trace\"\n", "arrivals: missing required key 'trace'"},
      {"[arrivals]\nprocess = \"poisson\"\nrate = 1\n[prefix]\ngroups = 4\n" + lengths,
       "prefix: expected both"},
  };
  for (const auto& [text, want] : cases) {
    const auto got = parse_workload(text, "w.toml");
    ASSERT_FALSE(got) << text;
    EXPECT_NE(got.error().message.find(want), std::string::npos)
        << "got: " << got.error().message << "\nwant: " << want;
  }
}

TEST(WorkloadFile, ATraceLineThatIsWrongIsNamedByItsLine) {
  const auto dir = std::filesystem::temp_directory_path() / "baton-sim-test-trace";
  std::filesystem::create_directories(dir);
  const auto write = [&](const std::string& text) {
    std::ofstream(dir / "t.jsonl") << text;
    return parse_workload("[arrivals]\nprocess = \"trace\"\ntrace = \"t.jsonl\"\n", dir / "w.toml");
  };
  auto w = write(trace_line({0.5, 10, 3, 0}) + "\n" + trace_line({1.5, 20, 4, 1}) + "\n");
  ASSERT_TRUE(w) << w.error().message;
  auto plan = plan_requests(*w, 0);
  ASSERT_TRUE(plan) << plan.error().message;
  ASSERT_EQ(plan->size(), 2u);
  EXPECT_DOUBLE_EQ(plan->at(1).at_s, 1.5);
  EXPECT_EQ(plan->at(1).prompt_tokens, 20u);
  EXPECT_EQ(plan->at(1).output_tokens, 4u);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"at_s\": 0, \"prompt_tokens\": 5, \"output_tokens\": 1}\nnot json\n",
       "t.jsonl:2: expected one JSON object"},
      {"{\"at_s\": 0, \"prompt_tokens\": 5}\n", "t.jsonl:1: missing \"output_tokens\""},
      {"{\"at_s\": 0, \"prompt_tokens\": 0, \"output_tokens\": 1}\n",
       "t.jsonl:1: \"prompt_tokens\": expected a number in [1,"},
      {"{\"at_s\": 2, \"prompt_tokens\": 5, \"output_tokens\": 1}\n{\"at_s\": 1, "
       "\"prompt_tokens\": 5, \"output_tokens\": 1}\n",
       "t.jsonl:2: at_s 1 is before the line above's 2"},
  };
  for (const auto& [text, want] : cases) {
    auto again = write(text);
    ASSERT_TRUE(again);
    auto bad = plan_requests(*again, 0);
    ASSERT_FALSE(bad) << text;
    EXPECT_NE(bad.error().message.find(want), std::string::npos) << bad.error().message;
  }
  std::filesystem::remove_all(dir);
}

TEST(WorkloadPlan, BurstyArrivalsFallInsideTheirBurstsAtTheMeanRate) {
  auto w = poisson(4000, "10", "10");
  w.arrivals = arrival_process::bursty;
  w.burst_s = 1;
  w.idle_s = 3;
  auto plan = plan_requests(w, 50);
  ASSERT_TRUE(plan);
  for (const auto& r : *plan) EXPECT_LT(std::fmod(r.at_s, 4.0), 1.0) << r.at_s;
  const double rate = static_cast<double>(plan->size()) / plan->back().at_s;
  EXPECT_NEAR(rate, 50, 5);
}

/// What one request takes on an idle fleet, from the same model pieces the simulator is
/// documented to compose (docs/simulator.md "Model").
TEST(Simulation, AnIdleFleetGivesTheModelledTimesOfEachHop) {
  gen_options o;
  o.prefill = 1;
  o.decode = 1;
  o.message_us = 40;
  const auto f = fleet_of(o);
  const std::vector<planned_request> plan = {{0.0, 2000, 100, 0}};
  auto r = simulate(f, workload_spec{}, plan);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->completed, 1u);
  const double m = 40e-6;
  const double hop = m + 2 * 15e-6;  // efa: 15 us each end
  const auto& trn2 = f.groups[0].hardware;
  const auto& cs3 = f.groups[1].hardware;
  const double compute = std::chrono::duration<double>(
                             engine::predict_prefill(trn2, f.shape, 2000, 0, f.numbers)->time)
                             .count();
  const double bytes = 2000.0 * static_cast<double>(engine::kv_bytes_per_token(f.shape, f.numbers));
  const double bw = 150e9;  // the CS-3's network, the narrowest of the four
  const double kv =
      std::max(compute + bytes / bw / static_cast<double>(f.shape.n_layers), bytes / bw);
  // client -> router, admit -> decode, job -> prefill, KV + done -> decode, token -> router,
  // router -> client.
  const double ttft = m + hop + hop + kv + hop + hop + m;
  EXPECT_NEAR(r->ttft_ms.p50, ttft * 1e3, 1e-3);
  const std::vector<std::size_t> contexts = {2050};
  const double step = std::chrono::duration<double>(
                          engine::predict_decode_step(cs3, f.shape, contexts, f.numbers)->time)
                          .count();
  EXPECT_NEAR(r->tpot_ms.p50, step * 1e3, 1e-3);
  EXPECT_NEAR(r->e2e_ms.p50, (ttft + 99 * step) * 1e3, 1e-3);
  EXPECT_NEAR(r->itl_ms.p50, step * 1e3, step * 1e3 * 0.01);  // histogram buckets are 1%
}

TEST(Simulation, EqualInputsGiveEqualReports) {
  const auto f = fleet_of({});
  const auto w = poisson(300, "normal:1000:100", "uniform:20:60");
  auto plan = plan_requests(w, 20);
  ASSERT_TRUE(plan);
  auto a = simulate(f, w, *plan);
  auto b = simulate(f, w, *plan);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->ttft_samples_ms, b->ttft_samples_ms);
  EXPECT_EQ(a->e2e_samples_ms, b->e2e_samples_ms);
  EXPECT_EQ(a->events, b->events);
}

TEST(Simulation, ThroughputFollowsTheOfferedRateUpToTheEstimatedCapacity) {
  const auto f = fleet_of({});
  const auto w = poisson(3000, "normal:2000:200", "normal:300:30");
  auto lengths = plan_requests(w, 1);
  ASSERT_TRUE(lengths);
  auto capacity = capacity_req_s(f, w, *lengths);
  ASSERT_TRUE(capacity) << capacity.error().message;
  for (const double load : {0.5, 2.0}) {
    auto plan = plan_requests(w, load * *capacity);
    ASSERT_TRUE(plan);
    auto r = simulate(f, w, *plan);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->completed, 3000u);
    const double expect = std::min(load, 1.0) * *capacity;
    EXPECT_NEAR(r->request_throughput_req_s, expect, 0.1 * expect) << "load " << load;
    EXPECT_NEAR(r->groups[0].busy_mean, std::min(load, 1.0), 0.1) << "load " << load;
  }
}

TEST(Simulation, NodeDeathsAreSurvivedByTheRoutersRetries) {
  gen_options o;
  o.prefill = 3;
  o.decode = 3;
  o.node_deaths_per_hour = 240;  // a node lives 15 s on average
  auto f = fleet_of(o);
  f.failures.restart_after_s = 2;
  const auto w = poisson(800, "normal:1500:100", "normal:200:20");
  auto plan = plan_requests(w, 10);
  ASSERT_TRUE(plan);
  auto r = simulate(f, w, *plan);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_GT(r->node_deaths, 5u);
  EXPECT_GT(r->migrations, 0u);
  EXPECT_EQ(r->completed, 800u) << "errors: " << r->errors.size();
  // Without deaths nothing moves.
  f.failures.node_deaths_per_hour = 0;
  auto calm = simulate(f, w, *plan);
  ASSERT_TRUE(calm);
  EXPECT_EQ(calm->migrations, 0u);
  EXPECT_LT(calm->e2e_ms.p99, r->e2e_ms.p99);
}

TEST(Simulation, AWorkloadThatCannotBeServedIsReportedBeforeItRuns) {
  gen_options o;
  o.decode_kv_blocks = 10;  // 160 positions
  const auto f = fleet_of(o);
  auto r = simulate(f, workload_spec{}, {{0.0, 150, 20, 0}});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("cannot be served: a request of 170 positions needs 11 KV "
                                   "blocks; the largest decode node holds 10"),
            std::string::npos)
      << r.error().message;
  const auto g = fleet_of({});
  auto past = simulate(g, workload_spec{}, {{0.0, 200'000, 20, 0}});
  ASSERT_FALSE(past);
  EXPECT_NE(past.error().message.find("past llama-3.1-70b's context"), std::string::npos);
}

TEST(Simulation, IndependentRoutersSpreadIdleWorkInsteadOfHerding) {
  // Eight routers, each placing one prompt at once on 32 idle prefill nodes: if they all
  // ranked equal loads alike, the eight prompts would queue on one node.
  gen_options o;
  o.prefill = 32;
  o.routers = 8;
  const auto f = fleet_of(o);
  std::vector<planned_request> plan(8, {0.0, 2000, 2, 0});
  auto r = simulate(f, workload_spec{}, plan);
  ASSERT_TRUE(r) << r.error().message;
  const double alone = r->ttft_samples_ms.front();
  for (const double t : r->ttft_samples_ms) EXPECT_LT(t, 2.5 * alone) << "queued behind others";
}

}  // namespace
}  // namespace baton::sim
