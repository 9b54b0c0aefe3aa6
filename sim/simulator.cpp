#include "sim/simulator.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <numeric>
#include <queue>
#include <random>
#include <span>
#include <unordered_map>

#include <fmt/format.h>

#include "actors/router/router_state.hpp"
#include "engine/tokenizer.hpp"

namespace baton::sim {
namespace {

using ns = std::int64_t;  // simulated nanoseconds since the first arrival

ns to_ns(double seconds) {
  return static_cast<ns>(std::llround(seconds * 1e9));
}
actors::time_point at(ns t) {
  return actors::time_point(std::chrono::nanoseconds(t));
}
ns from(actors::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

/// The synthetic tokenizer's two-letter pieces: every prompt and output token is one, so
/// the routers' token texts are real but cheap.
constexpr std::int32_t vocab = 1030;
constexpr std::int32_t first_piece = 354;
constexpr std::int32_t pieces = vocab - first_piece;

/// Pieces in a cycle from `salt`: tokens that differ between salts, without a division each.
template <class T>
void fill_tokens(std::span<T> out, std::uint64_t salt) {
  auto t = static_cast<std::int32_t>(salt % pieces);
  for (auto& token : out) {
    token = static_cast<T>(first_piece + t);
    t += 31;
    if (t >= pieces) t -= pieces;
  }
}

std::size_t blocks_for(std::size_t positions, std::size_t block_tokens) {
  return (positions + block_tokens - 1) / block_tokens;
}

/// ITL samples in buckets 1% wide: percentiles within 1% without keeping every gap.
class log_histogram {
 public:
  void add(double ms, std::uint64_t count) {
    if (count == 0) return;
    const auto b = static_cast<std::size_t>(std::max(0.0, std::log(ms * 1e3 + 1) / std::log(1.01)));
    if (b >= counts_.size()) counts_.resize(b + 1, 0);
    counts_[b] += count;
    total_ += count;
    sum_ += ms * static_cast<double>(count);
  }
  [[nodiscard]] double quantile(double q) const {
    if (total_ == 0) return 0;
    const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total_ - 1));
    std::uint64_t seen = 0;
    for (std::size_t b = 0; b < counts_.size(); ++b) {
      seen += counts_[b];
      if (seen > rank) return (std::pow(1.01, static_cast<double>(b) + 0.5) - 1) / 1e3;
    }
    return 0;
  }
  [[nodiscard]] report::summary summary() const {
    report::summary s;
    s.count = total_;
    s.mean = total_ == 0 ? 0 : sum_ / static_cast<double>(total_);
    s.p50 = quantile(0.5);
    s.p90 = quantile(0.9);
    s.p99 = quantile(0.99);
    return s;
  }

 private:
  std::vector<std::uint64_t> counts_;
  std::uint64_t total_ = 0;
  double sum_ = 0;
};

class simulation {
 public:
  simulation(const fleet_spec& fleet, const workload_spec& w,
             const std::vector<planned_request>& plan, const sim_options& options,
             engine::tokenizer tok)
      : fleet_(fleet),
        w_(w),
        plan_(plan),
        options_(options),
        tok_(std::move(tok)),
        clients_(plan.size()),
        deaths_(fleet.failures.node_deaths_per_hour / 3600.0) {}

  sim_report run();

 private:
  enum class kind : std::uint8_t {
    arrival,       // a = client
    to_router,     // a = router, b = message slot
    to_node,       // a = node, b = message slot
    prefill_end,   // a = node, b = the node's generation
    kv_ready,      // a = sequence slot, b = its generation
    segment_end,   // a = node, b = the node's generation
    router_timer,  // a = router, b = timer id
    death,         // a = node
    gone,          // a = node, b = its incarnation that died
    restart,       // a = node
  };
  struct event {
    ns t = 0;
    std::uint64_t seq = 0;
    kind what = kind::arrival;
    std::uint32_t a = 0;
    std::uint64_t b = 0;
    bool operator>(const event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
  };
  struct message {
    wire::body body;
    std::uint32_t router = 0;       // the router it comes from or goes to
    std::uint64_t incarnation = 0;  // of the node it goes to, when sent
    std::string from;               // the sending node, to a router
  };
  /// One attempt's sequence on a decode node (and its prefill job).
  struct sequence {
    std::uint64_t generation = 0;
    bool live = false;
    std::uint32_t router = 0;
    wire::request_id request{};
    std::uint32_t attempt = 0;
    std::uint32_t node = 0;
    std::uint32_t prompt = 0;
    std::uint32_t max_tokens = 0;
    std::uint32_t generated = 0;
    std::size_t blocks = 0;
    ns last_token = 0;
    std::uint32_t writer = 0;  // the prefill node computing it, and that node's incarnation
    std::uint64_t writer_incarnation = 0;
  };
  struct job {
    std::uint32_t sequence = 0;
    std::uint64_t generation = 0;
  };
  struct node {
    std::string name;
    std::uint32_t group = 0;
    wire::actor_address address;
    bool alive = true;
    std::uint64_t incarnation = 1;
    std::uint64_t generation = 0;  // bumped on death and on a cut segment
    // prefill
    std::deque<job> jobs;
    bool computing = false;
    ns tx_free = 0, rx_free = 0;  // the link's queue, each way
    // decode
    std::vector<std::uint32_t> batch;    // stepping now
    std::vector<std::uint32_t> joining;  // wait for the next step boundary or a slot
    bool stepping = false;
    ns segment_start = 0, segment_dt = 0;
    std::size_t segment_k = 0;
    std::size_t blocks = 0, peak_blocks = 0;
    ns blocks_since = 0;
    double block_ns = 0;  // integral of blocks held over time
    double busy_ns = 0;
  };
  struct client {
    ns sent = -1, first = -1, end = -1;
    std::uint32_t tokens = 0;
    bool ok = false;
    bool done = false;
  };

