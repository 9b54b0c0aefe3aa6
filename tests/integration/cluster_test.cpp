// Real node processes on 127.0.0.1: join, failure detection, late join, drain, refusal,
// stale incarnations, and the idle cost of a cluster.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "cluster_harness.hpp"
#include "schemas/codec.hpp"
#include "transport/endpoint.hpp"

namespace baton::testing {
namespace {

using namespace std::chrono_literals;

const std::vector<cluster_node> four_nodes = {{"n0", {"router"}, "cpu"},
                                              {"n1", {"prefill"}, "trainium"},
                                              {"n2", {"decode"}, "wafer-scale"},
                                              {"n3", {"decode"}, "wafer-scale"}};

bool all_alive(const test_cluster& c, const std::vector<std::string>& nodes) {
  for (const auto& observer : nodes) {
    for (const auto& node : nodes) {
      if (c.state_of(observer, node) != "alive") return false;
    }
  }
  return true;
}

class ClusterTest : public ::testing::Test {
 protected:
  void start_three() {
    for (const auto* n : {"n0", "n1", "n2"}) cluster.start(n);
    const auto took = wait_until([&] { return all_alive(cluster, {"n0", "n1", "n2"}); }, 15s);
    ASSERT_TRUE(took) << cluster.process("n1").log();
    std::printf("three nodes joined in %lld ms\n", static_cast<long long>(took->count()));
  }
  /// The incarnation `observer` knows of `node`; 0 if it does not know it.
  std::uint64_t incarnation_of(const std::string& observer, const std::string& node) {
    auto s = cluster.status(observer);
    if (s) {
      for (const auto& m : (*s)["members"]) {
        if (m.value("node", "") == node) return m.value("incarnation", std::uint64_t{0});
      }
    }
    return 0;
  }
  test_cluster cluster{four_nodes};
};

TEST_F(ClusterTest, ThreeNodesJoinAndAKilledOneIsDeclaredDead) {
  start_three();
  cluster.process("n2").signal(SIGKILL);
  const auto took = wait_until(
      [&] {
        return cluster.state_of("n0", "n2") == "dead" && cluster.state_of("n1", "n2") == "dead";
      },
      3s);
  ASSERT_TRUE(took) << "n0 sees n2 " << cluster.state_of("n0", "n2");
  std::printf("SIGKILLed node declared dead by both others after %lld ms (default timeouts)\n",
              static_cast<long long>(took->count()));
  // The survivors keep each other: on a loaded machine one may briefly suspect the
  // other, which then refutes; neither is ever declared dead.
  const bool survivors_alive = wait_until(
                                   [&] {
                                     return cluster.state_of("n0", "n1") == "alive" &&
                                            cluster.state_of("n1", "n0") == "alive";
                                   },
                                   3s)
                                   .has_value();
  EXPECT_TRUE(survivors_alive) << "n0:\n"
                               << cluster.process("n0").log() << "n1:\n"
                               << cluster.process("n1").log();
}

TEST_F(ClusterTest, AKilledNodeRestartedUnderItsNameRejoinsWithANewIncarnation) {
  start_three();
  const auto before = incarnation_of("n0", "n2");
  ASSERT_NE(before, 0u);
  cluster.process("n2").signal(SIGKILL);
  ASSERT_TRUE(wait_until(
      [&] {
        return cluster.state_of("n0", "n2") == "dead" && cluster.state_of("n1", "n2") == "dead";
      },
      3s));
  cluster.start("n2");
  const auto took = wait_until([&] { return all_alive(cluster, {"n0", "n1", "n2"}); }, 10s);
  ASSERT_TRUE(took) << "n0 sees n2 " << cluster.state_of("n0", "n2") << "\n"
                    << cluster.process("n2").log();
  EXPECT_GT(incarnation_of("n0", "n2"), before);
  EXPECT_GT(incarnation_of("n1", "n2"), before);
  std::printf("restarted node alive again for every node after %lld ms\n",
              static_cast<long long>(took->count()));
}

TEST_F(ClusterTest, ANodePausedPastTheDeadTimeoutIsAliveAgainOnceItResumes) {
  // The others bury n2 while it is stopped; resumed, n2 often buries one of them too (its
  // own probes timed out meanwhile), and the two then drop each other's frames. Reconnect
  // probes tell each side it was buried; it refutes with a higher incarnation, which the
  // other accepts. Without them this failed in about half the runs here.
  start_three();
  const auto before = incarnation_of("n0", "n2");
  cluster.process("n2").signal(SIGSTOP);
  ASSERT_TRUE(wait_until(
      [&] {
        return cluster.state_of("n0", "n2") == "dead" && cluster.state_of("n1", "n2") == "dead";
      },
      5s));
  std::this_thread::sleep_for(300ms);
  cluster.process("n2").signal(SIGCONT);
  const auto took = wait_until([&] { return all_alive(cluster, {"n0", "n1", "n2"}); }, 15s);
  ASSERT_TRUE(took) << "n0 sees n2 " << cluster.state_of("n0", "n2") << ", n2 sees n0 "
                    << cluster.state_of("n2", "n0") << "\n"
                    << cluster.process("n2").log();
  EXPECT_GT(incarnation_of("n0", "n2"), before) << "n2 refuted its burial";
  std::printf("resumed node alive again for every node after %lld ms\n",
              static_cast<long long>(took->count()));
}

TEST_F(ClusterTest, UpServesASyntheticModelLoudlyWhenNoCheckpointIsFoundAndStopsEveryNode) {
  // The checkpoint is a name no folder of the model search path holds.
  const auto config = cluster.write_variant("missing-model.toml", "no-such-model.bin");
  child_process up({BATON_BINARY, "up", config.string()}, cluster.dir() / "up.log");
  const auto ready =
      wait_until([&] { return up.log().find("ready: router native=") != std::string::npos; }, 30s);
  ASSERT_TRUE(ready) << up.log();
  auto log = up.log();
  EXPECT_NE(log.find("WARNING: no checkpoint 'no-such-model.bin' in the model search path ("),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("serving a SYNTHETIC model"), std::string::npos) << log;
  up.signal(SIGTERM);
  const auto status = up.wait(20s);
  ASSERT_TRUE(status) << "baton up did not stop";
  log = up.log();
  for (const auto& n : four_nodes) {
    EXPECT_NE(log.find(n.name + " exited"), std::string::npos) << n.name << " left behind\n" << log;
  }
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << log;
}

TEST_F(ClusterTest, ANewNodeJoinsARunningClusterAndEveryNodeSeesIt) {
  start_three();
  cluster.start("n3", {"--join", cluster.fabric("n1")});  // any member can be the seed
  const auto took = wait_until([&] { return all_alive(cluster, {"n0", "n1", "n2", "n3"}); }, 5s);
  ASSERT_TRUE(took) << cluster.process("n3").log();
  std::printf("late joiner seen by every node after %lld ms\n",
              static_cast<long long>(took->count()));
}

TEST_F(ClusterTest, ADrainedNodeLeavesAndExitsCleanly) {
  start_three();
  cluster.process("n1").signal(SIGTERM);
  auto status = cluster.process("n1").wait(5s);
  ASSERT_TRUE(status) << "n1 did not exit";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << cluster.process("n1").log();
  ASSERT_TRUE(wait_until(
      [&] {
        return cluster.state_of("n0", "n1") == "left" && cluster.state_of("n2", "n1") == "left";
      },
      3s));
}

TEST_F(ClusterTest, AMismatchedNodeIsRefusedWithAReason) {
  start_three();
  // Same shape, one weight changed: another model, so another model hash.
  const auto variant = cluster.dir() / "other.bin";
  std::filesystem::copy_file(BATON_SHARED_MODELS_DIR "/stories260K.bin", variant);
  {
    std::fstream f(variant, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000);
    const float weight = 0.125f;
    f.write(reinterpret_cast<const char*>(&weight), sizeof weight);
  }
  const auto config = cluster.write_variant("other.toml", variant.string());
  auto& odd = cluster.start("n3", {}, config);
  auto status = odd.wait(10s);
  ASSERT_TRUE(status) << "a refused node must stop";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 3) << "refused is exit code 3";
  EXPECT_NE(odd.log().find("join refused: model hash"), std::string::npos) << odd.log();
  EXPECT_EQ(cluster.state_of("n0", "n3"), "") << "a refused node never half-joins";
}

TEST_F(ClusterTest, AnAddressInUseIsNamedAndIsAConfigurationError) {
  // A port some other process holds, for each of the node's listening addresses.
  const int holder = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(holder, reinterpret_cast<sockaddr*>(&at), sizeof at), 0);
  ASSERT_EQ(::listen(holder, 1), 0);
  socklen_t len = sizeof at;
  ASSERT_EQ(::getsockname(holder, reinterpret_cast<sockaddr*>(&at), &len), 0);
  const auto taken = fmt::format("127.0.0.1:{}", ntohs(at.sin_port));
  for (const char* flag : {"--fabric", "--admin", "--native"}) {
    child_process node({BATON_BINARY, "node", "--config", cluster.topology_file().string(),
                        "--name", "n0", flag, taken},
                       cluster.dir() / "in-use.log");
    const auto status = node.wait(20s);
    ASSERT_TRUE(status) << flag;
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 2) << flag << "\n" << node.log();
    EXPECT_NE(node.log().find(taken), std::string::npos)
        << flag << ": the error names the address\n"
        << node.log();
  }
  ::close(holder);
}

