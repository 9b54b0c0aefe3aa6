// One typed suite, the same expectations for every transport: loopback, fabric tcp,
// fabric shm. Both endpoints live in this process here; the two-process cases are in
// transport_two_process_test.cpp.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>

#include "tests/conformance/transport_test_util.hpp"
#include "transport/endpoint.hpp"
#include "transport/loopback/network.hpp"

namespace baton::transport {
namespace {

using namespace std::chrono_literals;
using testing::await_event;
using testing::loopback_kind;
using testing::shm_kind;
using testing::shm_local_mr_kind;
using testing::tcp_kind;
using testing::tcp_local_mr_kind;

deadline in(std::chrono::milliseconds ms) {
  return clock::now() + ms;
}

template <class Kind>
class TransportConformance : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(Kind::provider) == "loopback") {
      std::uint64_t seed = std::random_device{}();
      if (const char* env = std::getenv("BATON_TEST_SEED")) seed = std::strtoull(env, nullptr, 10);
      std::printf("loopback seed: %llu (replay with BATON_TEST_SEED)\n",
                  static_cast<unsigned long long>(seed));
      network_ = std::make_shared<loopback::network>(seed);
    }
    a_ = make("a");
    b_ = make("b");
    ASSERT_TRUE(a_ && b_);
    auto peer = a_->add_peer(b_->local_address(), in(5000ms));
    ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
    a_to_b_ = *peer;
    // b learns a from the hello; find its id from a first message.
    auto sent = a_->send(a_to_b_, testing::pack({42}), in(5000ms));
    ASSERT_TRUE(sent.has_value());
    auto hello = await_event(
        *b_, [](const event& e) { return e.kind == event_kind::message; }, 5000ms);
    ASSERT_TRUE(hello.has_value());
    b_to_a_ = hello->peer;
    ASSERT_NE(b_to_a_, unknown_peer);
    drain(*a_);
  }

  std::unique_ptr<endpoint> make(const std::string& role, endpoint_limits limits = {}) {
    endpoint_config config;
    config.provider = Kind::provider;
    config.limits = limits;
    config.require_local_mr = Kind::local_mr;
    if (config.provider == "tcp") config.bind.text = "127.0.0.1:0";
    if (config.provider == "shm") config.bind.text = testing::shm_name(role);
    if (config.provider == "loopback") config.bind.text = role;
    auto ep = make_endpoint(config, network_);
    EXPECT_TRUE(ep.has_value()) << ep.error().to_string();
    return ep ? std::move(*ep) : nullptr;
  }

  void drain(endpoint& ep) {
    std::vector<event> batch(64);
    while (ep.poll(batch) > 0) {
    }
  }

  /// b grants a slice to a, then tells a with a message, which arrives after the grant.
  remote_slice grant_to_a(region_id region, std::uint64_t bytes) {
    auto slice = b_->grant(b_to_a_, {region, 0, bytes});
    EXPECT_TRUE(slice.has_value());
    EXPECT_TRUE(b_->send(b_to_a_, testing::pack({7}), in(5000ms)).has_value());
    auto note = await_event(
        *a_, [](const event& e) { return e.kind == event_kind::message; }, 5000ms);
    EXPECT_TRUE(note.has_value());
    return *slice;
  }

  // Both stopped before either is destroyed: shm peers in one process read each other's
  // memory, and one destroyed under the other's running progress thread crashed it.
  ~TransportConformance() override {
    for (auto* e : {a_.get(), b_.get()}) {
      if (e != nullptr) e->stop();
    }
  }

  std::shared_ptr<loopback::network> network_;
  std::unique_ptr<endpoint> a_;
  std::unique_ptr<endpoint> b_;
  peer_id a_to_b_{};
  peer_id b_to_a_{};
};

using Kinds =
    ::testing::Types<loopback_kind, tcp_kind, shm_kind, tcp_local_mr_kind, shm_local_mr_kind>;
