// `baton chaos` on the real binary: a cluster of cluster.toml's shape on 127.0.0.1, nodes
// and actors killed during traffic; the verdict must be clean, and must not be when the
// cluster cannot keep its promise (a request deadline shorter than a restart).
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "launcher/child_process.hpp"
#include "tests/integration/cluster_harness.hpp"
#include "tests/support/test_seeds.hpp"

namespace baton::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

/// Runs `baton chaos ARGS --json` with the shared models on the search path; its exit
/// status and its JSON verdict (null if it printed none). Stderr goes to `stderr_file`.
std::pair<int, json> chaos(const std::string& args, const std::filesystem::path& stderr_file) {
  const auto r =
      run(fmt::format("BATON_MODEL_PATH={} {} chaos {} --json 2>{}", quote(BATON_SHARED_MODELS_DIR),
                      quote(BATON_BINARY), args, quote(stderr_file.string())));
  const auto last = r.out.rfind("\n{");
  const auto j =
      json::parse(r.out.substr(last == std::string::npos ? 0 : last + 1), nullptr, false);
  return {r.status, j.is_discarded() ? json() : j};
}

std::string read(const std::filesystem::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(ChaosCli, KillsDuringTrafficLoseDuplicateAndCorruptNothing) {
  const auto seed = test_seeds(20261208, 1).front();
  (void)replay_hint(seed);
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("chaos-cli-{}", getpid());
  std::filesystem::create_directories(dir);
  const auto [status, verdict] =
      chaos(fmt::format("--config {} --requests 60 --kills 4 --seed {} --plot {}",
                        quote(BATON_SOURCE_DIR "/cluster.toml"), seed,
                        quote((dir / "chaos.svg").string())),
            dir / "stderr");
  fmt::print("figures: baton chaos: {}\n", verdict.dump());
  ASSERT_TRUE(verdict.is_object()) << read(dir / "stderr");
  EXPECT_EQ(status, 0) << read(dir / "stderr");
  EXPECT_EQ(verdict["seed"], seed);
  EXPECT_EQ(verdict["requests"], 60);
  EXPECT_EQ(verdict["completed"], 60);
  EXPECT_EQ(verdict["identical"], 60);
  EXPECT_EQ(verdict["failed"], 0);
  EXPECT_GE(verdict["kills"].get<int>(), 1) << "the traffic outlasts at least one kill";
  EXPECT_EQ(verdict["leaked_blocks"], 0);
  EXPECT_EQ(verdict["processes_left"], 0);
  EXPECT_TRUE(verdict["violations"].empty());
  EXPECT_NE(read(dir / "chaos.svg").find("<svg"), std::string::npos);
  std::filesystem::remove_all(dir);
}

/// Nodes on network stacks of their own (a namespace each, veth pairs on a bridge), a
/// partition made by taking a worker's link down (for half to three times the dead
/// timeout), and a decode node killed: membership, serving and failover across them,
/// checked by the same verdict.
TEST(ChaosCli, NodesOnSeparateNetworkStacksSurvivePartitions) {
  const auto seed = test_seeds(20261209, 1).front();
  (void)replay_hint(seed);
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("chaos-ns-{}", getpid());
  std::filesystem::create_directories(dir);
  const auto [status, verdict] =
      chaos(fmt::format("--config {} --netns --targets partition --requests 60 --kills 1 "
                        "--seed {}",
                        quote(BATON_SOURCE_DIR "/cluster.toml"), seed),
            dir / "stderr");
  const std::string err = read(dir / "stderr");
  if (status == 2 && err.find("needs `ip netns`") != std::string::npos) {
    GTEST_SKIP() << err;
  }
  fmt::print("figures: baton chaos --netns: {}\n", verdict.dump());
  ASSERT_TRUE(verdict.is_object()) << err;
  EXPECT_EQ(status, 0) << err;
  EXPECT_EQ(verdict["partitions"], 1);
  EXPECT_EQ(verdict["completed"], 60);
  EXPECT_EQ(verdict["identical"], 60);
  EXPECT_EQ(verdict["leaked_blocks"], 0);
  EXPECT_EQ(verdict["processes_left"], 0);
  EXPECT_TRUE(verdict["violations"].empty()) << err;
  std::filesystem::remove_all(dir);
}

/// An operator's cluster, run by `baton up` (which restarts what dies): chaos attaches to
/// it through the topology's addresses, kills node processes by the pid their admin ports
/// report, waits for the supervisor to bring them back, and gives the same verdict.
TEST(ChaosCli, AttachesToAClusterBatonUpRuns) {
  const auto seed = test_seeds(20261210, 1).front();
  (void)replay_hint(seed);
  const auto dir =
      std::filesystem::temp_directory_path() / fmt::format("chaos-attach-{}", getpid());
  std::filesystem::create_directories(dir);
  // cluster.toml's shape on ports of this test's own (below the ephemeral range).
  const std::string source = read(BATON_SOURCE_DIR "/cluster.toml");
  const int offset = 10'000 + (getpid() % 100) * 100;
  std::string topology;
  const std::regex address("127\\.0\\.0\\.1:([0-9]+)");
  auto at = source.cbegin();
  for (std::sregex_iterator m(source.begin(), source.end(), address), end; m != end; ++m) {
    topology.append(at, (*m)[0].first);
    topology += fmt::format("127.0.0.1:{}", std::stoi((*m)[1].str()) + offset);
    at = (*m)[0].second;
  }
  topology.append(at, source.cend());
  const auto config = (dir / "cluster.toml").string();
  std::ofstream(config) << topology;
  ::setenv("BATON_MODEL_PATH", BATON_SHARED_MODELS_DIR, 1);  // baton up's nodes find the model
  launcher::child_process up({BATON_BINARY, "up", config}, dir / "up.log");
  ASSERT_TRUE(up.wait_for_line("ready: router native=", 60s)) << up.log();
  const auto [status, verdict] =
      chaos(fmt::format("--attach --config {} --requests 40 --kills 3 --targets prefill,decode "
                        "--seed {}",
                        quote(config), seed),
            dir / "stderr");
  const std::string err = read(dir / "stderr");
  fmt::print("figures: baton chaos --attach: {}\n", verdict.dump());
  ASSERT_TRUE(verdict.is_object()) << err << up.log();
  EXPECT_EQ(status, 0) << err << up.log();
  EXPECT_GE(verdict["kills"].get<int>(), 1);
  EXPECT_EQ(verdict["completed"], 40);
  EXPECT_EQ(verdict["identical"], 40);
  EXPECT_EQ(verdict["leaked_blocks"], 0);
  EXPECT_TRUE(verdict["violations"].empty()) << err;
  EXPECT_NE(up.log().find("restarting "), std::string::npos) << "baton up restarted the kills";
  up.signal(SIGTERM);
  EXPECT_TRUE(up.wait(30s)) << up.log();
  std::filesystem::remove_all(dir);
}

TEST(ChaosCli, AVerdictNamesTheRequestsAClusterCouldNotServeAndExitsNonZero) {
  // One decode node, requests that may wait only 300 ms, and a killed decode node that
  // comes back after 3 s: requests caught by the kill fail, and chaos must say so.
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("chaos-bad-{}", getpid());
  std::filesystem::create_directories(dir);
  std::string topology = read(BATON_SOURCE_DIR "/cluster.toml");
  topology = std::regex_replace(topology, std::regex("request_ms = [0-9]+"), "request_ms = 300");
  // Only the first decode node: cut the file at the second decode node's table.
  const auto second = topology.find("name = \"decode-1\"");
  ASSERT_NE(second, std::string::npos);
  topology = topology.substr(0, topology.rfind("[[node]]", second));
  std::ofstream(dir / "cluster.toml") << topology;
  const auto [status, verdict] = chaos(
      fmt::format("--config {} --requests 40 --kills 1 --targets decode --restart-after-ms 3000 "
                  "--seed 7",
                  quote((dir / "cluster.toml").string())),
      dir / "stderr");
  const std::string err = read(dir / "stderr");
  ASSERT_TRUE(verdict.is_object()) << err;
  EXPECT_EQ(status, 1) << err;
  EXPECT_GT(verdict["failed"].get<int>(), 0) << verdict.dump();
  EXPECT_FALSE(verdict["violations"].empty());
  EXPECT_NE(err.find("violation: not completed"), std::string::npos) << err;
  EXPECT_NE(err.find("--seed 7"), std::string::npos) << "says how to replay it: " << err;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace baton::testing
