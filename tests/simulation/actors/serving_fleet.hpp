#pragma once

// An in-process fleet of serving state classes (one router, prefill and decode workers on
// the real stories260K model, or on emulated devices of its shape) joined by a
// deterministic message queue instead of CAF and the fabric: the unit-level twin of the
// integration tests. Slice writes are copies between the devices' KV pools, and can be
// held back or corrupted on purpose.
//
// Messages, slice writes and write completions travel on links, one per ordered pair of
// nodes and kind, each first in first out as the fabric promises (FI_ORDER_SAS; nothing is
// promised between messages and RMA or between pairs). By default pump() delivers them in
// the order they were sent, before any compute. With fleet_options::chaos it interleaves
// deliveries, prefill jobs and decode steps in an order drawn from that generator, and
// links can be stalled (delay), cut (partition) and purged (a crash, or a connection
// dropped after its peer was declared dead): the chaos simulation (chaos_test.cpp).

#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "actors/decode/decode_state.hpp"
#include "actors/prefill/prefill_state.hpp"
#include "actors/router/router_state.hpp"
#include "engine/cpu_engine.hpp"
#include "engine/device.hpp"
#include "engine/generate.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"

namespace baton::actors::testing {

inline std::string shared_model(const char* name) {
  return std::string(BATON_SHARED_MODELS_DIR) + "/" + name;
}

/// What a client saw of one choice of a request.
struct choice_log {
  std::string text;  ///< prompt echo plus every chunk's text
  std::vector<std::uint32_t> positions;
  std::vector<std::int32_t> tokens;
  std::vector<wire::client_logprobs> logprobs;
  std::optional<wire::finish_reason> finish;  ///< said by a chunk (requests of several)
};

/// What a client saw of one request.
struct client_log {
  std::optional<wire::accepted> accepted;
  std::map<std::uint32_t, choice_log> choices;
  std::optional<wire::finished> finished;
  std::optional<wire::rejected> rejected;
  std::size_t ends = 0;  ///< finished and rejected events seen (a request ends once)
  [[nodiscard]] bool done() const { return finished || rejected; }
  /// Choice 0's text, positions and tokens (a request of one choice has only that).
  [[nodiscard]] const std::string& text() const { return choice(0).text; }
  [[nodiscard]] const std::vector<std::uint32_t>& positions() const { return choice(0).positions; }
  [[nodiscard]] const std::vector<std::int32_t>& tokens() const { return choice(0).tokens; }
  [[nodiscard]] const choice_log& choice(std::uint32_t c) const {
    static const choice_log none;
    auto it = choices.find(c);
    return it == choices.end() ? none : it->second;
  }
  /// What `baton generate` prints for the same request (choice `c`).
  [[nodiscard]] std::string output(std::uint32_t c = 0) const { return choice(c).text + "\n"; }
};

class fleet;

/// The fleet's slice writer for one prefill node: copies into the target decode pool.
class copy_writer final : public slice_writer {
 public:
  copy_writer(fleet& f, std::string node) : fleet_(f), node_(std::move(node)) {}
  void post(const slice_write& w) override;
  bool hold = false;                   ///< keep writes (and their completions) back
  std::optional<std::size_t> corrupt;  ///< flip a byte of the n-th write from now
  std::vector<slice_write> held;
  void release_held();

 private:
  void apply(const slice_write& w);
  fleet& fleet_;
  std::string node_;
};

struct fleet_options {
  std::size_t routers = 1;  ///< router-0, router-1, ...: each knows every worker
  std::size_t prefill_nodes = 2;
  std::size_t decode_nodes = 2;
  std::size_t kv_blocks = 512;
  router_config router;
  prefill_config prefill;
  /// Every worker's device: "cpu" or "emulated:PROFILE" (the checkpoint's shape).
  std::string device = "cpu";
  double time_scale = 0.0;  ///< emulated: modelled time x this (0: none)
  decode_config decode;
  /// Seeded interleaving (see the top of this file); must outlive the fleet. Null: FIFO.
  std::mt19937_64* chaos = nullptr;
};

class fleet {
 public:
  explicit fleet(fleet_options options = {}) : options_(options) {
    auto m = engine::model::load(shared_model("stories260K.bin"));
    EXPECT_TRUE(m.has_value());
    model_ = std::make_unique<engine::model>(std::move(*m));
    auto t = engine::tokenizer::load(shared_model("tok512.bin"), model_->config().vocab_size);
    EXPECT_TRUE(t.has_value());
    tok_ = std::make_unique<engine::tokenizer>(std::move(*t));
    for (std::size_t i = 0; i < std::max<std::size_t>(1, options.routers); ++i) add_router(i);
    for (std::size_t i = 0; i < options.decode_nodes; ++i) add_decode(i);
    for (std::size_t i = 0; i < options.prefill_nodes; ++i) add_prefill(i);
  }