class KindNames {
 public:
  template <class T>
  static std::string GetName(int) {
    return T::name;
  }
};
TYPED_TEST_SUITE(TransportConformance, Kinds, KindNames);

TYPED_TEST(TransportConformance, MessagesFromOnePeerArriveInOrder) {
  constexpr std::uint64_t count = 300;
  std::vector<event> stash;
  for (std::uint64_t i = 0; i < count; ++i) {
    auto sent = this->a_->send(this->a_to_b_, testing::pack({i, i * 3}), in(5000ms));
    if (!sent && sent.error().code == errc::overloaded) {  // bounded: drain and retry
      this->drain(*this->a_);
      --i;
      continue;
    }
    ASSERT_TRUE(sent.has_value()) << sent.error().to_string();
  }
  for (std::uint64_t i = 0; i < count; ++i) {
    auto got = await_event(
        *this->b_, [](const event& e) { return e.kind == event_kind::message; }, 5000ms, &stash);
    ASSERT_TRUE(got.has_value()) << "message " << i << " missing";
    EXPECT_EQ(got->peer, this->b_to_a_);
    ASSERT_EQ(testing::unpack(got->payload, 0), i);
    ASSERT_EQ(testing::unpack(got->payload, 1), i * 3);
  }
  std::printf("%s: %llu provider messages carried several of the sends\n", TypeParam::name,
              static_cast<unsigned long long>(this->a_->stats().batches_sent));
}

TYPED_TEST(TransportConformance, AResetPeerIsReachedAgainUnderItsIdInBothDirections) {
  // What membership does to a member declared dead after a partition: a new connection.
  for (int round = 0; round < 3; ++round) {
    this->a_->reset_peer(this->b_->local_address());
    ASSERT_TRUE(this->a_->send(this->a_to_b_, testing::pack({100u + round}), in(5000ms)));
    auto got = await_event(
        *this->b_, [](const event& e) { return e.kind == event_kind::message; }, 5000ms);
    ASSERT_TRUE(got.has_value()) << "round " << round;
    EXPECT_EQ(got->peer, this->b_to_a_);
    EXPECT_EQ(testing::unpack(got->payload, 0), 100u + round);
    // And back, over whatever connection b has to a now.
    ASSERT_TRUE(this->b_->send(this->b_to_a_, testing::pack({200u + round}), in(5000ms)));
    auto back = await_event(
        *this->a_, [](const event& e) { return e.kind == event_kind::message; }, 5000ms);
    ASSERT_TRUE(back.has_value()) << "round " << round;
    EXPECT_EQ(back->peer, this->a_to_b_);
    EXPECT_EQ(testing::unpack(back->payload, 0), 200u + round);
  }
}

TYPED_TEST(TransportConformance, SmallAndLargeMessagesArriveIntact) {
  const std::size_t max = this->a_->limits().max_message_bytes;
  for (std::size_t size : {std::size_t{1}, std::size_t{64}, std::size_t{4096}, max}) {
    std::vector<std::byte> bytes(size);
    testing::fill(bytes, size);
    ASSERT_TRUE(this->a_->send(this->a_to_b_, bytes, in(5000ms)).has_value());
    auto got = await_event(
        *this->b_, [](const event& e) { return e.kind == event_kind::message; }, 5000ms);
    ASSERT_TRUE(got.has_value()) << size;
    EXPECT_EQ(got->payload, bytes) << size;
  }
  std::vector<std::byte> too_big(max + 1);
  auto refused = this->a_->send(this->a_to_b_, too_big, in(5000ms));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, errc::invalid_argument);
}

