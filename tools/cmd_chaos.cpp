// `baton chaos [--config cluster.toml] --requests N --kills K --seed S ...`: runs the
// topology's nodes as local processes, sends N requests through native router clients and
// the OpenAI-compatible HTTP API, and at moments drawn from the seed kills nodes (SIGKILL:
// routers, prefill and decode nodes) and single actors inside live nodes, restarting the
// nodes after a delay. Then it checks what the failover design promises: every request
// completed exactly once and byte-identical to the one-process engine, no KV block leaked
// on any decode node (their own accounting), no false death verdicts, no process left
// behind. Prints the seed first, a table (or one JSON object), an SVG timeline with
// --plot; exits 1 on any violation, printing the request and how to replay it. With
// --netns every node runs in a network namespace of its own and partitions (a link taken
// down, then up) join the kills.
// docs/testing.md, "Chaos".
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "bench/serve_load.hpp"
#include "client/router_client.hpp"
#include "engine/cpu_engine.hpp"
#include "engine/generate.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"
#include "launcher/local_cluster.hpp"
#include "launcher/netns_lab.hpp"
#include "report/plot.hpp"
#include "report/progress.hpp"
#include "report/stats.hpp"
#include "runtime/admin_server.hpp"
#include "runtime/topology.hpp"
#include "tools/commands.hpp"

namespace baton::tools {
namespace {

using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;
using namespace std::chrono_literals;

struct chaos_args {
  std::string config = "cluster.toml";
  std::size_t requests = 60;
  std::size_t kills = 4;
  std::uint64_t seed = 0;
  std::uint32_t restart_after_ms = 500;
  std::string targets = "prefill,decode,router,actor";
  std::size_t clients = 6;
  std::uint32_t max_tokens = 256;
  bool json = false;
  bool netns = false;
  bool attach = false;
  std::string plot;
};

const std::vector<std::string> prompts = {
    "Once upon a time",       "Lily and Ben",       "The cat",
    "One day, a little girl", "Tom had a red ball", "The sun was hot and the"};

/// One request: what it asks, through which client, and what happened to it.
struct request_run {
  std::string prompt;
  float temperature = 0;
  float top_p = 0.9f;
  std::uint64_t seed = 0;
  std::uint32_t max_tokens = 0;
  bool http = false;  ///< through the OpenAI-compatible API (else a native router client)
  // Filled in by the run:
  clock_type::time_point sent{};
  clock_type::time_point ended{};
  std::vector<clock_type::time_point> chunks;  ///< native: each chunk's arrival
  std::string text;                            ///< as `baton generate` prints it
  std::string error;                           ///< empty when it completed
  std::uint32_t completions = 0;               ///< times it was reported complete
  std::uint32_t retried_by_client = 0;         ///< resumes (native), retries (HTTP)
  std::uint32_t prompt_tokens = 0;
  std::string expected;
  std::string decode_node;   ///< native: where it was placed first (accepted)
  std::string prefill_node;  ///< native: empty when prefilled on the decode node
};

/// A kill that happened: when, what, and how.
struct kill_event {
  clock_type::time_point at{};
  std::string node;
  std::string what;  ///< "node" (SIGKILL) or "ROLE actor"
};

/// The topology's nodes and settings as a local cluster of child processes (every port 0).
launcher::local_cluster_options cluster_options(const runtime::topology& t) {
  launcher::local_cluster_options o;
  o.name = "chaos";
  o.checkpoint = t.model.checkpoint;
  o.tokenizer = t.model.tokenizer;
  o.provider = t.provider;
  for (const auto& n : t.nodes) {
    launcher::cluster_node c{n.name, {}, std::string(runtime::to_string(n.kind)), n.device};
    for (const auto r : n.roles) c.roles.emplace_back(runtime::to_string(r));
    if (n.kv_blocks > 0) c.extra += fmt::format("kv_blocks = {}\n", n.kv_blocks);
    if (n.max_batch > 0) c.extra += fmt::format("max_batch = {}\n", n.max_batch);
    o.nodes.push_back(std::move(c));
  }
  const auto& l = t.limits;
  const auto& to = t.timeouts;
  const auto& r = t.router;
  o.sections = fmt::format(
      "[limits]\nmax_queued_requests = {}\nkv_block_tokens = {}\nmax_prompt_tokens = {}\n"
      "max_new_tokens = {}\n\n[timeouts]\nrequest_ms = {}\nprobe_interval_ms = {}\n"
      "suspect_after_ms = {}\ndead_after_ms = {}\norphan_grace_ms = {}\n\n[router]\n"
      "prefill_on_decode_max_tokens = {}\nwhen_no_prefill = \"{}\"\nmax_attempts = {}\n"
      "max_waiting = {}\nmax_wait_ms = {}\n",
      l.max_queued_requests, l.kv_block_tokens, l.max_prompt_tokens, l.max_new_tokens,
      to.request_ms, to.probe_interval_ms, to.suspect_after_ms, to.dead_after_ms,
      to.orphan_grace_ms, r.prefill_on_decode_max_tokens, r.when_no_prefill, r.max_attempts,
      r.max_waiting, r.max_wait_ms);
  if (t.emulated_workers()) {
    o.sections +=
        fmt::format("\n[emulated]\n{}scale = {}\ntime_scale = {}\n",
                    t.emulated.shape.empty() ? std::string()
                                             : fmt::format("shape = \"{}\"\n", t.emulated.shape),
                    t.emulated.scale, t.emulated.time_scale);
  }
  return o;
}

/// The chaos run: the cluster, the traffic, the kills and the checks.
class chaos {
 public:
  chaos(const chaos_args& args, runtime::topology topology)
      : args_(args), topology_(std::move(topology)), rng_(args.seed) {}