TEST_F(ClusterTest, AFrameFromAnOldIncarnationIsDropped) {
  start_three();
  // Pose as n1 from an incarnation older than the live one.
  transport::endpoint_config config{"tcp", {"127.0.0.1:0"}, {}, 1};
  auto ep = transport::make_endpoint(config);
  ASSERT_TRUE(ep) << ep.error().message;
  auto peer = (*ep)->add_peer({cluster.fabric("n0")}, transport::clock::now() + 3s);
  ASSERT_TRUE(peer) << peer.error().message;
  wire::frame f;
  f.source = {"n1", "membership"};
  f.target = {"n0", "membership"};
  f.sender_incarnation = 1;
  f.message_id = 1;
  f.body = wire::heartbeat{1, false, 0, 0, {}};
  auto bytes = wire::encode(f);
  ASSERT_TRUE(bytes);
  ASSERT_TRUE((*ep)->send(*peer, bytes->bytes(), transport::clock::now() + 3s));
  ASSERT_TRUE(wait_until(
      [&] {
        return cluster.metrics("n0").find("baton_frames_stale_total{peer=\"n1\"} 1") !=
               std::string::npos;
      },
      3s))
      << cluster.metrics("n0");
  EXPECT_EQ(cluster.state_of("n0", "n1"), "alive");
}