TYPED_TEST(TransportConformance, RmaWriteWithNotifyAndReadAreVerified) {
  constexpr std::uint64_t max = 64ull << 20;
  auto remote_region = this->b_->allocate_region(max);
  auto local_region = this->a_->allocate_region(max);
  auto back_region = this->a_->allocate_region(max);
  ASSERT_TRUE(remote_region && local_region && back_region);
  auto target = this->grant_to_a(*remote_region, max);
  for (std::uint64_t size : {4ull << 10, 64ull << 10, 1ull << 20, 16ull << 20, 64ull << 20}) {
    auto src = this->a_->region_bytes(*local_region).first(size);
    remote_slice slice = target;
    slice.length = size;
    // A plain write: its completion alone must mean the data has landed.
    testing::fill(src, size + 3);
    auto plain = this->a_->write({*local_region, 0, size}, slice, in(20000ms), std::nullopt);
    ASSERT_TRUE(plain.has_value()) << plain.error().to_string();
    auto plain_done = await_event(
        *this->a_, [&](const event& e) { return e.op == *plain; }, 20000ms);
    ASSERT_TRUE(plain_done.has_value() && plain_done->status.has_value()) << size;
    ASSERT_EQ(testing::digest(this->b_->region_bytes(*remote_region).first(size)),
              testing::digest(src))
        << "write_done before the data landed, size " << size;
    // A write with notify: the target learns it landed.
    testing::fill(src, size);
    auto wrote = this->a_->write({*local_region, 0, size}, slice, in(20000ms), size);
    ASSERT_TRUE(wrote.has_value()) << wrote.error().to_string();
    auto done = await_event(
        *this->a_, [&](const event& e) { return e.op == *wrote; }, 20000ms);
    ASSERT_TRUE(done.has_value()) << size;
    ASSERT_TRUE(done->status.has_value()) << done->status.error().to_string();
    EXPECT_EQ(done->kind, event_kind::write_done);
    auto note = await_event(
        *this->b_, [](const event& e) { return e.kind == event_kind::notify; }, 20000ms);
    ASSERT_TRUE(note.has_value()) << size;
    EXPECT_EQ(note->data, size);
    EXPECT_EQ(note->peer, this->b_to_a_);
    auto landed = this->b_->region_bytes(*remote_region).first(size);
    ASSERT_EQ(testing::digest(landed), testing::digest(src)) << size;

    auto read = this->a_->read({*back_region, 0, size}, slice, in(20000ms));
    ASSERT_TRUE(read.has_value()) << read.error().to_string();
    auto got = await_event(
        *this->a_, [&](const event& e) { return e.op == *read; }, 20000ms);
    ASSERT_TRUE(got.has_value());
    ASSERT_TRUE(got->status.has_value()) << got->status.error().to_string();
    EXPECT_EQ(got->kind, event_kind::read_done);
    EXPECT_EQ(testing::digest(this->a_->region_bytes(*back_region).first(size)),
              testing::digest(src));
  }
  EXPECT_TRUE(this->a_->free_region(*back_region).has_value());
}

TYPED_TEST(TransportConformance, BadDescriptorsAreRefusedBeforePosting) {
  auto remote_region = this->b_->allocate_region(1 << 20);
  auto local_region = this->a_->allocate_region(1 << 20);
  ASSERT_TRUE(remote_region && local_region);
  auto base = this->grant_to_a(*remote_region, 64 << 10);  // only the first 64 KiB
  auto refused = [&](remote_slice bad) {
    bad.length = std::min<std::uint64_t>(bad.length, 1 << 20);
    auto r = this->a_->write({*local_region, 0, bad.length}, bad, in(2000ms), std::nullopt);
    return !r.has_value() && r.error().code == errc::invalid_argument;
  };
  remote_slice beyond = base;
  beyond.offset = 32 << 10;  // runs 32 KiB past the grant
  EXPECT_TRUE(refused(beyond));
  remote_slice wrong_key = base;
  wrong_key.key ^= 0x5a5a;
  EXPECT_TRUE(refused(wrong_key));
  remote_slice wrong_node = base;
  wrong_node.node = static_cast<node_id>(static_cast<std::uint64_t>(base.node) ^ 0xff00);
  EXPECT_TRUE(refused(wrong_node));
  remote_slice wrapping = base;
  wrapping.offset = ~std::uint64_t{0} - 10;
  wrapping.length = 100;
  EXPECT_TRUE(refused(wrapping));
  EXPECT_GE(this->a_->stats().descriptors_refused, 4u);
  // Nothing was posted and the connection is intact: a valid write still lands.
  auto ok = this->a_->write({*local_region, 0, 4096}, {base.node, base.key, 0, 4096}, in(5000ms),
                            std::uint64_t{99});
  ASSERT_TRUE(ok.has_value());
  auto done = await_event(
      *this->a_, [&](const event& e) { return e.op == *ok; }, 5000ms);
  ASSERT_TRUE(done.has_value());
  EXPECT_TRUE(done->status.has_value());
  // A freed region's grants are revoked at the peer.
  ASSERT_TRUE(this->b_->free_region(*remote_region).has_value());
  ASSERT_TRUE(this->b_->send(this->b_to_a_, testing::pack({1}), in(5000ms)).has_value());
  ASSERT_TRUE(await_event(
      *this->a_, [](const event& e) { return e.kind == event_kind::message; }, 5000ms));
  EXPECT_TRUE(refused({base.node, base.key, 0, 4096}));
}

