// `baton sim` against the runtime it models: a local cluster of real `baton node`
// processes with emulated devices at real time (a Trainium2 prefill and a CS-3 decode node
// serving the Llama-3.1-70B shape) is loaded by `baton bench serve`, which writes what it
// sent as a trace; `baton sim` replays that trace on the same fleet, described with
// `baton sim gen` and nothing else. TTFT and TPOT p50 and p90 must agree within 15%.
// Nothing in the simulator is fitted to this scenario.
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/integration/cluster_harness.hpp"
#include "tests/support/test_seeds.hpp"

namespace baton::testing {
namespace {

nlohmann::json last_json_line(const std::string& out) {
  nlohmann::json last;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("{")) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded()) last = std::move(j);
  }
  return last;
}

TEST(SimValidation, TheSimulatorAgreesWithTheRuntimeOnTtftAndTpot) {
  const std::string baton = BATON_BINARY;
  const auto dir =
      std::filesystem::temp_directory_path() / fmt::format("baton-sim-validation-{}", ::getpid());
  std::filesystem::create_directories(dir);
  // A checkpoint long enough for 2,000-token prompts; the emulated engine ignores its
  // weights and models the 70B shape.
  const auto checkpoint = (dir / "long.bin").string();
  auto made =
      run(fmt::format("{} model synth --dim 64 --hidden 128 --layers 2 --heads 4 "
                      "--kv-heads 4 --vocab 512 --seq-len 4096 --seed 1 --out {}",
                      quote(baton), quote(checkpoint)));
  ASSERT_EQ(made.status, 0) << made.out;
  // 64-position blocks: 80 layers x 32 blocks of a 2,000-token prompt stay under the
  // transport's 4,096 writes in flight to one peer.
  const std::vector<cluster_node> nodes = {
      {"router-0", {"router"}, "cpu"},
      {"prefill-0", {"prefill"}, "trainium", "emulated:trn2"},
      {"decode-0", {"decode"}, "wafer-scale", "emulated:cs3", "kv_blocks = 4096\nmax_batch = 32"}};
  test_cluster c(nodes, checkpoint,
                 "[limits]\nkv_block_tokens = 64\nmax_prompt_tokens = 4096\n"
                 "[emulated]\nshape = \"llama-3.1-70b\"\nscale = 512\ntime_scale = 1.0\n");
  ASSERT_TRUE(c.start_serving());

  const std::uint64_t seed = test_seeds(5, 1).front();
  SCOPED_TRACE(replay_hint(seed));
  const auto trace = (dir / "trace.jsonl").string();
  auto real = run(fmt::format(
      "{} bench serve --url http://{} --rate 2 --requests 60 --prompt-len uniform:1800:2200 "
      "--output-len uniform:80:120 --seed {} --tokenizer {} --ignore-eos --trace-out {} --json "
      "2>&1",
      quote(baton), c.http("router-0"), seed, quote(shared("tok512.bin")), quote(trace)));
  ASSERT_EQ(real.status, 0) << real.out;
  const auto measured = last_json_line(real.out);
  ASSERT_EQ(measured.value("completed", 0), 60) << real.out;

  auto gen =
      run(fmt::format("{} sim gen --prefill 1 --decode 1 --link loopback --kv-scale 512 "
                      "--block-tokens 64 --kv-blocks 4096 --max-batch 32 -o {}",
                      quote(baton), quote((dir / "fleet.toml").string())));
  ASSERT_EQ(gen.status, 0) << gen.out;
  std::ofstream(dir / "workload.toml")
      << "[arrivals]\nprocess = \"trace\"\ntrace = \"trace.jsonl\"\n";
  auto sim = run(fmt::format("{} sim --topology {} --workload {} --json 2>&1", quote(baton),
                             quote((dir / "fleet.toml").string()),
                             quote((dir / "workload.toml").string())));
  ASSERT_EQ(sim.status, 0) << sim.out;
  const auto modelled = last_json_line(sim.out);
  ASSERT_EQ(modelled.value("completed", 0), 60) << sim.out;

  for (const char* metric : {"ttft", "tpot"}) {
    for (const char* p : {"p50", "p90"}) {
      const double r = measured.value(fmt::format("{}_ms_{}", metric, p), 0.0);
      const double s = modelled[fmt::format("{}_ms", metric)].value(p, 0.0);
      fmt::print("{} {}: runtime {:.2f} ms, simulator {:.2f} ms ({:+.1f}%)\n", metric, p, r, s,
                 100 * (s - r) / r);
      EXPECT_NEAR(s, r, 0.15 * r) << metric << " " << p;
    }
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace baton::testing
