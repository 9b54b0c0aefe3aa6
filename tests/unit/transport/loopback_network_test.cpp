#include "transport/loopback/network.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <set>

#include <fmt/format.h>

namespace baton::transport {
namespace {

using namespace std::chrono_literals;

struct pair_of_endpoints {
  std::shared_ptr<loopback::network> net;
  std::unique_ptr<endpoint> a;
  std::unique_ptr<endpoint> b;
  peer_id a_to_b{};
};

pair_of_endpoints make_pair(std::uint64_t seed) {
  std::printf("loopback seed: %llu\n", static_cast<unsigned long long>(seed));
  pair_of_endpoints p;
  p.net = std::make_shared<loopback::network>(seed);
  p.a = std::move(*make_endpoint({"loopback", address{"a"}}, p.net));
  p.b = std::move(*make_endpoint({"loopback", address{"b"}}, p.net));
  p.a_to_b = *p.a->add_peer({"b"}, clock::now() + 1s);
  return p;
}

std::vector<std::byte> number(std::uint64_t v) {
  std::vector<std::byte> out(8);
  std::memcpy(out.data(), &v, 8);
  return out;
}

/// Sends 0..count-1 from a to b and returns what b received, in arrival order.
std::vector<std::uint64_t> exchange(pair_of_endpoints& p, std::uint64_t count) {
  std::vector<event> batch(64);
  for (std::uint64_t i = 0; i < count; ++i) {
    EXPECT_TRUE(p.a->send(p.a_to_b, number(i), clock::now() + 1s).has_value());
    while (p.a->poll(batch) > 0) {
    }
  }
  std::vector<std::uint64_t> got;
  const auto until = clock::now() + 300ms;  // longer than any configured delay
  while (clock::now() < until) {
    (void)p.b->wait(5ms);
    auto n = p.b->poll(batch);
    for (std::size_t i = 0; i < n; ++i) {
      if (batch[i].kind != event_kind::message) continue;
      std::uint64_t v = 0;
      std::memcpy(&v, batch[i].payload.data(), 8);
      got.push_back(v);
    }
  }
  return got;
}

TEST(LoopbackNetwork, DropsAreSeededAndReplayable) {
  auto first = make_pair(11);
  first.net->set_faults({.drop_probability = 0.3});
  auto got1 = exchange(first, 200);
  auto second = make_pair(11);
  second.net->set_faults({.drop_probability = 0.3});
  auto got2 = exchange(second, 200);
  EXPECT_LT(got1.size(), 200u);
  EXPECT_GT(got1.size(), 100u);
  EXPECT_EQ(got1, got2);  // same seed, same calls: same losses
}

TEST(LoopbackNetwork, DuplicatesEveryMessageOnRequest) {
  auto p = make_pair(12);
  p.net->set_faults({.duplicate_probability = 1.0});
  auto got = exchange(p, 50);
  ASSERT_EQ(got.size(), 100u);
  EXPECT_EQ(got[0], got[1]);
}

TEST(LoopbackNetwork, DelaysKeepOrderUnlessReorderIsAsked) {
  auto ordered = make_pair(13);
  ordered.net->set_faults({.min_delay = 0us, .max_delay = 20000us});
  auto got = exchange(ordered, 100);
  ASSERT_EQ(got.size(), 100u);
  EXPECT_TRUE(std::is_sorted(got.begin(), got.end()));

  auto shuffled = make_pair(13);
  shuffled.net->set_faults({.reorder_probability = 0.5, .min_delay = 0us, .max_delay = 20000us});
  auto mixed = exchange(shuffled, 100);
  ASSERT_EQ(mixed.size(), 100u);
  EXPECT_FALSE(std::is_sorted(mixed.begin(), mixed.end()));
  EXPECT_EQ(std::set<std::uint64_t>(mixed.begin(), mixed.end()).size(), 100u);
}

TEST(LoopbackNetwork, PartitionAndKillTurnIntoTimeouts) {
  auto p = make_pair(14);
  auto remote = p.b->allocate_region(4096);
  auto local = p.a->allocate_region(4096);
  ASSERT_TRUE(remote && local);
  // b learnt a when a added it; b's id for a is 0.
  auto slice = p.b->grant(peer_id{0}, {*remote, 0, 4096});
  ASSERT_TRUE(slice.has_value());
  p.net->partition({"a"}, {"b"});
  auto op = p.a->write({*local, 0, 4096}, *slice, clock::now() + 50ms, std::nullopt);
  ASSERT_TRUE(op.has_value());
  ASSERT_TRUE(p.a->wait(1s));
  std::vector<event> batch(4);
  ASSERT_EQ(p.a->poll(batch), 1u);
  ASSERT_FALSE(batch[0].status.has_value());
  EXPECT_EQ(batch[0].status.error().code, errc::timed_out);
  p.net->heal({"a"}, {"b"});
  op = p.a->write({*local, 0, 4096}, *slice, clock::now() + 1s, std::nullopt);
  ASSERT_TRUE(p.a->wait(1s));
  ASSERT_EQ(p.a->poll(batch), 1u);
  EXPECT_TRUE(batch[0].status.has_value());

  p.net->kill({"b"});
  auto dead = p.b->send(peer_id{0}, number(1), clock::now() + 1s);
  ASSERT_FALSE(dead.has_value());
  EXPECT_EQ(dead.error().code, errc::disconnected);
  op = p.a->write({*local, 0, 4096}, *slice, clock::now() + 50ms, std::nullopt);
  ASSERT_TRUE(p.a->wait(1s));
  ASSERT_EQ(p.a->poll(batch), 1u);
  EXPECT_EQ(batch[0].status.error().code, errc::timed_out);
}

TEST(LoopbackNetwork, AManualClockMovesOnlyWhenAdvanced) {
  auto p = make_pair(15);
  const clock::time_point start{};
  p.net->use_manual_clock(start);
  p.net->set_faults({.min_delay = 5000us, .max_delay = 5000us});
  ASSERT_TRUE(p.a->send(p.a_to_b, number(7), start + 1s).has_value());
  std::vector<event> batch(8);
  auto messages = [&] {
    std::size_t n = 0;
    const auto got = p.b->poll(batch);
    for (std::size_t i = 0; i < got; ++i) n += batch[i].kind == event_kind::message ? 1 : 0;
    return n;
  };
  EXPECT_FALSE(p.b->wait(1000ms)) << "a manual clock does not move while waiting";
  p.net->advance_to(start + 4ms);
  EXPECT_EQ(messages(), 0u);
  p.net->advance_to(start + 5ms);
  EXPECT_EQ(messages(), 1u);
  // Deadlines follow the same clock: an RMA to a partitioned peer expires only when the
  // clock passes its deadline.
  auto remote = p.b->allocate_region(64);
  auto local = p.a->allocate_region(64);
  ASSERT_TRUE(remote && local);
  auto slice = p.b->grant(peer_id{0}, {*remote, 0, 64});
  ASSERT_TRUE(slice.has_value());
  p.net->partition({"a"}, {"b"});
  while (p.a->poll(batch) > 0) {
  }
  ASSERT_TRUE(p.a->write({*local, 0, 64}, *slice, start + 50ms, std::nullopt).has_value());
  p.net->advance_to(start + 49ms);
  EXPECT_EQ(p.a->poll(batch), 0u);
  p.net->advance_to(start + 50ms);
  ASSERT_EQ(p.a->poll(batch), 1u);
  ASSERT_FALSE(batch[0].status.has_value());
  EXPECT_EQ(batch[0].status.error().code, errc::timed_out);
}

TEST(EndpointFactory, UnavailableAndUnknownProvidersFailAtOnce) {
  endpoint_config config;
  for (const char* name : {"verbs", "efa"}) {
    config.provider = name;
    auto ep = make_endpoint(config);
    ASSERT_FALSE(ep.has_value());
    EXPECT_EQ(ep.error().code, errc::not_found);
    EXPECT_EQ(ep.error().message, fmt::format("provider not available: {} (no device)", name));
  }
  config.provider = "carrier-pigeon";
  EXPECT_EQ(make_endpoint(config).error().code, errc::not_found);
  config.provider = "loopback";
  EXPECT_EQ(make_endpoint(config).error().code, errc::invalid_argument);
}

}  // namespace
}  // namespace baton::transport