TYPED_TEST(TransportConformance, InflightOperationsAreBounded) {
  endpoint_limits limits;
  limits.max_inflight_ops = 4;
  auto small = this->make("c", limits);
  ASSERT_TRUE(small);
  auto peer = small->add_peer(this->b_->local_address(), in(5000ms));
  ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(small->send(*peer, testing::pack({1}), in(5000ms)));
  auto refused = small->send(*peer, testing::pack({1}), in(5000ms));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, errc::overloaded);
  // Reported completions free their slots.
  std::vector<event> stash;
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(await_event(
        *small, [](const event& e) { return e.kind == event_kind::send_done; }, 5000ms, &stash));
  EXPECT_TRUE(small->send(*peer, testing::pack({1}), in(5000ms)).has_value());
}

TYPED_TEST(TransportConformance, MessagesBeyondThePeersLimitAreRefusedBySender) {
  // Every endpoint announces its receive limit when it connects; a larger message is
  // refused before it is posted (shm would stall on it), and the link keeps working.
  endpoint_limits big;
  big.max_message_bytes = 4 * this->b_->limits().max_message_bytes;
  auto sender = this->make("big", big);
  ASSERT_TRUE(sender);
  auto peer = sender->add_peer(this->b_->local_address(), in(5000ms));
  ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
  std::vector<std::byte> huge(this->b_->limits().max_message_bytes + 1);
  auto refused = sender->send(*peer, huge, in(5000ms));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, errc::invalid_argument);
  huge.resize(this->b_->limits().max_message_bytes);
  ASSERT_TRUE(sender->send(*peer, huge, in(5000ms)).has_value());
  auto got = await_event(
      *this->b_, [](const event& e) { return e.kind == event_kind::message; }, 5000ms);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->payload.size(), huge.size());
  EXPECT_EQ(this->b_->stats().bad_frames, 0u);
}

TYPED_TEST(TransportConformance, InterruptWakesAWaitFromAnotherThread) {
  while (this->a_->wait(200ms)) this->drain(*this->a_);  // let late completions settle
  this->a_->interrupt();  // before the wait: the next wait returns at once
  auto start = clock::now();
  EXPECT_FALSE(this->a_->wait(5000ms));
  EXPECT_LT(clock::now() - start, 2000ms);
  std::thread waker([&] {
    std::this_thread::sleep_for(50ms);
    this->a_->interrupt();
  });
  start = clock::now();
  EXPECT_FALSE(this->a_->wait(5000ms));
  EXPECT_LT(clock::now() - start, 2000ms);
  waker.join();
}