  /// Starts router-`i` (fresh state, as a restarted process) knowing every live worker.
  /// Its request ids count from its start, as the router actor's do (a restarted router
  /// never reuses an id of the one before it).
  void add_router(std::size_t i) {
    const auto name = "router-" + std::to_string(i);
    auto& r = routers_[name];
    router_config config = options_.router;
    config.first_request += ++router_starts_ << 24;
    r = std::make_unique<router_state>(*tok_, model_->config().seq_len, 16,
                                       wire::actor_address{name, "router"}, config);
    dead_.erase(name);
    gone_.erase(name);
    for (auto& [who, blind] : blind_) blind.erase(name);  // a new process: a new member
    add_router_workers(name);
  }

  /// Starts decode-`i` and tells the router (as membership would).
  void add_decode(std::size_t i) {
    const std::string name = "decode-" + std::to_string(i);
    auto& d = decodes_[name];
    d.engine = make_engine(options_.kv_blocks);
    d.state = std::make_unique<decode_state>(*d.engine, wire::actor_address{name, "decode"},
                                             kv_region{100 + i, 7, 0}, options_.decode);
    dead_.erase(name);
    gone_.erase(name);
    for (auto& [who, blind] : blind_) blind.erase(name);  // a new process: a new member
    for (auto& [r, state] : routers_) {
      if (dead_.contains(r)) continue;
      dispatch(r, state->add_worker({name, "decode"}, wire::role::decode,
                                    wire::node_kind::wafer_scale, options_.kv_blocks, now_));
    }
  }
  /// Starts prefill-`i` and tells the router.
  void add_prefill(std::size_t i) {
    const std::string name = "prefill-" + std::to_string(i);
    auto& p = prefills_[name];
    p.engine = make_engine(options_.kv_blocks);
    p.writer = std::make_unique<copy_writer>(*this, name);
    p.state = std::make_unique<prefill_state>(*p.engine, wire::actor_address{name, "prefill"},
                                              *p.writer, options_.prefill);
    dead_.erase(name);
    gone_.erase(name);
    for (auto& [who, blind] : blind_) blind.erase(name);  // a new process: a new member
    for (auto& [r, state] : routers_) {
      if (dead_.contains(r)) continue;
      dispatch(r, state->add_worker({name, "prefill"}, wire::role::prefill,
                                    wire::node_kind::trainium, 0, now_));
    }
  }

  std::unique_ptr<engine::cpu_engine> make_cpu_engine(std::size_t kv_blocks) {
    engine::engine_options o;
    o.threads = 1;
    o.max_sequences = 64;
    o.kv_blocks = kv_blocks;
    auto e = engine::cpu_engine::create(*model_, o);
    EXPECT_TRUE(e.has_value());
    return std::move(*e);
  }

  std::unique_ptr<engine::device> make_engine(std::size_t kv_blocks) {
    if (options_.device == "cpu") return engine::make_device(make_cpu_engine(kv_blocks));
    engine::emulated_options o;
    o.max_sequences = 64;
    o.kv_blocks = kv_blocks;
    o.time_scale = options_.time_scale;
    auto setup = engine::resolve_emulated(options_.device, "", model_->config(),
                                          shared_model("stories260K.bin"), o);
    EXPECT_TRUE(setup.has_value()) << setup.error().message;
    auto e = engine::emulated_engine::create(setup->profile, setup->shape, setup->options);
    EXPECT_TRUE(e.has_value()) << e.error().message;
    return engine::make_device(std::move(*e));
  }

