// The bridge's protocol under CAF's deterministic scheduler: frames out through a
// recording sink, frames in as raw bytes, no threads and no network.
#include "runtime/bridge.hpp"

#include <thread>

#include <gtest/gtest.h>
#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include "runtime/membership_driver.hpp"
#include "runtime/messages.hpp"
#include "runtime/peer_link.hpp"

namespace baton::runtime {
namespace {

using namespace std::chrono_literals;

struct posted {
  std::string node;
  wire::frame frame;
};

/// Records what bridges post, decoded.
class recording_sink final : public frame_sink {
 public:
  void attach(const std::string& node, const std::string& address, caf::actor) override {
    attached.emplace_back(node, address);
  }
  void post(const std::string& node, wire::encoded_frame frame,
            std::chrono::steady_clock::time_point) override {
    auto decoded = wire::decoder{}.decode(frame.bytes());
    ASSERT_TRUE(decoded) << decoded.error().message;
    frames.push_back({node, std::move(*decoded)});
  }
  void detach(const std::string& node, const caf::actor&) override { detached.push_back(node); }

  std::vector<std::pair<std::string, std::string>> attached;
  std::vector<posted> frames;
  std::vector<std::string> detached;
};

struct seen {
  std::vector<std::shared_ptr<const wire::frame>> inbound;
  std::vector<remote_down> downs;
  std::vector<delivery_failure> failures;
  std::vector<std::string> replies;  // request outcomes: "reply" or the error text
};

/// A local actor that records everything the runtime delivers to it.
caf::behavior recorder(caf::event_based_actor*, std::shared_ptr<seen> log) {
  return {
      [log](inbound& in) { log->inbound.push_back(in.frame); },
      [log](remote_down& d) { log->downs.push_back(d); },
      [log](delivery_failure& f) { log->failures.push_back(f); },
  };
}

class BridgeTest : public ::testing::Test {
 protected:
  BridgeTest()
      : sys_(configure(cfg_)),
        sched_(dynamic_cast<caf::scheduler::test_coordinator&>(sys_.scheduler())) {}

  static caf::actor_system_config& configure(caf::actor_system_config& cfg) {
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.verbosity", caf::atom("quiet"));
    return cfg;
  }

  void SetUp() override {
    bridge_config config;
    config.credit_window = 4;
    config.max_queued = 3;
    ctx_.emplace("a", 7, sys_, sink_, metrics_, config);
    worker_ = sys_.spawn(recorder, log_);
    ctx_->publish("worker", worker_);
    ctx_->update_member({"b",
                         5,
                         wire::member_state::alive,
                         wire::node_kind::cpu,
                         "cpu",
                         {wire::role::decode},
                         "fabric-b",
                         ""});
    bridge_ = ctx_->bridge("b");
    sched_.run();
  }

  void TearDown() override {
    (void)ctx_->shutdown();
    sched_.run();
  }

  /// A frame from b's actor "x" to a's `actor`, as raw bytes arriving at the bridge.
  void arrive(wire::body body, std::string actor = "worker", std::uint64_t incarnation = 5,
              std::uint64_t id = 100, std::uint64_t in_reply_to = 0, caf::actor at = {}) {
    wire::frame f;
    f.source = {"b", "x"};
    f.target = {"a", std::move(actor)};
    f.sender_incarnation = incarnation;
    f.message_id = id;
    f.in_reply_to = in_reply_to;
    f.body = std::move(body);
    auto encoded = wire::encode(f);
    ASSERT_TRUE(encoded);
    auto bytes =
        std::make_shared<std::vector<std::byte>>(encoded->bytes().begin(), encoded->bytes().end());
    caf::anon_send(at ? at : bridge_, raw_frame{std::move(bytes)});
    sched_.run();
  }

  void send_from_worker(wire::body body) {
    caf::anon_send(bridge_, outbound{{"a", "worker"}, {"b", "x"}, std::move(body), 0, {}});
    sched_.run();
  }

  static wire::token_batch tokens(std::uint32_t position) {
    return {wire::request_id{1}, 0, position, {42}, {}};
  }