TYPED_TEST(TransportConformance, AnUnreachablePeerFailsByTheDeadline) {
  const std::string provider = TypeParam::provider;
  address nobody{provider == "tcp" ? "127.0.0.1:1" : "nobody-listens-here"};
  const auto start = clock::now();
  auto peer = this->a_->add_peer(nobody, start + 1000ms);
  ASSERT_FALSE(peer.has_value());
  std::printf("unreachable peer: %s\n", peer.error().to_string().c_str());
  EXPECT_LT(clock::now() - start, 2500ms);
  // Whatever is still queued for that address does not hold up the peers that work.
  const auto sent_at = clock::now();
  ASSERT_TRUE(this->a_->send(this->a_to_b_, testing::pack({5}), in(5000ms)).has_value());
  auto got = await_event(
      *this->b_, [](const event& e) { return e.kind == event_kind::message; }, 5000ms);
  ASSERT_TRUE(got.has_value());
  EXPECT_LT(clock::now() - sent_at, 1000ms);
}

TYPED_TEST(TransportConformance, AddingAPeerTwiceGivesTheSameId) {
  auto again = this->a_->add_peer(this->b_->local_address(), in(5000ms));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, this->a_to_b_);
}

TYPED_TEST(TransportConformance, SendsFromManyThreadsArriveInEachThreadsOrder) {
  // send() is the one data call any thread may make; the receiver takes frames through
  // the event handler where the transport has one (on its own thread), else by polling.
  constexpr std::uint64_t threads = 3;
  constexpr std::uint64_t per_thread = 200;
  std::mutex mu;
  std::vector<std::vector<std::uint64_t>> got(threads);
  auto record = [&](const event& e) {
    std::lock_guard lock(mu);
    got[testing::unpack(e.payload, 0)].push_back(testing::unpack(e.payload, 1));
  };
  const bool handler = this->b_->set_event_handler([&](event& e) {
    if (e.kind != event_kind::message) return false;
    EXPECT_EQ(e.peer, this->b_to_a_);
    record(e);
    return true;
  });
  std::printf("%s: event handler %s\n", TypeParam::name, handler ? "installed" : "unsupported");
  std::atomic<std::uint64_t> done{0};
  std::vector<std::thread> senders;
  for (std::uint64_t t = 0; t < threads; ++t) {
    senders.emplace_back([&, t] {
      for (std::uint64_t i = 0; i < per_thread; ++i) {
        auto sent = this->a_->send(this->a_to_b_, testing::pack({t, i}), in(5000ms));
        if (!sent && sent.error().code == errc::overloaded) {  // the owner drains: retry
          std::this_thread::yield();
          --i;
          continue;
        }
        EXPECT_TRUE(sent.has_value()) << sent.error().to_string();
      }
      done.fetch_add(1);
    });
  }
  std::vector<event> batch(64);
  const auto until = clock::now() + 20000ms;
  auto received = [&] {
    std::lock_guard lock(mu);
    std::size_t n = 0;
    for (const auto& g : got) n += g.size();
    return n;
  };
  while (clock::now() < until && (done.load() < threads || received() < threads * per_thread)) {
    this->drain(*this->a_);  // the owner keeps completions flowing
    if (!handler) {
      (void)this->b_->wait(1ms);
      const auto n = this->b_->poll(batch);
      for (std::size_t i = 0; i < n; ++i) {
        if (batch[i].kind == event_kind::message) record(batch[i]);
      }
    } else {
      std::this_thread::sleep_for(1ms);
    }
  }
  for (auto& t : senders) t.join();
  EXPECT_TRUE(this->b_->set_event_handler({}) == handler);
  std::lock_guard lock(mu);
  for (std::uint64_t t = 0; t < threads; ++t) {
    ASSERT_EQ(got[t].size(), per_thread) << "thread " << t;
    for (std::uint64_t i = 0; i < per_thread; ++i) ASSERT_EQ(got[t][i], i) << "thread " << t;
  }
}