  void push(ns t, kind what, std::uint32_t a, std::uint64_t b = 0) {
    // Router timers (mostly deadlines, which never fire) wait apart: the heap of
    // everything else stays small.
    (what == kind::router_timer ? timers_ : events_).push({t, ++seq_, what, a, b});
  }
  std::uint32_t stash(message m) {
    if (free_.empty()) {
      slab_.push_back(std::move(m));
      return static_cast<std::uint32_t>(slab_.size() - 1);
    }
    const auto i = free_.back();
    free_.pop_back();
    slab_[i] = std::move(m);
    return i;
  }
  message take(std::uint64_t i) {
    message m = std::move(slab_[i]);
    free_.push_back(static_cast<std::uint32_t>(i));
    return m;
  }
  [[nodiscard]] const link_spec& link_of(std::uint32_t n) const {
    return fleet_.links[fleet_.groups[nodes_[n].group].link];
  }
  [[nodiscard]] const node_group& group_of(std::uint32_t n) const {
    return fleet_.groups[nodes_[n].group];
  }
  /// A hop between a router and node `n`: the runtime's cost and the link both ways.
  [[nodiscard]] ns router_hop(std::uint32_t n) const {
    return to_ns(fleet_.message_s + 2 * link_of(n).latency_s);
  }
  [[nodiscard]] ns node_hop(std::uint32_t a, std::uint32_t b) const {
    return to_ns(fleet_.message_s + link_of(a).latency_s + link_of(b).latency_s);
  }
  [[nodiscard]] ns client_hop() const { return to_ns(fleet_.message_s); }

  void build();
  void dispatch(const event& e);
  void on_arrival(std::uint32_t c, ns now);
  void apply(std::uint32_t r, actors::router_effects&& fx, ns now);
  void to_node(std::uint32_t n, message m, ns now);
  void on_admit(std::uint32_t n, std::uint32_t r, const wire::admit& m, ns now);
  void on_cancel(std::uint32_t n, std::uint32_t r, const wire::cancel& m, ns now);
  void start_prefill(std::uint32_t n, ns now);
  void on_prefill_end(std::uint32_t n, ns now);
  void on_kv_ready(std::uint32_t s, ns now);
  void start_segment(std::uint32_t n, ns now);
  void on_segment_end(std::uint32_t n, ns now);
  void send_tokens(const sequence& q, std::uint32_t first_position, std::uint32_t count, bool last,
                   ns now);
  void release(std::uint32_t s, ns now);
  void set_blocks(node& d, std::size_t blocks, ns now);
  void on_death(std::uint32_t n, ns now);
  void on_restart(std::uint32_t n, ns now);
  void add_worker(std::uint32_t n, ns now);
  void client_ended(std::uint32_t c, ns at_client, bool ok, const std::string& why);
  /// A router's ids are its name's hash in the high 24 bits over a counter from 1.
  [[nodiscard]] static std::uint64_t counter_of(wire::request_id id) {
    return static_cast<std::uint64_t>(id) & 0xffff'ffffULL;
  }
  /// Unique while routers < 2^16, requests per router < 2^32 and attempts < 2^16.
  [[nodiscard]] static std::uint64_t request_key(std::uint32_t r, wire::request_id id) {
    return (static_cast<std::uint64_t>(r) << 32) | counter_of(id);
  }
  [[nodiscard]] static std::uint64_t key_of(std::uint32_t r, wire::request_id id,
                                            std::uint32_t attempt) {
    return (request_key(r, id) << 16) | (attempt & 0xffffu);
  }
  static constexpr std::uint32_t no_client = ~std::uint32_t{0};
  [[nodiscard]] ns next_death(ns now) {
    std::exponential_distribution<double> life(deaths_);
    return now + to_ns(life(death_rng_));
  }
  sim_report summarize(double wall_s);