  /// The single-process reference output for the same request (CPU engine).
  std::string reference(const std::string& prompt, float temperature, float top_p,
                        std::uint64_t seed, std::int32_t steps) {
    return reference(prompt, {temperature, top_p, seed, steps});
  }
  std::string reference(const std::string& prompt, const engine::generate_options& o) {
    auto e = make_cpu_engine(0);
    auto text = engine::generate_text(*e, *tok_, prompt, o);
    EXPECT_TRUE(text.has_value());
    return *text;
  }

  wire::request_id submit(const std::string& prompt, float temperature, float top_p,
                          std::optional<std::uint64_t> seed, std::uint32_t steps,
                          std::uint32_t timeout_ms = 0) {
    wire::generate_request r;
    r.client_tag = ++tags_;
    r.prompt = prompt;
    r.max_positions = steps;
    r.params = {temperature, top_p, seed.value_or(0)};
    r.has_seed = seed.has_value();
    r.timeout_ms = timeout_ms;
    return submit(std::move(r));
  }

  /// Submits `r` to `router` as a client would (its client tag is the fleet's).
  wire::request_id submit(wire::generate_request r, const std::string& router = "router-0") {
    r.client_tag = ++tags_;
    auto out = routers_.at(router)->on_generate(r, now_);
    const wire::request_id id = out.events.empty() ? wire::request_id{} : out.events[0].request;
    sent_[id] = r;
    dispatch(router, std::move(out));
    return id;
  }

  /// The client of `id` comes back through `router` with what it received, as the router
  /// client does when its router went away: the original request, its seed, and per choice
  /// its tokens. Returns the new request's id; combined() joins the two.
  wire::request_id resume(wire::request_id id, const std::string& router) {
    auto r = sent_.at(id);
    const auto& seen = log(id);
    EXPECT_TRUE(seen.accepted) << "a request is resumed after it was accepted";
    r.params.seed = seen.accepted->seed;
    r.has_seed = true;
    wire::resume_state state{id, {}};
    for (std::uint32_t c = 0; c < r.n; ++c) {
      const auto& choice = seen.choice(c);
      wire::resume_choice rc;
      for (const auto t : choice.tokens) rc.tokens.push_back(static_cast<std::uint32_t>(t));
      rc.done = choice.finish.has_value();
      if (choice.finish) rc.reason = *choice.finish;
      state.choices.push_back(std::move(rc));
    }
    r.resume = std::move(state);
    const auto resumed = submit(std::move(r), router);
    resumed_from_[resumed] = id;
    return resumed;
  }

  /// What the client of a resumed request saw of choice `c` through both routers.
  [[nodiscard]] std::string combined(wire::request_id resumed, std::uint32_t c = 0) {
    const auto first = resumed_from_.at(resumed);
    std::string text = log(first).choice(c).text;
    if (text.empty() && log(first).accepted) text = log(first).accepted->prompt_text;
    const auto& more = log(resumed).choice(c);
    // The resumed log starts with the echo again: only what came after it is new.
    const auto echo = log(resumed).accepted ? log(resumed).accepted->prompt_text : std::string();
    EXPECT_TRUE(more.text.starts_with(echo) || more.text.empty());
    return text + (more.text.empty() ? std::string() : more.text.substr(echo.size())) + "\n";
  }

  /// Delivers messages and runs prefill jobs and decode steps until nothing is left to do
  /// or `until` holds.
  void pump(const std::function<bool()>& until = {}) {
    for (int guard = 0; guard < 1'000'000; ++guard) {
      if (until && until()) return;
      if (options_.chaos != nullptr) {
        if (!step()) return;
        continue;
      }
      if (auto* link = next_link()) {
        run_head(*link);
        continue;
      }
      bool worked = false;
      for (auto& [name, p] : prefills_) {
        if (!dead_.contains(name) && p.state->has_work()) {
          dispatch(name, p.state->run_next(now_));
          worked = true;
        }
      }
      for (auto& [name, d] : decodes_) {
        if (!dead_.contains(name) && d.state->has_work()) {
          dispatch(name, d.state->step(now_));
          worked = true;
        }
      }
      if (!worked) return;
    }
    FAIL() << "the fleet never went quiet";
  }