  int run();

 private:
  void plan();
  [[nodiscard]] expected<void> references();
  void client_loop(std::size_t worker);
  void run_native(client::router_client& client, request_run& r);
  void run_http(request_run& r);
  /// Kills and restarts at their moments (on the calling thread: see run()).
  void kill_loop();
  /// Sleeps until `t`, drawing the progress bar.
  void pause_until(clock_type::time_point t);
  void restart(const std::string& node);
  /// Starts the topology's nodes here (in namespaces of their own with --netns); 0, or the
  /// exit code.
  [[nodiscard]] int start_cluster();
  [[nodiscard]] std::vector<std::string> nodes_with(wire::role role) const;
  [[nodiscard]] std::size_t leaked_blocks();
  [[nodiscard]] std::size_t false_suspicions();
  /// Requests `router`'s process has moved to other workers (its counter: read it before
  /// the process is killed).
  [[nodiscard]] std::size_t router_migrations(const std::string& router) const;
  [[nodiscard]] std::size_t children_left() const;
  /// The nodes: started here, or (--attach) running under a supervisor of their own.
  [[nodiscard]] std::string metrics_of(const std::string& node) const;
  [[nodiscard]] double metric_of(const std::string& node, const std::string& series) const;
  /// --attach: the pid `node`'s admin port reports, if that process runs on this machine
  /// as a baton node.
  [[nodiscard]] expected<pid_t> attached_pid(const std::string& node) const;
  /// --attach: waits up to 30 s for `node` to serve again under a new process.
  void await_return(const std::string& node, pid_t old);
  void report(std::size_t leaked, std::size_t suspicions, std::size_t left, double elapsed_s);

