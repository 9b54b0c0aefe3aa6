// Who may join a cluster (issue: security), across real node processes on 127.0.0.1: a
// cluster with a secret ([cluster] secret, made by `baton secret init`) refuses a node
// without it and one with another secret, logs and counts each, and serves on; the
// refused nodes exit with status 3 and say why. Replayed handshakes are refused too
// (tests/simulation/runtime/membership_test.cpp, MembershipAuth: a replay needs a recorded
// handshake, which only a simulated network hands over).
#include <sys/wait.h>

#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "client/router_client.hpp"
#include "cluster_harness.hpp"

namespace baton::testing {
namespace {

using namespace std::chrono_literals;

std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file);
  return {std::istreambuf_iterator<char>(in), {}};
}

/// `text` with `line` added after its [cluster] table's first line.
std::string with_cluster_key(std::string text, const std::string& line) {
  const auto at = text.find('\n', text.find("[cluster]"));
  return text.insert(at + 1, line + "\n");
}

/// A one-node topology for `name` outside the cluster's file (its own seed: it joins with
/// --join), with `cluster_line` added to [cluster] (a secret, or nothing).
std::filesystem::path stranger(const test_cluster& c, const std::string& name,
                               const std::string& cluster_line) {
  auto text = read_text(c.topology_file());
  text = text.substr(0, text.find("[[node]]"));
  const auto secret = text.find("secret = ");
  text.erase(secret, text.find('\n', secret) + 1 - secret);
  if (!cluster_line.empty()) text = with_cluster_key(text, cluster_line);
  const auto seeds = text.find("seeds = [");
  text.replace(seeds, text.find('\n', seeds) - seeds, fmt::format("seeds = [\"{}\"]", name));
  text += fmt::format(
      "[[node]]\nname = \"{}\"\nkind = \"cpu\"\ndevice = \"cpu\"\nroles = [\"decode\"]\n"
      "fabric = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nkv_blocks = 1024\n",
      name);
  const auto file = c.dir() / (name + ".toml");
  std::ofstream(file) << text;
  return file;
}

std::string generate(const std::string& router) {
  client::client_options co;
  co.routers = {router};
  auto client = client::router_client::connect(co);
  if (!client) return "connect: " + client.error().to_string();
  wire::generate_request r;
  r.prompt = "Once upon a time";
  r.max_positions = 64;
  r.params = {0.0f, 1.0f, 1};  // greedy
  std::string text;
  auto result = (*client)->generate(r, [&](const client::client_event& e) {
    if (const auto* a = std::get_if<wire::accepted>(&e)) text += a->prompt_text;
    if (const auto* t = std::get_if<wire::token_chunk>(&e)) text += t->text;
    return true;
  });
  return result ? text + "\n" : "failed: " + result.error().to_string();
}

TEST(ClusterSecret, StrangersAreRefusedLoggedAndCountedWhileTheClusterServes) {
  test_cluster c({{"router-0", {"router"}, "cpu"},
                  {"prefill-0", {"prefill"}, "trainium"},
                  {"decode-0", {"decode"}, "wafer-scale", "cpu", "kv_blocks = 1024"}});
  const auto topology =
      with_cluster_key(read_text(c.topology_file()), "secret = \"cluster.secret\"");
  std::ofstream(c.topology_file()) << topology;
  for (const char* file : {"cluster.secret", "other.secret"}) {
    const auto made =
        run(fmt::format("{} secret init {}", BATON_BINARY, quote((c.dir() / file).string())));
    ASSERT_EQ(made.status, 0) << made.out;
  }
  ASSERT_TRUE(c.start_serving()) << c.log("router-0");
  EXPECT_NE(c.log("router-0").find("cluster secret from"), std::string::npos);
  reference ref;
  const auto expected = ref("Once upon a time", 0.0f, 1.0f, 1, 64);
  EXPECT_EQ(generate(c.native("router-0")), expected);

  struct rogue {
    const char* name;
    std::string cluster_line;
    const char* reason;
  };
  const rogue rogues[] = {
      {"rogue-0", "", "this node holds no cluster secret"},
      {"rogue-1", "secret = \"other.secret\"", "this node does not hold the cluster's secret"}};
  for (const auto& r : rogues) {
    auto& p =
        c.start(r.name, {"--join", c.fabric("router-0")}, stranger(c, r.name, r.cluster_line));
    const auto status = p.wait(20s);
    ASSERT_TRUE(status) << r.name << " did not exit:\n" << p.log();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 3) << p.log();
    EXPECT_NE(p.log().find(r.reason), std::string::npos) << p.log();
    // The seed never hears its join: its hello is refused by the transport (its frames are
    // not sealed, or their seal does not verify), logged with its address and counted.
    const auto log = p.log();
    const auto at = log.find("listening fabric=") + std::string_view("listening fabric=").size();
    const auto address = log.substr(at, log.find(' ', at) - at);
    EXPECT_NE(c.log("router-0").find(fmt::format("refused a hello from {}", address)),
              std::string::npos)
        << "the seed logs the refusal:\n"
        << c.log("router-0");
  }
  // The transport's counters reach the metrics on the node's next tick.
  EXPECT_TRUE(
      wait_until([&] { return c.metric("router-0", "baton_fabric_bad_tags_total") >= 2.0; }, 5s))
      << c.metrics("router-0");
  const auto status = c.status("router-0");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->dump().find("rogue"), std::string::npos) << "never half-joined";
  EXPECT_EQ(generate(c.native("router-0")), expected) << "the cluster serves on";
}

}  // namespace
}  // namespace baton::testing
