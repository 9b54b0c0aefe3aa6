// Membership state machines wired through an in-memory network with a simulated clock:
// joins, failure detection, refutation, leave, refusal, and dissemination at scale.
#include "runtime/membership.hpp"

#include <deque>
#include <map>
#include <memory>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace baton::runtime {
namespace {

using namespace std::chrono_literals;
using wire::member_state;

// fmt, not operator+: g++ 12 at -O3 warns falsely (-Wrestrict) on string concatenation.
std::string node_name(int i) {
  return fmt::format("n{}", i);
}

wire::join identity(const std::string& name, std::uint64_t incarnation = 1) {
  wire::join j;
  j.member = {name,
              incarnation,
              member_state::alive,
              wire::node_kind::cpu,
              "cpu",
              {wire::role::decode},
              fmt::format("fabric-{}", name),
              ""};
  j.wire_version = wire::wire_version;
  j.model_hash = 0xabc;
  j.layout = {16, 5, 4, 8, 4};
  j.numerics_fingerprint = "baton-cpu/1 avx2";
  return j;
}

/// Nodes exchanging messages with 1 ms latency; nodes can be killed or cut off.
class sim_cluster {
 public:
  explicit sim_cluster(std::uint64_t seed) : seed_(seed) {}

  membership_state& add(const wire::join& self, time_point now) {
    nodes_.emplace(self.member.node, std::make_unique<membership_state>(
                                         self, std::vector<seed_node>{{"n0", "fabric-n0"}},
                                         membership_config{}, seed_ + nodes_.size()));
    auto& node = *nodes_.at(self.member.node);
    deliver(self.member.node, node.start(now), now);
    return node;
  }
  membership_state& at(const std::string& name) { return *nodes_.at(name); }
  void kill(const std::string& name) { dead_.insert(name); }
  void cut(const std::string& name, bool cut) {
    if (cut) {
      cut_.insert(name);
    } else {
      cut_.erase(name);
    }
  }

  /// Runs until `until`, in 1 ms steps.
  void run(time_point& now, time_point until) {
    for (; now < until; now += 1ms) {
      while (!queue_.empty() && queue_.front().at <= now) {
        auto m = std::move(queue_.front());
        queue_.pop_front();
        if (!reachable(m.from) || !reachable(m.to)) continue;
        auto it = nodes_.find(m.to);
        if (it != nodes_.end()) deliver(m.to, it->second->on_message(m.from, m.body, now), now);
      }
      for (auto& [name, node] : nodes_) {
        if (dead_.contains(name) || node->next_deadline() > now) continue;
        deliver(name, node->on_tick(now), now);
      }
    }
  }
  /// The state `observer` holds for `node`, or nullopt if it does not know it.
  std::optional<member_state> view(const std::string& observer, const std::string& node) {
    const auto* m = at(observer).find(node);
    return m ? std::optional(m->state) : std::nullopt;
  }
  std::map<std::string, int> sent;  // messages sent per node
  std::map<std::string, std::string> refusals;

 private:
  struct message {
    time_point at;
    std::string from, to;
    wire::body body;
  };
  bool reachable(const std::string& n) const { return !dead_.contains(n) && !cut_.contains(n); }
  void deliver(const std::string& from, membership_output out, time_point now) {
    if (out.refused) refusals[from] = *out.refused;
    for (auto& s : out.sends) {
      ++sent[from];
      queue_.push_back({now + 1ms, from, s.node, std::move(s.body)});
    }
  }

  std::uint64_t seed_;
  std::map<std::string, std::unique_ptr<membership_state>> nodes_;
  std::set<std::string> dead_, cut_;
  std::deque<message> queue_;
};

TEST(Membership, NodesJoinThroughTheSeed) {
  sim_cluster sim(11);
  time_point now{};
  for (int i = 0; i < 3; ++i) sim.add(identity(node_name(i)), now);
  sim.run(now, now + 1s);
  for (int i = 0; i < 3; ++i) {
    auto& node = sim.at(node_name(i));
    EXPECT_TRUE(node.joined());
    ASSERT_EQ(node.members().size(), 3u) << "n" << i;
    for (const auto& m : node.members()) EXPECT_EQ(m.state, member_state::alive) << m.node;
  }
}

TEST(Membership, AKilledNodeIsDeclaredDeadWithin300ms) {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    sim_cluster sim(seed);
    time_point now{};
    for (int i = 0; i < 3; ++i) sim.add(identity(node_name(i)), now);
    sim.run(now, now + 1s);
    sim.kill("n2");
    const auto killed_at = now;
    while (sim.view("n0", "n2") != member_state::dead ||
           sim.view("n1", "n2") != member_state::dead) {
      ASSERT_LT(now - killed_at, 300ms) << "seed " << seed;
      sim.run(now, now + 1ms);
    }
  }
}