  chaos_args args_;
  runtime::topology topology_;
  std::mt19937_64 rng_;
  std::unique_ptr<launcher::netns_lab> lab_;  ///< --netns: outlives the cluster
  std::unique_ptr<launcher::local_cluster> cluster_;
  std::vector<std::string> native_;  ///< the routers' client ports (kept across restarts)
  std::vector<std::string> http_;    ///< the routers' HTTP API
  std::vector<request_run> runs_;
  std::vector<std::string> targets_;           ///< what the kills hit, in order
  clock_type::duration span_{};                ///< the traffic's planned length
  std::vector<clock_type::duration> send_at_;  ///< request i is sent at start_ + send_at_[i]
  std::vector<clock_type::duration> kill_at_;  ///< kill i happens at start_ + kill_at_[i]
  std::map<std::string, std::string> crash_;   ///< planted actor crashes: node -> "ROLE:N"
  std::vector<kill_event> kills_;
  std::set<std::string> killed_nodes_;  ///< nodes whose process was killed at least once
  std::set<std::string> partitioned_;   ///< nodes that were cut off at least once
  std::atomic<std::size_t> next_{0};    ///< the next request to send
  std::atomic<std::size_t> ended_{0};
  std::mutex mutex_;  ///< guards runs_' results, kills_ and the cluster's restarts
  clock_type::time_point start_{};
  std::map<std::string, double> idle_blocks_;  ///< each decode node's free blocks before traffic
  std::vector<std::string> leaks_;             ///< what leaked_blocks() found, per node
  std::vector<std::string> crashes_;           ///< nodes that exited without being killed, and how
  std::map<std::string, pid_t> killed_pid_;    ///< --attach: the process each kill ended
  std::map<std::string, double> suspicions_at_;  ///< --attach: refuted suspicions before
  std::function<void(std::size_t, std::size_t)> progress_;
  std::size_t migrations_ = 0;
  std::size_t violations_ = 0;
};

void chaos::plan() {
  std::uniform_int_distribution<std::uint32_t> tokens(
      16, std::max<std::uint32_t>(16, args_.max_tokens));
  for (std::size_t i = 0; i < args_.requests; ++i) {
    request_run r;
    r.prompt = prompts[rng_() % prompts.size()];
    r.max_tokens = tokens(rng_);
    if (rng_() % 3 == 0) {
      r.temperature = 0.0f;  // greedy
    } else {
      r.temperature = 0.5f + 0.1f * static_cast<float>(rng_() % 6);
      r.top_p = rng_() % 2 ? 0.9f : 1.0f;
    }
    r.seed = rng_() % 100'000;
    r.http = rng_() % 3 == 0;
    runs_.push_back(std::move(r));
  }
  // Kills: targets drawn from --targets among the roles the topology has; an actor crash
  // is planted at start in a prefill or decode node (its actor crashes at a seeded message).
  std::vector<std::string> allowed;
  std::stringstream in(args_.targets);
  for (std::string t; std::getline(in, t, ',');) {
    if ((t == "router" && !nodes_with(wire::role::router).empty()) ||
        (t == "prefill" && !nodes_with(wire::role::prefill).empty()) ||
        (t == "decode" && !nodes_with(wire::role::decode).empty()) || t == "actor" ||
        (t == "partition" && args_.netns)) {
      allowed.push_back(t);
    }
  }
  // The traffic is paced over long enough for every kill and its restart to fall inside it.
  span_ = std::max<clock_type::duration>(
      3s, (std::chrono::milliseconds(args_.restart_after_ms) + 1s) * args_.kills);
  for (std::size_t i = 0; i < runs_.size(); ++i) {
    send_at_.push_back(span_ * static_cast<std::int64_t>(i) /
                       static_cast<std::int64_t>(runs_.size()));
  }
  std::uniform_int_distribution<std::int64_t> when(span_.count() / 10, span_.count() * 85 / 100);
  for (std::size_t k = 0; k < args_.kills && !allowed.empty(); ++k) {
    const std::string target = allowed[rng_() % allowed.size()];
    if (target == "actor") {
      auto workers = nodes_with(wire::role::decode);
      for (const auto& p : nodes_with(wire::role::prefill)) workers.push_back(p);
      std::erase_if(workers, [&](const std::string& n) { return crash_.contains(n); });
      if (workers.empty()) continue;
      const std::string node = workers[rng_() % workers.size()];
      const bool decode = topology_.find(node)->has_role(wire::role::decode);
      crash_[node] = fmt::format("{}:{}", decode ? "decode" : "prefill",
                                 decode ? 50 + rng_() % 400 : 3 + rng_() % 20);
      continue;
    }
    targets_.push_back(target);
    kill_at_.push_back(clock_type::duration(when(rng_)));
  }
  std::sort(kill_at_.begin(), kill_at_.end());
}

std::vector<std::string> chaos::nodes_with(wire::role role) const {
  std::vector<std::string> out;
  for (const auto& n : topology_.nodes) {
    if (n.has_role(role)) out.push_back(n.name);
  }
  return out;
}

expected<void> chaos::references() {
  auto model = engine::model::load(topology_.model.checkpoint);
  if (!model) return tl::unexpected(model.error());
  auto tok = engine::tokenizer::load(topology_.model.tokenizer, model->config().vocab_size);
  if (!tok) return tl::unexpected(tok.error());
  engine::engine_options o;
  o.max_sequences = 1;
  auto engine = engine::cpu_engine::create(*model, o);
  if (!engine) return tl::unexpected(engine.error());
  for (auto& r : runs_) {
    r.prompt_tokens = static_cast<std::uint32_t>(tok->encode(r.prompt, true, false).size());
    // The positions a request of max_tokens takes, counted as llama2.c's -n counts them.
    const auto steps = static_cast<std::int32_t>(r.prompt_tokens + r.max_tokens - 1);
    auto text =
        engine::generate_text(**engine, *tok, r.prompt, {r.temperature, r.top_p, r.seed, steps});
    if (!text) return tl::unexpected(text.error());
    r.expected = std::move(*text);
    if (r.http) {  // the API's text leaves the prompt's echo out
      auto echo = engine::prompt_echo(**engine, *tok, r.prompt);
      if (!echo) return tl::unexpected(echo.error());
      r.text = std::move(*echo);
    }
  }
  return {};
}

void chaos::client_loop(std::size_t worker) {
  client::client_options co;
  co.routers = native_;
  co.resume_wait = 10s;
  auto client = client::router_client::connect(co);
  for (std::size_t i = next_++; i < runs_.size(); i = next_++) {
    auto& r = runs_[i];
    std::this_thread::sleep_until(start_ + send_at_[i]);
    r.sent = clock_type::now();
    if (r.http) {
      run_http(r);
    } else if (client) {
      run_native(**client, r);
    } else {
      r.error = "no router answered: " + client.error().message;
    }
    r.ended = clock_type::now();
    ++ended_;
  }
  (void)worker;
}

void chaos::run_native(client::router_client& client, request_run& r) {
  wire::generate_request req;
  req.prompt = r.prompt;
  req.max_tokens = r.max_tokens;
  req.params = {r.temperature, r.top_p, r.seed};
  req.has_seed = true;
  std::string text;
  auto result = client.generate(req, [&](const client::client_event& e) {
    if (const auto* a = std::get_if<wire::accepted>(&e)) {
      text += a->prompt_text;
      std::lock_guard lock(mutex_);
      r.decode_node = a->decode_node;
      r.prefill_node = a->prefill_node;
    } else {
      text += std::get<wire::token_chunk>(e).text;
      std::lock_guard lock(mutex_);
      r.chunks.push_back(clock_type::now());
    }
    return true;
  });
  std::lock_guard lock(mutex_);
  if (!result) {
    r.error = result.error().to_string();
    return;
  }
  ++r.completions;
  r.retried_by_client = result->resumes;
  r.text = text + "\n";
}

void chaos::run_http(request_run& r) {
  const json body = {{"model", topology_.model.checkpoint.stem().string()},
                     {"prompt", r.prompt},
                     {"max_tokens", r.max_tokens},
                     {"temperature", r.temperature},
                     {"top_p", r.top_p},
                     {"seed", r.seed}};
  const auto& routers = http_;
  std::string last_error;
  // The OpenAI API has no resume: a client whose answer broke sends it again (with the
  // same seed, the text is the same), to the next router, for up to 30 s.
  const auto give_up = clock_type::now() + 30s;
  for (std::size_t attempt = 0; clock_type::now() < give_up; ++attempt) {
    const auto& router = routers[(attempt + r.seed) % routers.size()];
    auto answer = runtime::http_post_json(router, "/v1/completions", body.dump(), 60s);
    if (answer) {
      const auto j = json::parse(*answer, nullptr, false);
      std::lock_guard lock(mutex_);
      if (j.is_discarded() || !j.contains("choices")) {
        r.error = "an answer that is not a completion: " + answer->substr(0, 200);
        return;
      }
      ++r.completions;
      r.text += j["choices"][0]["text"].get<std::string>() + "\n";
      return;
    }
    last_error = answer.error().message;
    std::lock_guard lock(mutex_);
    ++r.retried_by_client;
    if (answer.error().code == errc::failed && last_error.find("HTTP 503") == std::string::npos &&
        last_error.find("HTTP 429") == std::string::npos) {
      r.error = last_error;  // a 4xx or 500: not the cluster's failover to wait out
      return;
    }
    mutex_.unlock();
    std::this_thread::sleep_for(200ms);
    mutex_.lock();
  }
  std::lock_guard lock(mutex_);
  r.error = "no router completed it within 30 s; the last: " + last_error;
}

void chaos::pause_until(clock_type::time_point t) {
  while (clock_type::now() < t) {
    if (progress_) progress_(ended_.load(), runs_.size());
    std::this_thread::sleep_until(std::min(t, clock_type::now() + 100ms));
  }
}

void chaos::kill_loop() {
  // Kills at their planned moments, each node started again restart_after_ms after it died;
  // a kill picks among the nodes of its role that are running then.
  std::vector<std::pair<clock_type::time_point, std::string>> restarts;  // (when, node)
  std::set<std::string> down;
  std::set<std::string> cut;  // partitioned: healed instead of restarted
  std::size_t k = 0;
  while (k < kill_at_.size() || !restarts.empty()) {
    const auto next_kill =
        k < kill_at_.size() ? start_ + kill_at_[k] : clock_type::time_point::max();
    const auto next_restart =
        restarts.empty() ? clock_type::time_point::max() : restarts.front().first;
    if (next_restart <= next_kill) {
      pause_until(next_restart);
      const std::string node = restarts.front().second;
      restarts.erase(restarts.begin());
      if (cut.erase(node) > 0) {
        if (auto healed = lab_->set_link(node, true); !healed) {
          fmt::print(stderr, "baton chaos: {}'s link: {}\n", node, healed.error().message);
        }
      } else {
        restart(node);
      }
      down.erase(node);
      continue;
    }
    pause_until(next_kill);
    const bool partition = targets_[k] == "partition";
    const auto role = targets_[k] == "router"    ? wire::role::router
                      : targets_[k] == "prefill" ? wire::role::prefill
                                                 : wire::role::decode;
    ++k;
    auto candidates = nodes_with(role);
    if (partition) {  // a worker's link goes down: shorter or longer than detection takes
      auto prefills = nodes_with(wire::role::prefill);
      candidates.insert(candidates.end(), prefills.begin(), prefills.end());
      std::erase_if(candidates, [&](const std::string& n) { return down.contains(n); });
      if (candidates.empty()) continue;
      const std::string node = candidates[rng_() % candidates.size()];
      const auto length = std::chrono::milliseconds(
          topology_.timeouts.dead_after_ms / 2 + rng_() % (topology_.timeouts.dead_after_ms * 3));
      if (auto cut_off = lab_->set_link(node, false); !cut_off) {
        fmt::print(stderr, "baton chaos: {}'s link: {}\n", node, cut_off.error().message);
        continue;
      }
      {
        std::lock_guard lock(mutex_);
        kills_.push_back({clock_type::now(), node, fmt::format("partition {} ms", length.count())});
        killed_nodes_.insert(node);  // its death verdicts, and its own, are expected
        partitioned_.insert(node);
      }
      down.insert(node);
      cut.insert(node);
      restarts.emplace_back(clock_type::now() + length, node);
      std::sort(restarts.begin(), restarts.end());
      continue;
    }
    std::erase_if(candidates, [&](const std::string& n) { return down.contains(n); });
    if (candidates.empty()) continue;
    // In the middle of traffic: a worker that is streaming to a native client now, if one
    // is within 500 ms (the seed still picks among them).
    std::vector<std::string> busy;
    for (const auto until = clock_type::now() + 500ms;
         role != wire::role::router && busy.empty() && clock_type::now() < until;
         pause_until(clock_type::now() + 2ms)) {
      std::lock_guard lock(mutex_);
      for (const auto& r : runs_) {
        const auto& on = role == wire::role::decode ? r.decode_node : r.prefill_node;
        if (!r.http && !r.chunks.empty() && r.completions == 0 && r.error.empty() &&
            std::find(candidates.begin(), candidates.end(), on) != candidates.end() &&
            std::find(busy.begin(), busy.end(), on) == busy.end()) {
          busy.push_back(on);
        }
      }
    }
    std::sort(busy.begin(), busy.end());
    const auto& pool = busy.empty() ? candidates : busy;
    const std::string node = pool[rng_() % pool.size()];
    {
      std::lock_guard lock(mutex_);
      if (role == wire::role::router) migrations_ += router_migrations(node);
      if (args_.attach) {
        auto pid = attached_pid(node);
        if (!pid) {
          crashes_.push_back(fmt::format("{} could not be killed: {}", node, pid.error().message));
          continue;
        }
        ::kill(*pid, SIGKILL);
        killed_pid_[node] = *pid;
      } else {
        cluster_->process(node).signal(SIGKILL);
      }
      kills_.push_back({clock_type::now(), node, "node"});
      killed_nodes_.insert(node);
    }
    if (!args_.attach) (void)cluster_->process(node).wait(5s);
    down.insert(node);
    restarts.emplace_back(clock_type::now() + std::chrono::milliseconds(args_.restart_after_ms),
                          node);
    std::sort(restarts.begin(), restarts.end());
  }
}

void chaos::restart(const std::string& node) {
  if (args_.attach) return await_return(node, killed_pid_[node]);
  std::lock_guard lock(mutex_);
  if (auto started = cluster_->start(node); !started) {
    fmt::print(stderr, "baton chaos: {} did not restart: {}\n", node, started.error().message);
  }
}

std::size_t chaos::leaked_blocks() {
  // Blocks of sequences orphaned by a killed router are kept for orphan_grace: wait it out.
  const auto deadline =
      clock_type::now() + std::chrono::milliseconds(topology_.timeouts.orphan_grace_ms) + 10s;
  std::size_t leaked = 0;
  do {
    leaked = 0;
    leaks_.clear();
    for (const auto& [node, idle] : idle_blocks_) {
      const double free = metric_of(node, "baton_decode_kv_free_blocks");
      if (free >= idle) continue;
      leaked += static_cast<std::size_t>(idle - std::max(0.0, free));
      leaks_.push_back(fmt::format("{}: {} of {} blocks free", node, free, idle));
    }
    if (leaked == 0) break;
    std::this_thread::sleep_for(200ms);
  } while (clock_type::now() < deadline);
  return leaked;
}

std::size_t chaos::router_migrations(const std::string& router) const {
  return static_cast<std::size_t>(
      bench::serve::sum_samples(metrics_of(router), "baton_router_migrations_total").value_or(0));
}

std::size_t chaos::false_suspicions() {
  std::size_t n = 0;
  if (args_.attach) {  // no logs here: the suspicions the nodes saw refuted
    for (const auto& [node, before] : suspicions_at_) {
      n += static_cast<std::size_t>(
          std::max(0.0, metric_of(node, "baton_membership_false_suspicions_total") - before));
    }
    return n;
  }
  // A verdict "member X is dead" on a node whose process was never killed.
  for (const auto& observer : topology_.nodes) {
    if (partitioned_.contains(observer.name)) continue;  // it saw everyone go
    const std::string log = cluster_->log(observer.name);
    for (const auto& node : topology_.nodes) {
      if (killed_nodes_.contains(node.name) || node.name == observer.name) continue;
      const std::string verdict = fmt::format("member {} is dead", node.name);
      for (auto at = log.find(verdict); at != std::string::npos; at = log.find(verdict, at + 1)) {
        ++n;
      }
    }
  }
  return n;
}

std::string chaos::metrics_of(const std::string& node) const {
  if (!args_.attach) return cluster_->metrics(node);
  auto text = runtime::admin_get(topology_.find(node)->admin_address, "/metrics", 500ms);
  return text ? *text : std::string();
}

double chaos::metric_of(const std::string& node, const std::string& series) const {
  return bench::serve::sum_samples(metrics_of(node), series).value_or(-1);
}

expected<pid_t> chaos::attached_pid(const std::string& node) const {
  const auto& admin = topology_.find(node)->admin_address;
  auto status = runtime::admin_get(admin, "/status", 1s);
  if (!status) return tl::unexpected(status.error());
  const auto doc = json::parse(*status, nullptr, false);
  if (!doc.is_object() || !doc.contains("pid") || !doc["pid"].is_number_integer()) {
    return fail(errc::failed, fmt::format("{}/status names no pid", admin));
  }
  const auto pid = doc["pid"].get<pid_t>();
  std::ifstream in(fmt::format("/proc/{}/cmdline", pid));
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
  if (cmdline.find("baton") == std::string::npos || cmdline.find(node) == std::string::npos) {
    return fail(errc::failed, fmt::format("its pid {} is not a baton node on this machine "
                                          "(--attach kills only local processes)",
                                          pid));
  }
  return pid;
}

void chaos::await_return(const std::string& node, pid_t old) {
  const auto until = clock_type::now() + 30s;
  while (clock_type::now() < until) {
    const auto pid = attached_pid(node);
    if (pid && *pid != old &&
        runtime::admin_get(topology_.find(node)->admin_address, "/readyz", 500ms)) {
      return;
    }
    pause_until(clock_type::now() + 50ms);
  }
  std::lock_guard lock(mutex_);
  crashes_.push_back(fmt::format(
      "{} did not serve again within 30 s of its kill: --attach needs a supervisor that "
      "restarts what dies (baton up, systemd)",
      node));
}

std::size_t chaos::children_left() const {
  // Children of this process still alive (or not reaped) after the cluster was stopped.
  std::size_t n = 0;
  const std::string me = std::to_string(getpid());
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return 0;
  while (auto* e = readdir(proc)) {
    std::ifstream stat(fmt::format("/proc/{}/stat", e->d_name));
    std::string line;
    if (!std::getline(stat, line)) continue;
    // pid (comm) state ppid ...: the fields after the last ')'.
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::string state, ppid;
    rest >> state >> ppid;
    if (ppid == me) ++n;
  }
  closedir(proc);
  return n;
}

void chaos::report(std::size_t leaked, std::size_t suspicions, std::size_t left, double elapsed_s) {
  std::size_t completed = 0;
  std::size_t identical = 0;
  std::size_t failed = 0;
  std::size_t retried = 0;
  std::vector<std::string> problems;
  for (const auto& r : runs_) {
    retried += r.retried_by_client;
    const std::string replay = fmt::format(
        "baton generate --router ROUTER --prompt '{}' --temperature {} --top-p {} --seed {} "
        "--max-tokens {} ({} client)",
        r.prompt, r.temperature, r.top_p, r.seed, r.max_tokens, r.http ? "HTTP" : "native");
    if (!r.error.empty() || r.completions != 1) {
      ++failed;
      problems.push_back(fmt::format("not completed exactly once ({} times): {}\n  {}",
                                     r.completions, r.error, replay));
      continue;
    }
    ++completed;
    if (r.text == r.expected) {
      ++identical;
    } else {
      problems.push_back(fmt::format(
          "differs from the one-process engine:\n  served:   {:?}\n  expected: {:?}\n  {}", r.text,
          r.expected, replay));
    }
  }
  // Failover: from each kill to the next token of each native request it hit: in flight
  // then, and placed on the killed node (its decode node, or its prefill node before the
  // first token), or resumed after its router went (the client sees the first placement).
  std::vector<double> failover_ms;
  for (const auto& k : kills_) {
    const bool router = topology_.find(k.node)->has_role(wire::role::router);
    for (const auto& r : runs_) {
      if (r.http || k.at < r.sent || k.at > r.ended) continue;
      const auto next = std::upper_bound(r.chunks.begin(), r.chunks.end(), k.at);
      if (next == r.chunks.end()) continue;
      const bool hit = router ? r.retried_by_client > 0
                              : r.decode_node == k.node ||
                                    (r.prefill_node == k.node && next == r.chunks.begin());
      if (!hit) continue;
      failover_ms.push_back(std::chrono::duration<double, std::milli>(*next - k.at).count());
    }
  }
  const auto failover = report::summarize(failover_ms);
  if (leaked > 0) {
    problems.push_back(fmt::format("{} KV blocks leaked on the decode nodes ({})", leaked,
                                   fmt::join(leaks_, ", ")));
  }
  if (left > 0) problems.push_back(fmt::format("{} processes left behind", left));
  problems.insert(problems.end(), crashes_.begin(), crashes_.end());
  violations_ = problems.size();
  const std::size_t partitions =
      static_cast<std::size_t>(std::count_if(kills_.begin(), kills_.end(), [](const kill_event& k) {
        return k.what.starts_with("partition");
      }));
  const std::size_t actor_kills = static_cast<std::size_t>(std::count_if(
      kills_.begin(), kills_.end(), [](const kill_event& k) { return k.what.ends_with("actor"); }));
  if (args_.json) {
    const json j = {{"seed", args_.seed},
                    {"requests", runs_.size()},
                    {"completed", completed},
                    {"identical", identical},
                    {"failed", failed},
                    {"retried_by_client", retried},
                    {"kills", kills_.size()},
                    {"actor_kills", actor_kills},
                    {"partitions", partitions},
                    {"migrations", migrations_},
                    {"false_suspicions", suspicions},
                    {"failover_ms_p50", failover.p50},
                    {"failover_ms_p99", failover.p99},
                    {"leaked_blocks", leaked},
                    {"processes_left", left},
                    {"elapsed_s", elapsed_s},
                    {"violations", problems}};
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print("\n{:<24} {}\n", "requests", runs_.size());
    fmt::print("{:<24} {}\n", "completed", completed);
    fmt::print("{:<24} {}\n", "identical", identical);
    fmt::print("{:<24} {}\n", "failed", failed);
    fmt::print("{:<24} {}\n", "retried by the client", retried);
    fmt::print("{:<24} {} ({} actors, {} partitions)\n", "kills", kills_.size(), actor_kills,
               partitions);
    for (const auto& k : kills_) {
      fmt::print("{:<24}   {:>8.3f} s  {} ({})\n", "",
                 std::chrono::duration<double>(k.at - start_).count(), k.node, k.what);
    }
    fmt::print("{:<24} {}\n", "migrations", migrations_);
    fmt::print("{:<24} {}\n", "false suspicions", suspicions);
    fmt::print("{:<24} p50 {:.0f} ms, p99 {:.0f} ms (over {} streams)\n", "failover", failover.p50,
               failover.p99, failover.count);
    fmt::print("{:<24} {}\n", "leaked KV blocks", leaked);
    fmt::print("{:<24} {}\n", "processes left", left);
    fmt::print("{:<24} {:.1f} s\n", "elapsed", elapsed_s);
  }
  for (const auto& p : problems) fmt::print(stderr, "baton chaos: violation: {}\n", p);
  if (!problems.empty()) {
    fmt::print(stderr, "baton chaos: {} violations; replay the run with --seed {}\n",
               problems.size(), args_.seed);
  }
  if (!args_.plot.empty()) {
    // A timeline: each request a bar from sent to end (its stalls over 100 ms on top), and
    // each kill a marker.
    report::panel p{"timeline", "Requests and kills", "seconds", "request", 0, 0};
    for (std::size_t i = 0; i < runs_.size(); ++i) {
      const auto& r = runs_[i];
      const auto s = [&](clock_type::time_point t) {
        return std::chrono::duration<double>(t - start_).count();
      };
      const auto y = static_cast<double>(i + 1);
      p.bars.push_back({s(r.sent), s(r.ended), y, r.error.empty() ? "#9ecae1" : "#d62728"});
      for (std::size_t c = 1; c < r.chunks.size(); ++c) {
        if (r.chunks[c] - r.chunks[c - 1] > 100ms) {
          p.bars.push_back({s(r.chunks[c - 1]), s(r.chunks[c]), y, "#ff7f0e"});
        }
      }
    }
    int row = 0;
    for (const auto& k : kills_) {
      p.markers.push_back({k.node + (k.what == "node" ? "" : " " + k.what),
                           std::chrono::duration<double>(k.at - start_).count(), "#d62728",
                           row++ % 3});
    }
    p.note = fmt::format("seed {}; stalls over 100 ms in orange", args_.seed);
    std::ofstream(args_.plot) << report::render_figure(
        fmt::format("baton chaos: {} requests, {} kills", runs_.size(), kills_.size()), {p}, 1);
  }
}

int chaos::start_cluster() {
  auto options = cluster_options(topology_);
  if (args_.netns) {
    // Every node a host of its own, this process (and the threads it starts) another.
    auto lab = launcher::netns_lab::create();
    if (!lab) {
      fmt::print(stderr, "baton chaos: --netns needs `ip netns` (root, iproute2): {}\n",
                 lab.error().message);
      return 2;
    }
    lab_ = std::move(*lab);
    auto hosts = launcher::local_cluster::add_hosts(*lab_, options.nodes);
    if (hosts) hosts = lab_->add_host("chaos-client", {"10.77.0.250"});
    if (hosts) hosts = lab_->enter("chaos-client");
    if (!hosts) {
      fmt::print(stderr, "baton chaos: --netns: {}\n", hosts.error().message);
      return 2;
    }
    options.lab = lab_.get();
  }
  cluster_ = std::make_unique<launcher::local_cluster>(options);
  std::map<std::string, std::vector<std::string>> extra;
  for (const auto& [node, spec] : crash_) extra[node] = {"--fault-crash", spec};
  if (auto started = cluster_->start_all(extra); !started) {
    fmt::print(stderr, "baton chaos: the cluster did not start: {}\n", started.error().message);
    return 1;
  }
  if (auto ready = cluster_->ready(60s); !ready) {
    fmt::print(stderr, "baton chaos: the cluster is not serving: {}\n", ready.error().message);
    return 1;
  }
  return 0;
}

int chaos::run() {
  fmt::print(
      "baton chaos: seed {} (replay: baton chaos --config {}{} --requests {} --kills {} "
      "--seed {} --restart-after-ms {} --targets {})\n",
      args_.seed, args_.config, args_.netns ? " --netns" : (args_.attach ? " --attach" : ""),
      args_.requests, args_.kills, args_.seed, args_.restart_after_ms, args_.targets);
  std::fflush(stdout);
  plan();
  if (auto refs = references(); !refs) {
    fmt::print(stderr, "baton chaos: the reference engine: {}\n", refs.error().message);
    return 2;
  }
  if (args_.attach) {
    for (const auto& n : topology_.nodes) {
      if (auto ready = runtime::admin_get(n.admin_address, "/readyz", 2s); !ready) {
        fmt::print(stderr, "baton chaos: --attach: {} at {} is not serving: {}\n", n.name,
                   n.admin_address, ready.error().message);
        return 2;
      }
      suspicions_at_[n.name] = metric_of(n.name, "baton_membership_false_suspicions_total");
    }
  } else if (auto started = start_cluster(); started != 0) {
    return started;
  }
  for (const auto& n : nodes_with(wire::role::router)) {
    const auto& spec = *topology_.find(n);
    native_.push_back(args_.attach ? spec.native_address : cluster_->native(n));
    http_.push_back(args_.attach ? spec.http_address : cluster_->http(n));
  }
  for (const auto& n : nodes_with(wire::role::decode)) {
    idle_blocks_[n] = metric_of(n, "baton_decode_kv_free_blocks");
  }
  start_ = clock_type::now();
  std::vector<std::thread> clients;
  for (std::size_t c = 0; c < std::max<std::size_t>(1, args_.clients); ++c) {
    clients.emplace_back([this, c] { client_loop(c); });
  }
  // Kills and restarts run on this thread: a child dies with the thread that forked it
  // (PR_SET_PDEATHSIG), and this one outlives the cluster.
  progress_ = report::progress_bar("requests ended", args_.json);
  kill_loop();
  while (ended_.load() < runs_.size()) pause_until(clock_type::now() + 100ms);
  if (progress_) progress_(runs_.size(), runs_.size());
  for (auto& t : clients) t.join();
  const double elapsed_s = std::chrono::duration<double>(clock_type::now() - start_).count();
  // Planted actor crashes: when their node logged them.
  for (const auto& [node, spec] : crash_) {
    if (const auto at = cluster_->logged_at(node, "fault injected")) {
      kills_.push_back({*at, node, spec.substr(0, spec.find(':')) + " actor"});
    }
  }
  std::sort(kills_.begin(), kills_.end(),
            [](const kill_event& a, const kill_event& b) { return a.at < b.at; });
  const std::size_t leaked = leaked_blocks();
  const std::size_t suspicions = false_suspicions();
  // Every kill was restarted: a node not running now ended on its own.
  for (const auto& n : topology_.nodes) {
    if (args_.attach) {
      if (!runtime::admin_get(n.admin_address, "/readyz", 1s)) {
        crashes_.push_back(fmt::format("{} does not serve at the end", n.name));
      }
      continue;
    }
    const auto status = cluster_->process(n.name).wait(0ms);
    if (!status) continue;
    crashes_.push_back(
        WIFSIGNALED(*status)
            ? fmt::format("{} ended on its own: signal {} ({})", n.name, WTERMSIG(*status),
                          strsignal(WTERMSIG(*status)))
            : fmt::format("{} ended on its own: exit code {}", n.name, WEXITSTATUS(*status)));
  }
  for (const auto& router : nodes_with(wire::role::router)) {
    migrations_ += router_migrations(router);
  }
  cluster_.reset();  // SIGTERM, then SIGKILL, every node; reaped
  const std::size_t left = args_.attach ? 0 : children_left();
  report(leaked, suspicions, left, elapsed_s);
  return violations_ == 0 ? 0 : 1;
}

}  // namespace

void add_chaos_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<chaos_args>();
  auto* cmd = app.add_subcommand(
      "chaos", "Kill nodes and actors of a local cluster during traffic and check every answer");
  cmd->add_option("--config", args->config, "The topology whose nodes run")
      ->check(CLI::ExistingFile);
  cmd->add_option("--requests", args->requests, "Requests sent")->check(CLI::Range(1, 100'000));
  cmd->add_option("--kills", args->kills, "Kills during the traffic")->check(CLI::Range(0, 1000));
  cmd->add_option("--seed", args->seed,
                  "Seeds the requests, the kills' moments and targets "
                  "(default: random, printed)");
  cmd->add_option("--restart-after-ms", args->restart_after_ms,
                  "A killed node is started again this long after it died");
  cmd->add_option("--targets", args->targets,
                  "What the kills hit: router, prefill, decode (SIGKILL of the node's process), "
                  "actor (a prefill or decode actor crashes inside its live node), partition "
                  "(--netns; added by default there)");
  cmd->add_option("--clients", args->clients, "Requests in flight at once")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--max-tokens", args->max_tokens, "Longest completion asked for (at least 16)");
  cmd->add_flag("--json", args->json, "One JSON object instead of the table");
  cmd->add_flag("--netns", args->netns,
                "Each node in a network namespace of its own (root, `ip netns`), joined by veth "
                "pairs on a bridge, addresses 10.77.0.0/24 inside them only; adds the target "
                "partition (a prefill or decode node's link down, then up)");
  cmd->add_option("--plot", args->plot, "Write an SVG timeline of requests, stalls and kills");
  cmd->add_flag("--attach", args->attach,
                "Use the running cluster the topology describes instead of starting one: kills "
                "its nodes' processes on this machine (the pid each admin port reports), and "
                "its supervisor (baton up, systemd) restarts them; targets router, prefill, "
                "decode");
  cmd->callback([args, cmd, &exit_code] {
    if (args->seed == 0) args->seed = std::random_device{}();
    if (args->netns && cmd->get_option("--targets")->count() == 0) args->targets += ",partition";
    if (args->attach && cmd->get_option("--targets")->count() == 0) {
      args->targets = "prefill,decode,router";
    }
    if (args->attach && (args->netns || args->targets.find("actor") != std::string::npos ||
                         args->targets.find("partition") != std::string::npos)) {
      fmt::print(stderr,
                 "baton chaos: --attach kills node processes only (targets router, prefill, "
                 "decode): actor crashes are planted and partitions made in nodes this "
                 "command starts\n");
      exit_code = 2;
      return;
    }
    auto topology = runtime::load_topology(args->config);
    if (!topology) {
      fmt::print(stderr, "baton chaos: {}\n", topology.error().message);
      exit_code = 2;
      return;
    }
    if (const auto missing = topology->model.missing(); !missing.empty()) {
      fmt::print(stderr, "baton chaos: {}\n", missing);
      exit_code = 2;
      return;
    }
    exit_code = chaos(*args, std::move(*topology)).run();
  });
}

}  // namespace baton::tools