  /// One thing, drawn by fleet_options::chaos from what can happen now: the next delivery
  /// on an open link, a prefill job or a decode step. False when nothing can.
  bool step() {
    std::vector<std::deque<task>*> open;
    for (auto& [key, queue] : links_) {
      if (!queue.empty() && link_open(queue.front().from, queue.front().to)) open.push_back(&queue);
    }
    std::vector<std::string> busy;
    for (auto& [name, pn] : prefills_) {
      if (!dead_.contains(name) && pn.state->has_work()) busy.push_back(name);
    }
    for (auto& [name, dn] : decodes_) {
      if (!dead_.contains(name) && dn.state->has_work()) busy.push_back(name);
    }
    const std::size_t n = open.size() + busy.size();
    if (n == 0) return false;
    const std::size_t pick = (*options_.chaos)() % n;
    if (pick < open.size()) {
      run_head(*open[pick]);
    } else if (const auto& name = busy[pick - open.size()]; prefills_.contains(name)) {
      dispatch(name, prefills_.at(name).state->run_next(now_));
    } else {
      dispatch(name, decodes_.at(name).state->step(now_));
    }
    return true;
  }

  /// When the earliest timer of a live node, or the end of a stall, falls due (max if none).
  [[nodiscard]] time_point next_due() const {
    time_point due = time_point::max();
    for (const auto& [node, t] : timers_) {
      if (!dead_.contains(node)) due = std::min(due, t.at);
    }
    for (const auto& [link, until] : stalled_) {
      if (until > now_) due = std::min(due, until);
    }
    return due;
  }
  [[nodiscard]] time_point now() const { return now_; }

  /// Holds traffic from `from` to `to` (messages and writes) until `until`: a slow link.
  void stall(const std::string& from, const std::string& to, time_point until) {
    stalled_[{from, to}] = until;
  }
  /// What waits on the links from `from` to `to` is lost without a word to anyone, as
  /// what a connection carried is when it is reset.
  void lose(const std::string& from, const std::string& to) {
    for (auto& [key, queue] : links_) {
      std::erase_if(queue, [&](const task& t) { return t.from == from && t.to == to; });
    }
  }
  /// Cuts every link of `node` (a partition: traffic waits, as TCP retransmits) or heals it.
  void cut(const std::string& node, bool cut) {
    if (cut) {
      cut_.insert(node);
    } else {
      cut_.erase(node);
    }
  }
  [[nodiscard]] bool is_cut(const std::string& node) const { return cut_.contains(node); }

  /// `node`'s process dies: it stops, and what it sent or was sent is lost (its connections
  /// break). Nobody is told: see declare_gone().
  void crash(const std::string& node) {
    dead_.insert(node);
    drop_links(node);
    std::erase_if(timers_, [&](const auto& t) { return t.first == node; });
  }
  /// Membership's verdict on `node` reaches every other live node; the connections to it
  /// are dropped. A live `node` (cut off) comes to its own verdict on the others later, or
  /// not at all (see lose_sight).
  void declare_gone(const std::string& node) {
    keep_old_connections(node);
    drop_links(node, true);
    gone_.insert(node);
    for (const auto& who : alive()) {
      if (who != node) tell_gone(who, node);
    }
  }
  /// A cut-off `node` declares every other node dead (its own membership's verdict): until
  /// it hears from them again, what it sends them fails back to it.
  void lose_sight(const std::string& node) {
    for (const auto& who : alive()) {
      if (who == node) continue;
      blind_[node].insert(who);
      tell_gone(node, who);
    }
  }
  void tell_gone(const std::string& who, const std::string& gone) {
    if (routers_.contains(who)) {
      dispatch(who, routers_.at(who)->on_node_gone(gone, now_));
    } else if (decodes_.contains(who)) {
      dispatch(who, decodes_.at(who).state->on_node_gone(gone, now_));
    } else if (prefills_.contains(who)) {
      dispatch(who, prefills_.at(who).state->on_node_gone(gone));
    }
  }
  /// A live `node` that was declared gone refuted it (a higher incarnation): the others
  /// take it back, and it them.
  void rejoin(const std::string& node) {
    gone_.erase(node);
    if (routers_.contains(node)) {
      add_router_workers(node);
      return;
    }
    const bool decode = decodes_.contains(node);
    for (auto& [r, state] : routers_) {
      if (dead_.contains(r)) continue;
      dispatch(r, decode ? state->add_worker({node, "decode"}, wire::role::decode,
                                             wire::node_kind::wafer_scale, options_.kv_blocks, now_)
                         : state->add_worker({node, "prefill"}, wire::role::prefill,
                                             wire::node_kind::trainium, 0, now_));
    }
  }
  /// A node that was declared gone learns it (it refutes): a router places its requests
  /// again (workers and the routers that buried them settle it with a cancel on rejoin); a
  /// decode node ends what waits for a prefill that may have refused its job.
  void buried(const std::string& node) {
    if (routers_.contains(node)) dispatch(node, routers_.at(node)->on_buried(now_));
    if (decodes_.contains(node)) dispatch(node, decodes_.at(node).state->on_buried());
  }
  /// A node that had declared the others gone hears from them again; they learn of its
  /// verdict and refute (a router among them was buried).
  void regain_sight(const std::string& node) {
    const auto blind = blind_[node];
    blind_.erase(node);
    if (routers_.contains(node)) add_router_workers(node);
    for (const auto& peer : blind) {
      if (!dead_.contains(peer)) buried(peer);
    }
  }
  /// Every node not dead, by name.
  [[nodiscard]] std::vector<std::string> alive() const {
    std::vector<std::string> out;
    for (const auto& [n, s] : routers_) {
      if (!dead_.contains(n)) out.push_back(n);
    }
    for (const auto& [n, s] : prefills_) {
      if (!dead_.contains(n)) out.push_back(n);
    }
    for (const auto& [n, s] : decodes_) {
      if (!dead_.contains(n)) out.push_back(n);
    }
    return out;
  }