TYPED_TEST(TransportConformance, TheTimerFiresOnceOnTheHandlersThreadAtItsLatestTime) {
  std::mutex mu;
  std::vector<clock::time_point> fired;
  std::thread::id handler_thread;
  const bool handler = this->b_->set_event_handler([&](event& e) {
    if (e.kind != event_kind::timer) return false;
    std::lock_guard lock(mu);
    fired.push_back(clock::now());
    handler_thread = std::this_thread::get_id();
    return true;
  });
  if (!handler) {
    EXPECT_FALSE(this->b_->set_timer(clock::now())) << "a timer needs the handler's thread";
    return;
  }
  auto count = [&] {
    std::lock_guard lock(mu);
    return fired.size();
  };
  // A later time replaces an earlier one (nothing fires at the first), and an earlier
  // one replaces a later one.
  const auto start = clock::now();
  ASSERT_TRUE(this->b_->set_timer(start + 30ms));
  ASSERT_TRUE(this->b_->set_timer(start + 400ms));
  ASSERT_TRUE(this->b_->set_timer(start + 60ms));
  while (count() == 0 && clock::now() < start + 5000ms) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(500ms);  // past the replaced time: it must not fire as well
  {
    std::lock_guard lock(mu);
    ASSERT_EQ(fired.size(), 1u);
    EXPECT_GE(fired[0], start + 60ms);
    EXPECT_NE(handler_thread, std::this_thread::get_id());
  }
  // Cancelled: nothing fires.
  ASSERT_TRUE(this->b_->set_timer(clock::now() + 20ms));
  ASSERT_TRUE(this->b_->set_timer(clock::time_point::max()));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(count(), 1u);
  // Set from the handler's own thread (as the handler does): fires again.
  ASSERT_TRUE(this->b_->set_event_handler([&](event& e) {
    if (e.kind != event_kind::timer) return false;
    std::lock_guard lock(mu);
    fired.push_back(clock::now());
    if (fired.size() == 2) (void)this->b_->set_timer(clock::now() + 10ms);
    return true;
  }));
  ASSERT_TRUE(this->b_->set_timer(clock::now()));
  while (count() < 3 && clock::now() < start + 10000ms) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(count(), 3u);
  EXPECT_TRUE(this->b_->set_event_handler({}));
}

// verbs and efa (which require FI_MR_LOCAL) are chosen by the same code as tcp and shm;
// without their hardware they fail at once, by name, and are never replaced by another.
TEST(FabricProviders, WithoutTheirDeviceVerbsAndEfaFailAtOnce) {
  for (const char* provider : {"verbs", "efa"}) {
    endpoint_config config;
    config.provider = provider;
    const auto start = clock::now();
    auto ep = make_endpoint(config);
    if (ep) {
      std::printf("%s: a device is present, opened\n", provider);
      continue;
    }
    EXPECT_EQ(ep.error().code, errc::not_found) << provider;
    EXPECT_NE(ep.error().message.find("provider not available"), std::string::npos)
        << ep.error().to_string();
    EXPECT_LT(clock::now() - start, 2s) << provider;
  }
}

// Memory keys come from the CSPRNG, not from the endpoint's seeded generator: a node's
// seed is printed for replay, and its keys must not follow from it.
TEST(TransportKeys, MemoryKeysDoNotFollowFromTheEndpointsSeed) {
  std::vector<std::uint64_t> keys;
  for (int run = 0; run < 2; ++run) {
    endpoint_config config;
    config.provider = "tcp";
    config.bind.text = "127.0.0.1:0";
    config.seed = 7;  // the same both times
    auto a = make_endpoint(config);
    config.seed = 0;
    auto b = make_endpoint(config);
    ASSERT_TRUE(a && b);
    auto peer = (*a)->add_peer((*b)->local_address(), in(5000ms));
    ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
    auto region = (*a)->allocate_region(4096);
    ASSERT_TRUE(region.has_value());
    auto granted = (*a)->grant(*peer, {*region, 0, 4096});
    ASSERT_TRUE(granted.has_value()) << granted.error().to_string();
    keys.push_back(granted->key);
  }
  EXPECT_NE(keys[0], keys[1]);
}

}  // namespace
}  // namespace baton::transport