/// Cores the processes of `nodes` use together over 5 s (every thread's schedstat).
double cores_used(test_cluster& cluster, const std::vector<std::string>& nodes) {
  auto cpu_ns = [&] {
    double total = 0;
    for (const auto& n : nodes) {
      const auto tasks =
          std::filesystem::path(fmt::format("/proc/{}/task", cluster.process(n).pid()));
      for (const auto& task : std::filesystem::directory_iterator(tasks)) {
        std::ifstream stat(task.path() / "schedstat");
        double on_cpu_ns = 0;
        stat >> on_cpu_ns;
        total += on_cpu_ns;
      }
    }
    return total;
  };
  const double before = cpu_ns();
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(5s);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return (cpu_ns() - before) / 1e9 / seconds;
}

TEST_F(ClusterTest, AnIdleClusterUsesLittleCpu) {
  start_three();
  std::this_thread::sleep_for(1s);  // let joining settle
  const double cores = cores_used(cluster, {"n0", "n1", "n2"});
  std::printf("idle three-node cluster: %.2f%% of one core in total\n", cores * 100);
  // Under 5%, as issue 4 asks. Probes cost wake-ups, not computing: membership runs on
  // each node's progress thread (membership_driver), which keeps its timer too, so a probe
  // and its answer wake one thread per node and nothing else. 2.5-3.3% here, quiet or
  // beside a build (5.1-5.7% when membership was a CAF actor with CAF timers).
  EXPECT_LT(cores, 0.05);
}

}  // namespace
}  // namespace baton::testing