  /// Moves the clock and fires due timers.
  void advance(std::chrono::nanoseconds by) {
    now_ += std::chrono::duration_cast<clock::duration>(by);
    auto due = std::move(timers_);
    timers_.clear();
    for (auto& [node, t] : due) {
      if (t.at > now_) {
        timers_.emplace_back(node, t);
        continue;
      }
      if (dead_.contains(node)) continue;
      if (routers_.contains(node)) {
        dispatch(node, routers_.at(node)->on_timer(t.id, now_));
      } else if (decodes_.contains(node)) {
        dispatch(node, decodes_.at(node).state->on_timer(t.id, now_));
      } else {
        dispatch(node, prefills_.at(node).state->on_timer(t.id));
      }
    }
  }

  /// `node` stops; every survivor learns it is gone at once (as membership would tell them).
  void kill(const std::string& node) {
    crash(node);
    declare_gone(node);
  }

  /// `node`'s actor takes no messages (it is restarting): each sender learns its message
  /// was not delivered, as the runtime's failure reply would tell it.
  void refuse(const std::string& node) { refused_.insert(node); }
  /// `node`'s actor takes messages again.
  void accept(const std::string& node) { refused_.erase(node); }

  void client_gone(wire::request_id id) {
    dispatch("router-0", routers_.at("router-0")->on_client_gone(id, now_));
  }
  /// The client of `id` reads slowly (no room) or catches up again.
  void slow_client(wire::request_id id, bool slow) {
    if (slow) {
      slow_.insert(id);
    } else {
      slow_.erase(id);
      dispatch("router-0", routers_.at("router-0")->on_client_ready(id, now_));
    }
  }

  [[nodiscard]] const client_log& log(wire::request_id id) { return logs_[id]; }
  [[nodiscard]] router_state& router(const std::string& name = "router-0") {
    return *routers_.at(name);
  }
  /// `router`'s client of `id` went away (its connection broke).
  void client_gone(wire::request_id id, const std::string& router) {
    dispatch(router, routers_.at(router)->on_client_gone(id, now_));
  }
  [[nodiscard]] const engine::tokenizer& tokenizer() const { return *tok_; }
  [[nodiscard]] decode_state& decode(const std::string& n) { return *decodes_.at(n).state; }
  [[nodiscard]] engine::device& decode_engine(const std::string& n) {
    return *decodes_.at(n).engine;
  }
  [[nodiscard]] prefill_state& prefill(const std::string& n) { return *prefills_.at(n).state; }
  [[nodiscard]] copy_writer& writer(const std::string& n) { return *prefills_.at(n).writer; }
  [[nodiscard]] std::size_t messages(const std::string& type) const {
    auto it = counts_.find(type);
    return it == counts_.end() ? 0 : it->second;
  }