  caf::actor_system_config cfg_;
  caf::actor_system sys_;
  caf::scheduler::test_coordinator& sched_;
  recording_sink sink_;
  metrics_registry metrics_;
  std::optional<node_context> ctx_;
  std::shared_ptr<seen> log_ = std::make_shared<seen>();
  caf::actor worker_;
  caf::actor bridge_;
};

TEST_F(BridgeTest, ConnectsOnFirstUseAndSendsFramesWithTheNodesIdentity) {
  ASSERT_EQ(sink_.attached.size(), 1u);
  EXPECT_EQ(sink_.attached[0], std::make_pair(std::string("b"), std::string("fabric-b")));
  send_from_worker(tokens(3));
  ASSERT_EQ(sink_.frames.size(), 1u);
  const auto& f = sink_.frames[0].frame;
  EXPECT_EQ(sink_.frames[0].node, "b");
  EXPECT_EQ(f.source, (wire::actor_address{"a", "worker"}));
  EXPECT_EQ(f.sender_incarnation, 7u);
  EXPECT_NE(f.message_id, 0u);
  EXPECT_EQ(std::get<wire::token_batch>(f.body), tokens(3));
}

TEST_F(BridgeTest, DeliversInboundFramesToTheNamedActor) {
  arrive(tokens(9));
  ASSERT_EQ(log_->inbound.size(), 1u);
  EXPECT_EQ(std::get<wire::token_batch>(log_->inbound[0]->body), tokens(9));
}

TEST_F(BridgeTest, AnswersAnUnknownTargetWithAFailure) {
  arrive(tokens(1), "nobody", 5, 555);
  EXPECT_TRUE(log_->inbound.empty());
  ASSERT_EQ(sink_.frames.size(), 1u);
  const auto& reply = sink_.frames[0].frame;
  EXPECT_EQ(reply.in_reply_to, 555u);
  EXPECT_EQ(reply.target, (wire::actor_address{"b", "x"}));
  const auto& failure = std::get<wire::failure>(reply.body);
  EXPECT_EQ(failure.code, errc::not_found);
  EXPECT_NE(failure.message.find("no actor 'nobody' on node a"), std::string::npos);
}

TEST_F(BridgeTest, DropsFramesFromAnOldIncarnation) {
  arrive(tokens(1), "worker", 4);
  EXPECT_TRUE(log_->inbound.empty());
  EXPECT_NE(metrics_.prometheus_text().find("baton_frames_stale_total{peer=\"b\"} 1"),
            std::string::npos);
  arrive(tokens(2), "worker", 6);  // a restarted b is newer: accepted
  EXPECT_EQ(log_->inbound.size(), 1u);
}

TEST_F(BridgeTest, DropsWorkSentToTheProcessThisNodeWasBeforeItRestarted) {
  // This node is incarnation 7: a frame b addressed to incarnation 6 was meant for the
  // process that ran here before (a restart at the same address); 0 is "any".
  const auto addressed_to = [&](std::uint64_t incarnation, std::uint32_t position) {
    wire::frame f;
    f.source = {"b", "x"};
    f.target = {"a", "worker"};
    f.sender_incarnation = 5;
    f.target_incarnation = incarnation;
    f.message_id = 200 + position;
    f.body = tokens(position);
    auto encoded = wire::encode(f);
    ASSERT_TRUE(encoded);
    caf::anon_send(bridge_, raw_frame{std::make_shared<std::vector<std::byte>>(
                                encoded->bytes().begin(), encoded->bytes().end())});
    sched_.run();
  };
  addressed_to(6, 1);
  EXPECT_TRUE(log_->inbound.empty());
  EXPECT_NE(metrics_.prometheus_text().find("baton_frames_stale_total{peer=\"b\"} 1"),
            std::string::npos);
  addressed_to(7, 2);
  addressed_to(0, 3);
  ctx_->set_incarnation(8);  // a refutation: the same process
  addressed_to(7, 4);
  ASSERT_EQ(log_->inbound.size(), 3u);
  EXPECT_EQ(std::get<wire::token_batch>(log_->inbound[2]->body), tokens(4));
}

TEST_F(BridgeTest, RejectsMalformedBytesAndKeepsServing) {
  auto garbage = std::make_shared<std::vector<std::byte>>(64, std::byte{0x5a});
  caf::anon_send(bridge_, raw_frame{garbage});
  sched_.run();
  EXPECT_NE(metrics_.prometheus_text().find("baton_frames_rejected_total{peer=\"b\"} 1"),
            std::string::npos);
  arrive(tokens(1));
  EXPECT_EQ(log_->inbound.size(), 1u);
}

TEST_F(BridgeTest, CreditBoundsFramesInFlightAndOverloadIsReported) {
  for (std::uint32_t i = 0; i < 8; ++i) send_from_worker(tokens(i));
  // Window 4 goes out, 3 wait for credit, the 8th is refused as overloaded.
  EXPECT_EQ(sink_.frames.size(), 4u);
  ASSERT_EQ(log_->failures.size(), 1u);
  EXPECT_EQ(log_->failures[0].reason.code, errc::overloaded);
  arrive(wire::credit{2});
  ASSERT_EQ(sink_.frames.size(), 6u);
  EXPECT_EQ(std::get<wire::token_batch>(sink_.frames[5].frame.body).first_position, 5u);
  // Control frames are exempt: membership still flows while application frames wait.
  caf::anon_send(
      bridge_,
      outbound{
          {"a", "membership"}, {"b", "membership"}, wire::heartbeat{1, false, 0, 0, {}}, 0, {}});
  sched_.run();
  EXPECT_EQ(sink_.frames.size(), 7u);
}

TEST_F(BridgeTest, ReturnsCreditEveryHalfWindow) {
  arrive(tokens(1), "worker", 5, 1);
  EXPECT_TRUE(sink_.frames.empty());
  arrive(tokens(2), "worker", 5, 2);
  ASSERT_EQ(sink_.frames.size(), 1u);
  EXPECT_EQ(std::get<wire::credit>(sink_.frames[0].frame.body).frames, 2u);
}

TEST_F(BridgeTest, RequestsGetTheirReplyOrTimeOut) {
  auto outcomes = log_;
  auto requester = [&](std::chrono::milliseconds timeout) {
    sys_.spawn(
        [=](caf::event_based_actor* self, caf::actor bridge) {
          self->request(bridge, timeout, request_atom::value,
                        outbound{{"a", "worker"},
                                 {"b", "x"},
                                 tokens(1),
                                 0,
                                 std::chrono::steady_clock::now() + timeout})
              .then([=](inbound&) { outcomes->replies.push_back("reply"); },
                    [=](caf::error& e) { outcomes->replies.push_back(caf::to_string(e)); });
        },
        bridge_);
    sched_.run();
  };
  requester(1s);
  ASSERT_EQ(sink_.frames.size(), 1u);
  arrive(tokens(2), "worker", 5, 900, sink_.frames[0].frame.message_id);
  ASSERT_EQ(log_->replies.size(), 1u);
  EXPECT_EQ(log_->replies[0], "reply");
  EXPECT_TRUE(log_->inbound.empty()) << "a reply goes to the request, not the mailbox";

  requester(1s);
  ASSERT_EQ(sink_.frames.size(), 2u);
  arrive(wire::failure{errc::not_found, "no actor 'x'"}, "worker", 5, 901,
         sink_.frames[1].frame.message_id);
  ASSERT_EQ(log_->replies.size(), 2u);
  EXPECT_NE(log_->replies[1].find("no actor 'x'"), std::string::npos);

  requester(1s);
  sched_.trigger_timeouts();
  sched_.run();
  ASSERT_EQ(log_->replies.size(), 3u);
  EXPECT_NE(log_->replies[2].find("timeout"), std::string::npos) << log_->replies[2];
}

TEST_F(BridgeTest, RemoteMonitorsReportDownFramesAndNodeDeath) {
  caf::anon_send(bridge_, watch_remote{{"b", "x"}, {"a", "worker"}});
  caf::anon_send(bridge_, watch_remote{{"b", "y"}, {"a", "worker"}});
  sched_.run();
  ASSERT_EQ(sink_.frames.size(), 2u);
  EXPECT_EQ(std::get<wire::monitor>(sink_.frames[0].frame.body).watcher,
            (wire::actor_address{"a", "worker"}));
  EXPECT_EQ(sink_.frames[0].frame.target, (wire::actor_address{"b", "x"}));

  arrive(wire::down{{"b", "x"}, errc::failed, "crashed"});
  ASSERT_EQ(log_->downs.size(), 1u);
  EXPECT_EQ(log_->downs[0].actor, (wire::actor_address{"b", "x"}));
  EXPECT_EQ(log_->downs[0].reason.message, "crashed");

  caf::anon_send(bridge_, node_gone{"b", error{errc::disconnected, "node b was declared dead"}});
  sched_.run();
  ASSERT_EQ(log_->downs.size(), 2u);
  EXPECT_EQ(log_->downs[1].actor, (wire::actor_address{"b", "y"}));
  EXPECT_EQ(log_->downs[1].reason.code, errc::disconnected);
  EXPECT_EQ(sink_.detached, std::vector<std::string>{"b"});
}

TEST_F(BridgeTest, ANodeThatRestartsAtAnotherAddressGetsANewBridgeThereAndTheOldOneFails) {
  caf::anon_send(bridge_, watch_remote{{"b", "x"}, {"a", "worker"}});
  sched_.run();
  // Its new incarnation is announced at another address (by membership, or by its join
  // reaching the hub): the bridge to the old address fails its work and detaches.
  auto moved = [&](const std::function<void()>& announce) {
    const auto before = ctx_->bridge("b");
    announce();
    sched_.run();
    const auto after = ctx_->bridge("b");
    sched_.run();
    EXPECT_NE(before, after);
    return after;
  };
  bridge_ = moved([&] {
    ctx_->update_member({"b",
                         6,
                         wire::member_state::alive,
                         wire::node_kind::cpu,
                         "cpu",
                         {wire::role::decode},
                         "fabric-b2",
                         ""});
  });
  ASSERT_EQ(log_->downs.size(), 1u);
  EXPECT_EQ(log_->downs[0].actor, (wire::actor_address{"b", "x"}));
  EXPECT_NE(log_->downs[0].reason.message.find("node b moved to fabric-b2"), std::string::npos);
  EXPECT_EQ(sink_.detached, std::vector<std::string>{"b"});
  ASSERT_EQ(sink_.attached.size(), 2u);
  EXPECT_EQ(sink_.attached[1], std::make_pair(std::string("b"), std::string("fabric-b2")));

  // The same address again: the same bridge.
  EXPECT_EQ(ctx_->bridge("b", "fabric-b2"), bridge_);
  // A frame naming a newer address than the directory's (a join at the hub) moves it too.
  bridge_ = moved([&] { (void)ctx_->bridge("b", "fabric-b3"); });
  EXPECT_EQ(sink_.detached.size(), 2u);
  ASSERT_EQ(sink_.attached.size(), 3u);
  EXPECT_EQ(sink_.attached[2], std::make_pair(std::string("b"), std::string("fabric-b3")));
  send_from_worker(tokens(3));
  ASSERT_FALSE(sink_.frames.empty());
  EXPECT_EQ(sink_.frames.back().node, "b");
}

TEST_F(BridgeTest, ALocalActorWatchedByAPeerReportsItsTermination) {
  arrive(wire::monitor{{"b", "x"}}, "worker");
  EXPECT_TRUE(sink_.frames.empty());
  caf::anon_send_exit(worker_, caf::exit_reason::kill);
  sched_.run();
  ASSERT_EQ(sink_.frames.size(), 1u);
  const auto& d = std::get<wire::down>(sink_.frames[0].frame.body);
  EXPECT_EQ(d.actor, (wire::actor_address{"a", "worker"}));
  EXPECT_EQ(sink_.frames[0].frame.target, (wire::actor_address{"b", "x"}));
  // Watching an actor that does not exist reports it down at once.
  arrive(wire::monitor{{"b", "x"}}, "ghost");
  ASSERT_EQ(sink_.frames.size(), 2u);
  EXPECT_EQ(std::get<wire::down>(sink_.frames[1].frame.body).code, errc::not_found);
}

TEST_F(BridgeTest, SendsFromOtherThreadsShareTheBridgesCreditWindow) {
  // Window 4: two frames through the bridge, two straight through the link.
  send_from_worker(tokens(1));
  send_from_worker(tokens(2));
  auto link = ctx_->link("b");
  ASSERT_NE(link, nullptr);
  std::thread other([&] {
    for (std::uint32_t i = 3; i <= 5; ++i) {
      auto sent = link->send({"a", "router"}, {"b", "decode"}, tokens(i));
      EXPECT_TRUE(sent) << sent.error().message;
    }
  });
  other.join();
  ASSERT_EQ(sink_.frames.size(), 4u) << "the fifth waits for credit";
  EXPECT_EQ(sink_.frames[3].frame.source, (wire::actor_address{"a", "router"}));
  EXPECT_EQ(sink_.frames[3].frame.sender_incarnation, 7u);
  arrive(wire::credit{1});  // through the bridge: releases what the link queued
  ASSERT_EQ(sink_.frames.size(), 5u);
  EXPECT_EQ(std::get<wire::token_batch>(sink_.frames[4].frame.body).first_position, 5u);
}

TEST_F(BridgeTest, FramesRoutedToASeedsBridgeReachTheirSendersBridge) {
  // A node joined through b's address has a placeholder bridge for it, and the transport
  // routes b's frames by connection, so they may reach the placeholder: b's credit must
  // still open b's window, and what b sends must be answered with credit from b's link.
  auto seed = ctx_->bridge("seed@fabric-b", "fabric-b");
  sched_.run();
  for (std::uint32_t i = 0; i < 5; ++i) send_from_worker(tokens(i));
  ASSERT_EQ(sink_.frames.size(), 4u) << "window 4: the fifth waits for credit";
  arrive(wire::credit{1}, "worker", 5, 100, 0, seed);
  ASSERT_EQ(sink_.frames.size(), 5u) << "b's credit went to the placeholder's window";
  EXPECT_EQ(sink_.frames[4].node, "b");
  arrive(tokens(1), "worker", 5, 1, 0, seed);
  arrive(tokens(2), "worker", 5, 2, 0, seed);
  ASSERT_EQ(log_->inbound.size(), 2u);
  ASSERT_EQ(sink_.frames.size(), 6u);
  EXPECT_EQ(sink_.frames[5].node, "b");
  EXPECT_EQ(std::get<wire::credit>(sink_.frames[5].frame.body).frames, 2u);
}

TEST_F(BridgeTest, AnActorsFastPathTakesItsFramesAndReturnsTheirCredit) {
  std::vector<wire::frame> taken;
  ctx_->set_taker("worker", [&](const wire::frame& f, std::chrono::steady_clock::time_point) {
    taken.push_back(f);
    return std::holds_alternative<wire::token_batch>(f.body);
  });
  auto bytes = [](wire::body body, std::string actor = "worker", std::uint64_t incarnation = 5,
                  std::uint64_t in_reply_to = 0) {
    wire::frame f;
    f.source = {"b", "x"};
    f.target = {"a", std::move(actor)};
    f.sender_incarnation = incarnation;
    f.message_id = 100;
    f.in_reply_to = in_reply_to;
    f.body = std::move(body);
    auto encoded = wire::encode(f);
    EXPECT_TRUE(encoded);
    return std::move(*encoded);
  };
  const auto now = std::chrono::steady_clock::now();
  EXPECT_TRUE(ctx_->take(bytes(tokens(1)).bytes(), now));
  // Left to the bridge: another actor, an old incarnation, a reply, a control frame,
  // what the taker refuses, and what does not decode.
  EXPECT_FALSE(ctx_->take(bytes(tokens(2), "nobody").bytes(), now));
  EXPECT_FALSE(ctx_->take(bytes(tokens(3), "worker", 4).bytes(), now));
  EXPECT_FALSE(ctx_->take(bytes(tokens(4), "worker", 5, 99).bytes(), now));
  EXPECT_FALSE(ctx_->take(bytes(wire::credit{1}).bytes(), now));
  EXPECT_FALSE(ctx_->take(bytes(wire::finish{}).bytes(), now));
  auto cut = bytes(tokens(5));
  cut.words.resize(cut.words.size() - 1);
  EXPECT_FALSE(ctx_->take(cut.bytes(), now));
  ASSERT_EQ(taken.size(), 2u) << "only the frames for it, current and not replies";
  EXPECT_TRUE(sink_.frames.empty());
  // Half a window (2) taken: credit goes back to b.
  EXPECT_TRUE(ctx_->take(bytes(tokens(6)).bytes(), now));
  ASSERT_EQ(sink_.frames.size(), 1u);
  EXPECT_EQ(sink_.frames[0].node, "b");
  EXPECT_EQ(std::get<wire::credit>(sink_.frames[0].frame.body).frames, 2u);
  EXPECT_TRUE(log_->inbound.empty()) << "taken frames never reach the mailbox as well";
  ctx_->set_taker("worker", {});
  EXPECT_FALSE(ctx_->take(bytes(tokens(7)).bytes(), now));
}

/// What node `name` (incarnation 5 for b, as the directory has it) must match to join.
wire::join identity(const std::string& name, std::uint64_t incarnation) {
  wire::join j;
  j.member = {name,  incarnation,          wire::member_state::alive, wire::node_kind::cpu,
              "cpu", {wire::role::decode}, "fabric-" + name,          ""};
  j.wire_version = wire::wire_version;
  j.model_hash = 0xabc;
  j.numerics_fingerprint = "baton-cpu/1";
  return j;
}

/// Node a's membership driver, a the first seed, beside a's bridge to b: frames reach it
/// through the bridge (on_frame) or as bytes on the receiving thread (take), and it asks
/// for its ticks through the tick_at hook.
class MembershipDriverTest : public BridgeTest {
 protected:
  void SetUp() override {
    BridgeTest::SetUp();
    membership_hooks hooks;
    hooks.tick_at = [this](time_point at) { ticks_.push_back(at); };
    driver_.emplace(*ctx_, identity("a", 7), std::vector<seed_node>{{"a", "fabric-a"}},
                    membership_config{}, 1, std::move(hooks));
    ctx_->set_membership([this](const wire::frame& f) { driver_->on_frame(f); });
    driver_->start();
  }