  const fleet_spec& fleet_;
  const workload_spec& w_;
  const std::vector<planned_request>& plan_;
  const sim_options& options_;
  engine::tokenizer tok_;
  std::vector<client> clients_;
  double deaths_;
  std::mt19937_64 death_rng_{0};

  std::vector<actors::router_state> routers_;
  std::vector<std::vector<std::uint32_t>> client_of_;  // per router: request id - 1 -> client
  std::vector<node> nodes_;
  std::unordered_map<std::string, std::uint32_t> by_name_;
  std::vector<sequence> sequences_;
  std::vector<std::uint32_t> free_sequences_;
  std::unordered_map<std::uint64_t, std::uint32_t> sequence_of_;  // key_of -> slot
  std::unordered_map<std::uint64_t, std::uint32_t> attempts_of_;  // request_key -> last attempt

  using event_queue = std::priority_queue<event, std::vector<event>, std::greater<>>;
  event_queue events_;
  event_queue timers_;
  std::uint64_t seq_ = 0;
  std::uint64_t processed_ = 0;
  std::vector<message> slab_;
  std::vector<std::uint32_t> free_;

  log_histogram itl_;
  std::size_t ended_ = 0;
  std::uint64_t node_deaths_ = 0;
  ns last_end_ = 0;
  std::map<std::string, std::size_t> errors_;
};

void simulation::build() {
  routers_.reserve(fleet_.routers);
  for (std::size_t r = 0; r < fleet_.routers; ++r) {
    auto config = fleet_.router;
    config.seed = w_.seed + r;
    routers_.emplace_back(
        tok_, static_cast<std::int32_t>(fleet_.shape.max_context), fleet_.block_tokens,
        wire::actor_address{fmt::format("router-{}", r), actors::router_name}, config);
  }
  client_of_.resize(fleet_.routers);
  for (std::uint32_t g = 0; g < fleet_.groups.size(); ++g) {
    const auto& group = fleet_.groups[g];
    for (std::size_t i = 0; i < group.count; ++i) {
      node n;
      n.name = fmt::format("{}-{}", group.name, i);
      n.group = g;
      n.address = {n.name,
                   group.role == wire::role::prefill ? actors::prefill_name : actors::decode_name};
      by_name_.emplace(n.name, static_cast<std::uint32_t>(nodes_.size()));
      nodes_.push_back(std::move(n));
    }
  }
  for (std::uint32_t n = 0; n < nodes_.size(); ++n) {
    add_worker(n, 0);
    if (deaths_ > 0) push(next_death(0), kind::death, n);
  }
  for (std::uint32_t c = 0; c < plan_.size(); ++c) {
    push(to_ns(plan_[c].at_s), kind::arrival, c);
  }
}

void simulation::add_worker(std::uint32_t n, ns now) {
  const auto& g = group_of(n);
  for (std::uint32_t r = 0; r < routers_.size(); ++r) {
    apply(r,
          routers_[r].add_worker(nodes_[n].address, g.role, g.kind, g.kv_blocks, at(now),
                                 nodes_[n].incarnation),
          now);
  }
}

sim_report simulation::run() {
  const auto wall = std::chrono::steady_clock::now();
  build();
  while (!events_.empty() || !timers_.empty()) {
    auto& from =
        events_.empty() || (!timers_.empty() && events_.top() > timers_.top()) ? timers_ : events_;
    const event e = from.top();
    from.pop();
    dispatch(e);
    if ((++processed_ & 0x3fff) == 0 && options_.progress) options_.progress(ended_, plan_.size());
    if (ended_ == plan_.size()) break;  // what is left: timers, deaths, restarts
  }
  if (options_.progress) options_.progress(ended_, plan_.size());
  return summarize(std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count());
}

void simulation::dispatch(const event& e) {
  switch (e.what) {
    case kind::arrival: return on_arrival(e.a, e.t);
    case kind::to_router: {
      auto m = take(e.b);
      auto& router = routers_[e.a];
      const wire::actor_address from{m.from, ""};
      if (const auto* t = std::get_if<wire::token_batch>(&m.body)) {
        return apply(e.a, router.on_tokens(from, *t, true, at(e.t)), e.t);
      }
      if (const auto* f = std::get_if<wire::finish>(&m.body)) {
        return apply(e.a, router.on_finish(from, *f, at(e.t)), e.t);
      }
      if (const auto* a = std::get_if<wire::abort_attempt>(&m.body)) {
        return apply(e.a, router.on_abort(from, *a, at(e.t)), e.t);
      }
      if (const auto* c = std::get_if<wire::claimed>(&m.body)) {
        return apply(e.a, router.on_claimed(from, *c, at(e.t)), e.t);
      }
      return;
    }
    case kind::to_node: return to_node(e.a, take(e.b), e.t);
    case kind::prefill_end:
      if (nodes_[e.a].generation == e.b) on_prefill_end(e.a, e.t);
      return;
    case kind::kv_ready:
      if (sequences_[e.a].live && sequences_[e.a].generation == e.b) on_kv_ready(e.a, e.t);
      return;
    case kind::segment_end:
      if (nodes_[e.a].generation == e.b && nodes_[e.a].stepping) on_segment_end(e.a, e.t);
      return;
    case kind::router_timer: return apply(e.a, routers_[e.a].on_timer(e.b, at(e.t)), e.t);
    case kind::death: return on_death(e.a, e.t);
    case kind::gone:
      for (std::uint32_t r = 0; r < routers_.size(); ++r) {
        apply(r, routers_[r].on_node_gone(nodes_[e.a].name, at(e.t)), e.t);
      }
      return;
    case kind::restart: return on_restart(e.a, e.t);
  }
}

void simulation::on_arrival(std::uint32_t c, ns now) {
  const auto& p = plan_[c];
  clients_[c].sent = now;
  const auto r = static_cast<std::uint32_t>(c % routers_.size());
  wire::generate_request in;
  in.client_tag = c;
  in.max_tokens = p.output_tokens;
  in.has_seed = true;
  in.params.seed = c;
  // A group's prompts share their first prefix_tokens tokens; the rest is the request's.
  std::vector<std::int32_t> prompt(p.prompt_tokens);
  const std::size_t shared =
      w_.prefix_groups > 0 ? std::min<std::size_t>(w_.prefix_tokens, prompt.size()) : 0;
  fill_tokens(std::span(prompt).first(shared), p.prefix_group * 7919ULL);
  fill_tokens(std::span(prompt).subspan(shared), 1'000'003ULL * (c + 1));
  const ns arrives = now + client_hop();
  // The client's request reaches the router one hop later; the router handles it then.
  apply(r, routers_[r].on_generate_tokens(in, std::move(prompt), at(arrives)), arrives);
}

void simulation::apply(std::uint32_t r, actors::router_effects&& fx, ns now) {
  for (auto& e : fx.events) {
    auto& ids = client_of_[r];
    const auto index = static_cast<std::size_t>(counter_of(e.request)) - 1;
    if (const auto* acc = std::get_if<wire::accepted>(&e.what)) {
      if (ids.size() <= index) ids.resize(index + 1, no_client);
      ids[index] = static_cast<std::uint32_t>(acc->client_tag);
      continue;
    }
    const bool known = index < ids.size() && ids[index] != no_client;
    if (const auto* rej = std::get_if<wire::rejected>(&e.what)) {
      // Refused at once it names the client's tag; failed after acceptance, the shell would.
      const auto c = known ? ids[index] : static_cast<std::uint32_t>(rej->client_tag);
      client_ended(c, now + client_hop(), false, std::string(to_string(rej->code)));
      attempts_of_.erase(request_key(r, e.request));
      continue;
    }
    if (!known) continue;
    const auto c = ids[index];
    if (const auto* chunk = std::get_if<wire::token_chunk>(&e.what)) {
      auto& cl = clients_[c];
      if (cl.first < 0 && !chunk->tokens.empty()) cl.first = now + client_hop();
      cl.tokens += static_cast<std::uint32_t>(chunk->tokens.size());
    } else if (const auto* fin = std::get_if<wire::finished>(&e.what)) {
      const bool ok = fin->reason != wire::finish_reason::cancelled;
      client_ended(c, now + client_hop(), ok, "cancelled");
      attempts_of_.erase(request_key(r, e.request));
    }
  }
  for (auto& s : fx.sends) {
    if (std::holds_alternative<wire::stream_window>(s.body)) continue;  // clients read at once
    const auto it = by_name_.find(s.to.node);
    if (it == by_name_.end()) continue;
    const auto n = it->second;
    message m{std::move(s.body), r, nodes_[n].incarnation, {}};
    push(now + router_hop(n), kind::to_node, n, stash(std::move(m)));
  }
  for (const auto& t : fx.timers) push(std::max(now, from(t.at)), kind::router_timer, r, t.id);
}

void simulation::client_ended(std::uint32_t c, ns at_client, bool ok, const std::string& why) {
  auto& cl = clients_[c];
  if (cl.done) return;
  cl.done = true;
  cl.ok = ok;
  cl.end = at_client;
  if (!ok) ++errors_[why];
  last_end_ = std::max(last_end_, at_client);
  ++ended_;
}

void simulation::to_node(std::uint32_t n, message m, ns now) {
  auto& d = nodes_[n];
  if (!d.alive || m.incarnation != d.incarnation) return;  // fenced: it died since
  if (const auto* a = std::get_if<wire::admit>(&m.body)) return on_admit(n, m.router, *a, now);
  if (const auto* c = std::get_if<wire::cancel>(&m.body)) return on_cancel(n, m.router, *c, now);
  if (const auto* c = std::get_if<wire::claim>(&m.body)) {
    // Nothing is orphaned here: routers do not die in the simulation.
    message reply{wire::claimed{c->new_request, {}}, m.router, 0, d.name};
    push(now + router_hop(n), kind::to_router, m.router, stash(std::move(reply)));
  }
}

void simulation::on_admit(std::uint32_t n, std::uint32_t r, const wire::admit& m, ns now) {
  std::uint32_t s = 0;
  if (free_sequences_.empty()) {
    s = static_cast<std::uint32_t>(sequences_.size());
    sequences_.emplace_back();
  } else {
    s = free_sequences_.back();
    free_sequences_.pop_back();
  }
  auto& q = sequences_[s];
  q.generation += 1;
  q.live = true;
  q.router = r;
  q.request = m.request;
  q.attempt = m.attempt;
  q.node = n;
  q.prompt = m.prompt_length;
  q.max_tokens = m.max_tokens;
  q.generated = 0;
  q.blocks = blocks_for(m.prompt_length + m.max_tokens, fleet_.block_tokens);
  sequence_of_[key_of(r, m.request, m.attempt)] = s;
  auto& last = attempts_of_[request_key(r, m.request)];
  last = std::max(last, m.attempt);
  auto& d = nodes_[n];
  set_blocks(d, d.blocks + q.blocks, now);
  // The decode node sends the job to the prefill node the router chose (or its own).
  std::uint32_t writer = n;
  if (!m.writer.empty()) {
    const auto it = by_name_.find(m.writer);
    if (it == by_name_.end()) return;
    writer = it->second;
  }
  auto& p = nodes_[writer];
  if (!p.alive) return;  // the router migrates it when it learns of the death
  const ns arrives = now + (writer == n ? 0 : node_hop(n, writer));
  // The job's arrival is folded into the queue: the prefill node takes jobs in order.
  p.jobs.push_back({s, q.generation});
  if (!p.computing) start_prefill(writer, std::max(now, arrives));
}

void simulation::on_cancel(std::uint32_t n, std::uint32_t r, const wire::cancel& m, ns now) {
  if (group_of(n).role != wire::role::decode) return;  // the decode node's cancel ends the job
  const auto last = attempts_of_.find(request_key(r, m.request));
  if (last == attempts_of_.end()) return;
  const std::uint32_t from = m.attempt == 0 ? 1 : m.attempt;
  const std::uint32_t to = m.attempt == 0 ? last->second : m.attempt;
  for (std::uint32_t attempt = from; attempt <= to; ++attempt) {
    const auto it = sequence_of_.find(key_of(r, m.request, attempt));
    if (it != sequence_of_.end() && sequences_[it->second].node == n) release(it->second, now);
  }
}

void simulation::start_prefill(std::uint32_t n, ns now) {
  auto& p = nodes_[n];
  while (!p.jobs.empty()) {
    const job j = p.jobs.front();
    const auto& q = sequences_[j.sequence];
    if (q.live && q.generation == j.generation) break;
    p.jobs.pop_front();  // cancelled before it started
  }
  if (p.jobs.empty()) return;
  auto& q = sequences_[p.jobs.front().sequence];
  const auto& hw = group_of(n).hardware;
  auto predicted = engine::predict_prefill(hw, fleet_.shape, q.prompt, 0, fleet_.numbers);
  const ns compute =
      predicted ? to_ns(std::chrono::duration<double>(predicted->time).count() * fleet_.time_scale)
                : 0;
  p.computing = true;
  p.busy_ns += static_cast<double>(compute);
  push(now + compute, kind::prefill_end, n, p.generation);
  // The KV leaves layer by layer while the prompt computes, through both ends' links.
  const double bytes =
      static_cast<double>(q.prompt) *
      static_cast<double>(engine::kv_bytes_per_token(fleet_.shape, fleet_.numbers)) /
      static_cast<double>(fleet_.kv_scale);
  const double bw =
      std::min({link_of(n).bandwidth_bytes_per_s, link_of(q.node).bandwidth_bytes_per_s,
                hw.net_bw_bytes_per_s.value, group_of(q.node).hardware.net_bw_bytes_per_s.value});
  const ns transfer = q.node == n ? 0 : to_ns(bytes / bw);
  auto& sender = nodes_[n];
  auto& receiver = nodes_[q.node];
  q.writer = n;
  q.writer_incarnation = sender.incarnation;
  const ns start = std::max({now, sender.tx_free, receiver.rx_free});
  const ns last_layer =
      q.node == n ? 0 : to_ns(bytes / bw / static_cast<double>(fleet_.shape.n_layers));
  const ns landed = std::max(start + transfer, now + compute + last_layer);
  sender.tx_free = receiver.rx_free = start + transfer;
  const ns done = landed + (q.node == n ? 0 : node_hop(n, q.node));
  push(done, kind::kv_ready, p.jobs.front().sequence, p.jobs.front().generation);
  p.jobs.pop_front();
}

void simulation::on_prefill_end(std::uint32_t n, ns now) {
  nodes_[n].computing = false;
  start_prefill(n, now);
}

void simulation::on_kv_ready(std::uint32_t s, ns now) {
  auto& q = sequences_[s];
  auto& d = nodes_[q.node];
  const auto& w = nodes_[q.writer];
  // KV from a writer that died meanwhile never completes: its router migrates the request.
  if (!d.alive || !w.alive || w.incarnation != q.writer_incarnation) return;
  // The first token came with the prefill.
  q.generated = 1;
  q.last_token = now;
  const bool last = q.max_tokens <= 1;
  send_tokens(q, q.prompt, 1, last, now);
  if (last) return release(s, now);
  d.joining.push_back(s);
  if (!d.stepping) return start_segment(q.node, now);
  // Cut the running segment at the next step boundary, where the newcomer joins.
  const auto done = static_cast<std::size_t>((now - d.segment_start) / d.segment_dt);
  if (done + 1 < d.segment_k) {
    d.segment_k = done + 1;
    d.generation += 1;
    push(d.segment_start + static_cast<ns>(d.segment_k) * d.segment_dt, kind::segment_end, q.node,
         d.generation);
  }
}

void simulation::start_segment(std::uint32_t n, ns now) {
  auto& d = nodes_[n];
  const auto& g = group_of(n);
  std::erase_if(d.batch,
                [&](std::uint32_t s) { return !sequences_[s].live || sequences_[s].node != n; });
  std::erase_if(d.joining,
                [&](std::uint32_t s) { return !sequences_[s].live || sequences_[s].node != n; });
  while (d.batch.size() < g.max_batch && !d.joining.empty()) {
    d.batch.push_back(d.joining.front());
    d.joining.erase(d.joining.begin());
  }
  d.stepping = !d.batch.empty();
  if (!d.stepping) return;
  std::size_t k = options_.segment_steps;
  for (const auto s : d.batch) {
    k = std::min<std::size_t>(k, sequences_[s].max_tokens - sequences_[s].generated);
  }
  std::vector<std::size_t> contexts;
  contexts.reserve(d.batch.size());
  for (const auto s : d.batch) {
    contexts.push_back(sequences_[s].prompt + sequences_[s].generated + k / 2);
  }
  auto step = engine::predict_decode_step(g.hardware, fleet_.shape, contexts, fleet_.numbers);
  const ns dt = std::max<ns>(
      1, step ? to_ns(std::chrono::duration<double>(step->time).count() * fleet_.time_scale) : 1);
  d.segment_start = now;
  d.segment_dt = dt;
  d.segment_k = std::max<std::size_t>(k, 1);
  d.generation += 1;
  push(now + static_cast<ns>(d.segment_k) * dt, kind::segment_end, n, d.generation);
}

void simulation::on_segment_end(std::uint32_t n, ns now) {
  auto& d = nodes_[n];
  const auto k = static_cast<std::uint32_t>(d.segment_k);
  d.busy_ns += static_cast<double>(k) * static_cast<double>(d.segment_dt);
  d.stepping = false;
  for (const auto s : d.batch) {
    auto& q = sequences_[s];
    if (!q.live || q.node != n) continue;
    // Token i of the segment was ready at the end of step i.
    itl_.add(static_cast<double>(d.segment_start + d.segment_dt - q.last_token) / 1e6, 1);
    itl_.add(static_cast<double>(d.segment_dt) / 1e6, k - 1);
    q.last_token = now;
    const std::uint32_t first = q.prompt + q.generated;
    q.generated += k;
    const bool last = q.generated >= q.max_tokens;
    send_tokens(q, first, k, last, now);
    if (last) release(s, now);
  }
  start_segment(n, now);
}

void simulation::send_tokens(const sequence& q, std::uint32_t first_position, std::uint32_t count,
                             bool last, ns now) {
  wire::token_batch b;
  b.request = q.request;
  b.attempt = q.attempt;
  b.first_position = first_position;
  b.tokens.resize(count);
  constexpr auto cycle = static_cast<std::uint32_t>(pieces);
  std::uint32_t t = first_position % cycle;  // the token at a position is a function of it
  for (auto& token : b.tokens) {
    token = static_cast<std::uint32_t>(first_piece) + t;
    if (++t == cycle) t = 0;
  }
  if (last) b.finish = wire::finish_reason::length;
  message m{std::move(b), q.router, 0, nodes_[q.node].name};
  push(now + router_hop(q.node), kind::to_router, q.router, stash(std::move(m)));
}

void simulation::release(std::uint32_t s, ns now) {
  auto& q = sequences_[s];
  if (!q.live) return;
  q.live = false;
  auto& d = nodes_[q.node];
  set_blocks(d, d.blocks - q.blocks, now);
  sequence_of_.erase(key_of(q.router, q.request, q.attempt));
  free_sequences_.push_back(s);
}

void simulation::set_blocks(node& d, std::size_t blocks, ns now) {
  d.block_ns += static_cast<double>(d.blocks) * static_cast<double>(now - d.blocks_since);
  d.blocks_since = now;
  d.blocks = blocks;
  d.peak_blocks = std::max(d.peak_blocks, blocks);
}

void simulation::on_death(std::uint32_t n, ns now) {
  auto& d = nodes_[n];
  if (!d.alive) return;
  ++node_deaths_;
  d.alive = false;
  d.generation += 1;
  d.computing = false;
  d.stepping = false;
  d.jobs.clear();
  for (std::uint32_t s = 0; s < sequences_.size(); ++s) {
    if (sequences_[s].live && sequences_[s].node == n) release(s, now);
  }
  d.batch.clear();
  d.joining.clear();
  push(now + to_ns(fleet_.failures.detect_s), kind::gone, n, d.incarnation);
  push(now + to_ns(fleet_.failures.restart_after_s), kind::restart, n);
}

void simulation::on_restart(std::uint32_t n, ns now) {
  auto& d = nodes_[n];
  d.alive = true;
  d.incarnation += 1;
  d.tx_free = d.rx_free = now;
  add_worker(n, now);
  push(next_death(now), kind::death, n);
}

sim_report simulation::summarize(double wall_s) {
  sim_report out;
  out.requests = plan_.size();
  out.errors = errors_;
  out.events = processed_;
  out.wall_s = wall_s;
  out.node_deaths = node_deaths_;
  const ns first = plan_.empty() ? 0 : to_ns(plan_.front().at_s);
  out.duration_s = static_cast<double>(last_end_ - first) / 1e9;
  std::size_t good = 0;
  std::uint64_t tokens = 0;
  for (const auto& c : clients_) {
    if (!c.ok) continue;
    ++out.completed;
    tokens += c.tokens;
    const double ttft = static_cast<double>((c.first >= 0 ? c.first : c.end) - c.sent) / 1e6;
    const double e2e = static_cast<double>(c.end - c.sent) / 1e6;
    out.ttft_samples_ms.push_back(ttft);
    out.e2e_samples_ms.push_back(e2e);
    std::optional<double> tpot;
    if (c.tokens >= 2) {
      tpot = (e2e - ttft) / static_cast<double>(c.tokens - 1);
      out.tpot_samples_ms.push_back(*tpot);
    }
    const bool meets = (!w_.slo_ttft_ms || ttft <= *w_.slo_ttft_ms) &&
                       (!w_.slo_tpot_ms || !tpot || *tpot <= *w_.slo_tpot_ms);
    good += meets ? 1 : 0;
  }
  out.ttft_ms = report::summarize(out.ttft_samples_ms);
  out.tpot_ms = report::summarize(out.tpot_samples_ms);
  out.e2e_ms = report::summarize(out.e2e_samples_ms);
  out.itl_ms = itl_.summary();
  for (int i = 0; i <= 200; ++i) out.itl_quantiles_ms.push_back(itl_.quantile(i / 200.0));
  if (out.duration_s > 0) {
    out.request_throughput_req_s = static_cast<double>(out.completed) / out.duration_s;
    out.output_throughput_tok_s = static_cast<double>(tokens) / out.duration_s;
    if (w_.slo_ttft_ms || w_.slo_tpot_ms) {
      out.goodput_req_s = static_cast<double>(good) / out.duration_s;
      out.goodput_fraction = static_cast<double>(good) / static_cast<double>(out.requests);
    }
  }
  for (const auto& r : routers_) {
    const auto& s = r.stats();
    out.retries += s.retries;
    out.waited += s.waited;
    out.migrations += std::accumulate(s.migrations.begin(), s.migrations.end(), std::uint64_t{0});
  }
  const double span = std::max(1.0, static_cast<double>(last_end_));
  for (std::uint32_t g = 0; g < fleet_.groups.size(); ++g) {
    group_usage u;
    u.name = fleet_.groups[g].name;
    u.role = fleet_.groups[g].role;
    for (auto& d : nodes_) {
      if (d.group != g) continue;
      ++u.nodes;
      const double busy = std::min(1.0, d.busy_ns / span);
      u.busy_mean += busy;
      u.busy_max = std::max(u.busy_max, busy);
      if (u.role == wire::role::decode) {
        set_blocks(d, d.blocks, last_end_);
        const auto capacity = static_cast<double>(fleet_.groups[g].kv_blocks);
        u.kv_mean += d.block_ns / span / capacity;
        u.kv_peak = std::max(u.kv_peak, static_cast<double>(d.peak_blocks) / capacity);
      }
    }
    if (u.nodes > 0) {
      u.busy_mean /= static_cast<double>(u.nodes);
      u.kv_mean /= static_cast<double>(u.nodes);
    }
    out.groups.push_back(std::move(u));
  }
  return out;
}

double mean_of(const std::vector<planned_request>& plan, std::uint32_t planned_request::*field) {
  double sum = 0;
  for (const auto& r : plan) sum += r.*field;
  return plan.empty() ? 0 : sum / static_cast<double>(plan.size());
}

/// "cannot be served: ..." for a request no decode node can hold, or past the context.
expected<void> check_servable(const fleet_spec& fleet, const std::vector<planned_request>& plan) {
  std::size_t longest = 0;
  for (const auto& r : plan)
    longest = std::max<std::size_t>(longest, r.prompt_tokens + r.output_tokens);
  if (longest > fleet.shape.max_context) {
    return fail(errc::invalid_argument,
                fmt::format("cannot be served: a request of {} positions (prompt and output) is "
                            "past {}'s context of {}",
                            longest, fleet.shape.name, fleet.shape.max_context));
  }
  std::size_t most = 0;
  for (const auto& g : fleet.groups) {
    if (g.role == wire::role::decode && g.count > 0) most = std::max(most, g.kv_blocks);
  }
  const auto need = blocks_for(longest, fleet.block_tokens);
  if (need > most) {
    return fail(errc::invalid_argument,
                fmt::format("cannot be served: a request of {} positions needs {} KV blocks; the "
                            "largest decode node holds {} (raise kv_blocks or add decode nodes "
                            "that hold more)",
                            longest, need, most));
  }
  return {};
}

}  // namespace

expected<double> capacity_req_s(const fleet_spec& fleet, const workload_spec&,
                                const std::vector<planned_request>& plan) {
  if (auto ok = check_servable(fleet, plan); !ok) return tl::unexpected(ok.error());
  const double prompt = std::max(1.0, mean_of(plan, &planned_request::prompt_tokens));
  const double output = std::max(1.0, mean_of(plan, &planned_request::output_tokens));
  double prefill = 0;
  double decode = 0;
  for (const auto& g : fleet.groups) {
    if (g.count == 0) continue;
    if (g.role == wire::role::prefill) {
      auto p = engine::predict_prefill(g.hardware, fleet.shape, static_cast<std::size_t>(prompt), 0,
                                       fleet.numbers);
      if (!p) return tl::unexpected(p.error());
      const double t = std::chrono::duration<double>(p->time).count() * fleet.time_scale;
      prefill += t > 0 ? static_cast<double>(g.count) / t : 1e300;
      continue;
    }
    const auto per_request =
        blocks_for(static_cast<std::size_t>(prompt + output), fleet.block_tokens);
    const std::size_t batch =
        std::min(g.max_batch, g.kv_blocks / std::max<std::size_t>(per_request, 1));
    if (batch == 0) continue;
    const std::vector<std::size_t> contexts(batch, static_cast<std::size_t>(prompt + output / 2));
    auto step = engine::predict_decode_step(g.hardware, fleet.shape, contexts, fleet.numbers);
    if (!step) return tl::unexpected(step.error());
    const double t = std::chrono::duration<double>(step->time).count() * fleet.time_scale;
    decode += t > 0 ? static_cast<double>(g.count * batch) / (output * t) : 1e300;
  }
  if (decode == 0) {
    return fail(errc::invalid_argument,
                fmt::format("cannot be served: no decode node holds a request of the mean "
                            "length ({:.0f} positions)",
                            prompt + output));
  }
  return std::min(prefill, decode);
}

expected<sim_report> simulate(const fleet_spec& fleet, const workload_spec& w,
                              const std::vector<planned_request>& plan,
                              const sim_options& options) {
  if (auto ok = check_servable(fleet, plan); !ok) return tl::unexpected(ok.error());
  auto capacity = capacity_req_s(fleet, w, plan);
  if (!capacity) return tl::unexpected(capacity.error());
  auto tok = engine::tokenizer::synthetic(vocab);
  if (!tok) return tl::unexpected(tok.error());
  simulation s(fleet, w, plan, options, std::move(*tok));
  auto out = s.run();
  out.capacity_req_s = *capacity;
  if (plan.size() > 1 && plan.back().at_s > 0) {
    out.offered_req_s = static_cast<double>(plan.size() - 1) / plan.back().at_s;
  }
  return out;
}

}  // namespace baton::sim