  /// Runs `f` when the link from `from` to `to` of `kind` delivers it.
  void send(const std::string& from, const std::string& to, const char* kind,
            std::function<void()> f) {
    links_[from + ">" + to + ":" + kind].push_back({++sent_tasks_, from, to, std::move(f)});
  }
  /// Dispatches `out` as sent by `node`.
  void dispatch(const std::string& node, effects out);
  void dispatch(const std::string& node, router_effects out);
  [[nodiscard]] std::span<std::byte> decode_pool(std::uint64_t fabric_node);
  [[nodiscard]] std::span<std::byte> prefill_pool(const std::string& node) {
    return prefills_.at(node).engine->pool().bytes();
  }
  [[nodiscard]] bool dead(const std::string& node) const { return dead_.contains(node); }
  [[nodiscard]] bool chaotic() const { return options_.chaos != nullptr; }
  [[nodiscard]] static std::string decode_name(std::uint64_t fabric_node) {
    return "decode-" + std::to_string(fabric_node - 100);
  }
  [[nodiscard]] bool has_router(const std::string& n) const { return routers_.contains(n); }

 private:
  struct decode_node {
    std::unique_ptr<engine::device> engine;
    std::unique_ptr<decode_state> state;
  };
  struct prefill_node {
    std::unique_ptr<engine::device> engine;
    std::unique_ptr<copy_writer> writer;
    std::unique_ptr<prefill_state> state;
  };
  void deliver(const wire::actor_address& from, const outgoing& m);
  /// `sender` learns that its message to `to` was not delivered.
  void undeliverable(const std::string& sender, const wire::actor_address& to);

  /// A message, write or completion on its link.
  struct task {
    std::uint64_t order = 0;  ///< when it was sent, fleet-wide
    std::string from;
    std::string to;
    std::function<void()> run;
    bool old_connection = false;  ///< see keep_old_connections()
  };
  /// What others sent a live `node` that is declared gone stays in the kernel of the
  /// connection they close (a close sends what is queued, then FIN): it reaches `node`
  /// when the network returns, over that old connection, in no order with what is sent
  /// over the new one. In order (pump) it comes after everything else: the worst case.
  void keep_old_connections(const std::string& node) {
    if (dead_.contains(node)) return;
    for (auto& [key, queue] : links_) {
      if (key.ends_with("(old)")) continue;
      std::deque<task> kept;
      std::deque<task> rest;
      for (auto& t : queue) {
        t.old_connection = t.to == node;
        (t.old_connection ? kept : rest).push_back(std::move(t));
      }
      queue = std::move(rest);
      if (kept.empty()) continue;
      auto& old = links_[key + " (old)"];  // created after the loop's iterator: std::map
      for (auto& t : kept) old.push_back(std::move(t));
    }
  }
  [[nodiscard]] bool link_open(const std::string& from, const std::string& to) const {
    if (cut_.contains(from) || cut_.contains(to)) return false;
    auto it = stalled_.find({from, to});
    return it == stalled_.end() || it->second <= now_;
  }
  /// The open link whose next task was sent first (old connections' last), or null.
  std::deque<task>* next_link() {
    std::deque<task>* first = nullptr;
    const auto before = [](const task& a, const task& b) {
      return std::tie(a.old_connection, a.order) < std::tie(b.old_connection, b.order);
    };
    for (auto& [key, queue] : links_) {
      if (queue.empty() || !link_open(queue.front().from, queue.front().to)) continue;
      if (first == nullptr || before(queue.front(), first->front())) first = &queue;
    }
    return first;
  }
  void run_head(std::deque<task>& link) {
    auto t = std::move(link.front());
    link.pop_front();
    t.run();
  }
  /// What was on `node`'s links is lost; what its old connections still carry too unless
  /// `keep_old`.
  void drop_links(const std::string& node, bool keep_old = false) {
    for (auto& [key, queue] : links_) {
      std::erase_if(queue, [&](const task& t) {
        return (t.from == node || t.to == node) && !(keep_old && t.old_connection);
      });
    }
  }
  void add_router_workers(const std::string& router) {
    auto& r = *routers_.at(router);
    for (const auto& [w, d] : decodes_) {
      if (!dead_.contains(w)) {
        dispatch(router, r.add_worker({w, "decode"}, wire::role::decode,
                                      wire::node_kind::wafer_scale, options_.kv_blocks, now_));
      }
    }
    for (const auto& [w, p] : prefills_) {
      if (!dead_.contains(w)) {
        dispatch(router, r.add_worker({w, "prefill"}, wire::role::prefill,
                                      wire::node_kind::trainium, 0, now_));
      }
    }
  }