TEST(Membership, ANewNodeJoinsARunningClusterAndEveryoneSeesIt) {
  sim_cluster sim(5);
  time_point now{};
  for (int i = 0; i < 4; ++i) sim.add(identity(node_name(i)), now);
  sim.run(now, now + 1s);
  sim.add(identity("n9"), now);
  sim.run(now, now + 1s);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(sim.view(node_name(i), "n9"), member_state::alive) << i;
  }
  EXPECT_EQ(sim.at("n9").members().size(), 5u);
}

TEST(Membership, ALeavingNodeIsSeenAsLeft) {
  sim_cluster sim(6);
  time_point now{};
  for (int i = 0; i < 4; ++i) sim.add(identity(node_name(i)), now);
  sim.run(now, now + 1s);
  auto out = sim.at("n3").leave(now);
  ASSERT_FALSE(out.sends.empty());
  for (auto& s : out.sends) {
    (void)sim.at(s.node).on_message("n3", s.body, now);
  }
  sim.run(now, now + 500ms);
  sim.kill("n3");
  sim.run(now, now + 1s);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(sim.view(node_name(i), "n3"), member_state::left) << i;
  }
}

TEST(Membership, AMismatchedNodeIsRefusedWithAReason) {
  sim_cluster sim(7);
  time_point now{};
  sim.add(identity("n0"), now);
  auto odd = identity("n1");
  odd.numerics_fingerprint = "baton-cpu/1 scalar";
  sim.add(odd, now);
  auto old = identity("n2");
  old.wire_version = 0;
  sim.add(old, now);
  sim.run(now, now + 1s);
  EXPECT_FALSE(sim.at("n1").joined());
  EXPECT_NE(sim.refusals["n1"].find("numerics fingerprint 'baton-cpu/1 scalar' differs"),
            std::string::npos)
      << sim.refusals["n1"];
  EXPECT_NE(sim.refusals["n2"].find("wire version 0 differs"), std::string::npos);
  EXPECT_EQ(sim.at("n0").members().size(), 1u) << "a refused node never half-joins";
}

TEST(Membership, ASuspectedNodeRefutesAndStaysAMember) {
  sim_cluster sim(8);
  time_point now{};
  for (int i = 0; i < 3; ++i) sim.add(identity(node_name(i)), now);
  sim.run(now, now + 1s);
  const auto before = sim.at("n2").self().incarnation;
  sim.cut("n2", true);
  sim.run(now, now + 120ms);
  sim.cut("n2", false);
  sim.run(now, now + 2s);
  EXPECT_GT(sim.at("n2").self().incarnation, before);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(sim.view(node_name(i), "n2"), member_state::alive) << i;
  }
}

TEST(Membership, FramesFromOldIncarnationsAreNotAccepted) {
  sim_cluster sim(9);
  time_point now{};
  sim.add(identity("n0"), now);
  sim.add(identity("n1", 5), now);
  sim.run(now, now + 500ms);
  const auto& n0 = sim.at("n0");
  EXPECT_TRUE(n0.accepts("n1", 5));
  EXPECT_FALSE(n0.accepts("n1", 4));
  EXPECT_TRUE(n0.accepts("n1", 6));  // a restart
  sim.kill("n1");
  sim.run(now, now + 1s);
  EXPECT_FALSE(n0.accepts("n1", 5)) << "the dead incarnation stays dead";
}

TEST(Membership, DisseminationScalesWithoutAllToAllTraffic) {
  const int n = 100;
  sim_cluster sim(10);
  time_point now{};
  for (int i = 0; i < n; ++i) sim.add(identity(node_name(i)), now);
  sim.run(now, now + 3s);
  for (int i = 0; i < n; i += 9) {
    ASSERT_EQ(sim.at(node_name(i)).members().size(), static_cast<std::size_t>(n));
  }
  sim.sent.clear();
  sim.kill("n50");
  const auto killed_at = now;
  sim.run(now, now + 2s);
  for (int i = 0; i < n; ++i) {
    if (i == 50) continue;
    EXPECT_EQ(sim.view(node_name(i), "n50"), member_state::dead) << i;
  }
  // Each node sends about one probe and one ack per 40 ms period, however large the
  // cluster: 2 s is 50 periods, so well under 3 x 50 messages, where all-to-all
  // heartbeats would be 99 x 50.
  for (const auto& [name, count] : sim.sent) EXPECT_LT(count, 150) << name;
  (void)killed_at;
}

}  // namespace
}  // namespace baton::runtime