  static wire::encoded_frame from_b(wire::body body, std::uint64_t incarnation = 5) {
    wire::frame f;
    f.source = {"b", "membership"};
    f.target = {"a", "membership"};
    f.sender_incarnation = incarnation;
    f.message_id = 9;
    f.body = std::move(body);
    auto encoded = wire::encode(f);
    EXPECT_TRUE(encoded);
    return std::move(*encoded);
  }

  std::vector<time_point> ticks_;
  std::optional<membership_driver> driver_;
};

TEST_F(MembershipDriverTest, AnswersFramesFromEitherPathAndProbesWhenItsTickComes) {
  EXPECT_TRUE(sink_.frames.empty()) << "the first seed forms the cluster alone";
  // b joins through the bridge: the reply goes straight to the sink, not through a bridge.
  arrive(identity("b", 5), "membership");
  ASSERT_EQ(sink_.frames.size(), 1u);
  EXPECT_EQ(sink_.frames[0].node, "b");
  EXPECT_EQ(sink_.frames[0].frame.source, (wire::actor_address{"a", "membership"}));
  EXPECT_EQ(sink_.frames[0].frame.sender_incarnation, 7u);
  const auto* reply = std::get_if<wire::join_reply>(&sink_.frames[0].frame.body);
  ASSERT_NE(reply, nullptr);
  EXPECT_TRUE(reply->accepted) << reply->reason;
  ASSERT_EQ(driver_->members().size(), 2u);

  // A probe from b, taken as bytes on the receiving thread, is acknowledged at once.
  auto probe = from_b(wire::heartbeat{41, false, 0, 0, {}});
  EXPECT_TRUE(driver_->take(probe.bytes()));
  ASSERT_EQ(sink_.frames.size(), 2u);
  const auto* ack = std::get_if<wire::heartbeat>(&sink_.frames[1].frame.body);
  ASSERT_NE(ack, nullptr);
  EXPECT_TRUE(ack->is_ack);
  EXPECT_EQ(ack->sequence, 41u);
  // Everything else is left to the bridge, which counts what it rejects.
  EXPECT_FALSE(driver_->take(from_b(tokens(1)).bytes())) << "not membership";
  EXPECT_FALSE(driver_->take(from_b(wire::heartbeat{42, false, 0, 0, {}}, 4).bytes()))
      << "an old incarnation of b";
  auto cut = from_b(wire::heartbeat{43, false, 0, 0, {}});
  cut.words.resize(cut.words.size() - 1);
  EXPECT_FALSE(driver_->take(cut.bytes())) << "truncated";
  EXPECT_EQ(sink_.frames.size(), 2u);

  // It asked for a tick at its next probe; a tick before then sends nothing, one after
  // it probes b.
  ASSERT_FALSE(ticks_.empty());
  const auto probe_at = ticks_.back();
  EXPECT_GT(probe_at, std::chrono::steady_clock::now());
  driver_->tick();
  EXPECT_EQ(sink_.frames.size(), 2u);
  std::this_thread::sleep_until(probe_at);
  driver_->tick();
  ASSERT_EQ(sink_.frames.size(), 3u);
  const auto* ping = std::get_if<wire::heartbeat>(&sink_.frames[2].frame.body);
  ASSERT_NE(ping, nullptr);
  EXPECT_FALSE(ping->is_ack);
  EXPECT_GT(ticks_.back(), probe_at) << "and asked for the next tick (its retry)";

  // Stopped: frames are taken and dropped, ticks do nothing.
  driver_->stop();
  EXPECT_TRUE(driver_->take(probe.bytes()));
  std::this_thread::sleep_until(ticks_.back());
  driver_->tick();
  EXPECT_EQ(sink_.frames.size(), 3u);
}

}  // namespace
}  // namespace baton::runtime