  fleet_options options_;
  std::unique_ptr<engine::model> model_;
  std::unique_ptr<engine::tokenizer> tok_;
  std::map<std::string, std::unique_ptr<router_state>> routers_;
  std::map<wire::request_id, wire::generate_request> sent_;
  std::map<wire::request_id, wire::request_id> resumed_from_;
  std::map<std::string, decode_node> decodes_;
  std::map<std::string, prefill_node> prefills_;
  std::set<std::string> dead_;
  std::set<std::string> refused_;
  std::set<std::string> gone_;  ///< declared dead, not back yet: no frame goes to or from them
  std::map<std::string, std::set<std::string>> blind_;  ///< who each node itself declared dead
  std::set<wire::request_id> slow_;
  std::map<std::string, std::deque<task>> links_;
  std::uint64_t sent_tasks_ = 0;
  std::uint64_t router_starts_ = 0;
  std::map<std::pair<std::string, std::string>, time_point> stalled_;
  std::set<std::string> cut_;
  std::vector<std::pair<std::string, timer>> timers_;
  std::map<wire::request_id, client_log> logs_;
  std::map<std::string, std::size_t> counts_;
  time_point now_{};
  std::uint64_t tags_ = 0;
};

inline void fleet::dispatch(const std::string& node, effects out) {
  const std::string actor = node.starts_with("router")    ? "router"
                            : node.starts_with("prefill") ? "prefill"
                                                          : "decode";
  for (auto& t : out.timers) timers_.emplace_back(node, t);
  for (auto& s : out.sends) {
    const std::string to = s.to.node;
    if (gone_.contains(node)) continue;  // a buried incarnation's frames are not accepted
    if (dead_.contains(to) || gone_.contains(to) ||
        (blind_.contains(node) && blind_[node].contains(to))) {
      // Not a member (or not reachable): the runtime tells the sender (delivery_failure).
      send(node, node, "failure", [this, node, to = s.to] { undeliverable(node, to); });
      continue;
    }
    send(node, to, "message",
         [this, from = wire::actor_address{node, actor}, m = std::move(s)] { deliver(from, m); });
  }
}

inline void fleet::dispatch(const std::string& node, router_effects out) {
  for (auto& e : out.events) {
    client_log& log = logs_[e.request];
    std::visit(
        [&](auto& what) {
          using T = std::decay_t<decltype(what)>;
          if constexpr (std::is_same_v<T, wire::accepted>) {
            log.accepted = what;
            log.choices[0].text = what.prompt_text;
          } else if constexpr (std::is_same_v<T, wire::token_chunk>) {
            auto& c = log.choices[what.choice];
            if (c.text.empty() && log.accepted) c.text = log.accepted->prompt_text;
            EXPECT_FALSE(c.finish) << "a chunk after the choice's end";
            c.text += what.text;
            for (std::size_t i = 0; i < what.tokens.size(); ++i) {
              c.positions.push_back(what.first_position + static_cast<std::uint32_t>(i));
              c.tokens.push_back(static_cast<std::int32_t>(what.tokens[i]));
            }
            c.logprobs.insert(c.logprobs.end(), what.logprobs.begin(), what.logprobs.end());
            c.finish = what.finish;
          } else if constexpr (std::is_same_v<T, wire::finished>) {
            log.finished = what;
            ++log.ends;
          } else {
            log.rejected = what;
            ++log.ends;
          }
        },
        e.what);
  }
  dispatch(node, static_cast<effects&&>(std::move(out)));
}

inline void fleet::deliver(const wire::actor_address& from, const outgoing& m) {
  if (dead_.contains(m.to.node) || dead_.contains(from.node)) return;
  ++counts_[wire::body_name(m.body)];
  const std::string& to = m.to.node;
  if (refused_.contains(to)) {
    undeliverable(from.node, m.to);
    return;
  }
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if (routers_.contains(to)) {
          router_state& router = *routers_.at(to);
          if constexpr (std::is_same_v<T, wire::token_batch>) {
            dispatch(to, router.on_tokens(from, body, !slow_.contains(body.request), now_));
          } else if constexpr (std::is_same_v<T, wire::finish>) {
            dispatch(to, router.on_finish(from, body, now_));
          } else if constexpr (std::is_same_v<T, wire::claimed>) {
            dispatch(to, router.on_claimed(from, body, now_));
          } else if constexpr (std::is_same_v<T, wire::abort_attempt>) {
            dispatch(to, router.on_abort(from, body, now_));
          } else {
            ADD_FAILURE() << "router got " << wire::body_name(m.body);
          }
        } else if (decodes_.contains(to)) {
          decode_state& d = *decodes_.at(to).state;
          if constexpr (std::is_same_v<T, wire::admit>) {
            dispatch(to, d.on_admit(from, body, now_));
          } else if constexpr (std::is_same_v<T, wire::prefill_done>) {
            dispatch(to, d.on_prefill_done(from, body, now_));
          } else if constexpr (std::is_same_v<T, wire::cancel>) {
            dispatch(to, d.on_cancel(from, body));
          } else if constexpr (std::is_same_v<T, wire::claim>) {
            dispatch(to, d.on_claim(from, body, now_));
          } else if constexpr (std::is_same_v<T, wire::stream_window>) {
            d.on_window(body);
          } else if constexpr (std::is_same_v<T, wire::abort_attempt>) {
            dispatch(to, d.on_abort(from, body));
          } else {
            ADD_FAILURE() << "decode got " << wire::body_name(m.body);
          }
        } else {
          prefill_state& p = *prefills_.at(to).state;
          if constexpr (std::is_same_v<T, wire::prefill>) {
            dispatch(to, p.on_prefill(from, body));
          } else if constexpr (std::is_same_v<T, wire::cancel>) {
            dispatch(to, p.on_cancel(from, body));
          } else {
            ADD_FAILURE() << "prefill got " << wire::body_name(m.body);
          }
        }
      },
      m.body);
}

inline void fleet::undeliverable(const std::string& sender, const wire::actor_address& to) {
  if (dead_.contains(sender)) return;
  if (routers_.contains(sender)) {
    dispatch(sender, routers_.at(sender)->on_undeliverable(to.node, now_));
  } else if (decodes_.contains(sender)) {
    dispatch(sender, decodes_.at(sender).state->on_undeliverable(to));
  }
}

inline std::span<std::byte> fleet::decode_pool(std::uint64_t fabric_node) {
  return decodes_.at(decode_name(fabric_node)).engine->pool().bytes();
}

inline void copy_writer::post(const slice_write& w) {
  if (hold) {
    held.push_back(w);
    return;
  }
  if (fleet_.chaotic()) {  // the write travels on its link, and may land late
    fleet_.send(node_, fleet_.decode_name(w.target_fabric_node), "rma", [this, w] { apply(w); });
    return;
  }
  apply(w);
}

inline void copy_writer::apply(const slice_write& w) {
  const auto target = fleet_.decode_pool(w.target_fabric_node);
  const auto source = fleet_.prefill_pool(node_);
  ASSERT_LE(w.target_offset + w.length, target.size());
  ASSERT_LE(w.source_offset + w.length, source.size());
  std::memcpy(target.data() + w.target_offset, source.data() + w.source_offset, w.length);
  if (corrupt && (*corrupt)-- == 0) {
    target[w.target_offset + w.length / 2] ^= std::byte{0x40};
    corrupt.reset();
  }
  const std::string node = node_;
  const std::uint64_t tag = w.tag;
  fleet_.send(fleet_.decode_name(w.target_fabric_node), node, "completion", [this, node, tag] {
    if (!fleet_.dead(node)) fleet_.dispatch(node, fleet_.prefill(node).on_write_done(tag, {}));
  });
}

inline void copy_writer::release_held() {
  auto writes = std::move(held);
  held.clear();
  hold = false;
  for (const auto& w : writes) apply(w);
}

}  // namespace baton::actors::testing
