#include "runtime/bridge.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include "runtime/messages.hpp"
#include "runtime/peer_link.hpp"

namespace baton::runtime {
namespace {

using expire_atom = caf::atom_constant<caf::atom("b_expire")>;
using clock = std::chrono::steady_clock;

caf::error to_caf(const error& e) {
  return caf::make_error(caf::sec::runtime_error, e.to_string());
}

struct bridge_state {
  static inline const char* name = "baton.bridge";

  node_context* ctx = nullptr;
  std::string peer;
  std::optional<wire::decoder> decoder;  // optional: decoders are not movable
  std::shared_ptr<peer_link> link;
  struct pending_request {
    caf::response_promise promise;
    clock::time_point deadline;
  };
  std::map<std::uint64_t, pending_request> pending;  // requests by message id
  bool sweep_scheduled = false;                      // an expire_atom is on its way
  // Remote actors on the peer that local actors watch: remote name -> local watchers.
  std::map<std::string, std::vector<std::string>> watching;
  // Local actors the peer watches: local actor -> (its name, remote watchers).
  std::map<caf::actor_addr, std::pair<std::string, std::vector<wire::actor_address>>> watched;
  counter* stale = nullptr;
  counter* rejected = nullptr;
  counter* unknown_target = nullptr;
};

using bridge_actor = caf::stateful_actor<bridge_state>;

/// Tells the local actor `name` (if it exists) that a frame it sent was not delivered.
void report_failure(bridge_actor* self, const wire::actor_address& source,
                    const wire::actor_address& target, std::uint64_t id, error reason) {
  if (auto actor = self->state.ctx->lookup(source.actor)) {
    self->send(actor, delivery_failure{target, id, std::move(reason)});
  }
}

/// Sends what a local actor asked for; returns the frame's id, or why it did not leave.
expected<std::uint64_t> post(bridge_actor* self, outbound& o) {
  return self->state.link->send(std::move(o.source), std::move(o.target), std::move(o.body),
                                o.in_reply_to, o.deadline);
}

/// Sends a runtime control frame from this node's runtime to `target` on the peer.
void control(bridge_actor* self, const wire::actor_address& target, wire::body body,
             std::uint64_t in_reply_to = 0) {
  (void)self->state.link->send({self->state.ctx->name(), "runtime"}, target, std::move(body),
                               in_reply_to);
}

void deliver_app_frame(bridge_actor* self, inbound in) {
  auto& st = self->state;
  const auto f = in.frame;  // in moves on below
  if (auto target = st.ctx->lookup(f->target.actor)) {
    self->send(target, std::move(in));
  } else {
    st.unknown_target->add();
    control(self, f->source,
            wire::failure{errc::not_found,
                          fmt::format("no actor '{}' on node {}", f->target.actor, st.ctx->name())},
            f->message_id);
  }
  st.link->delivered();
}

void on_monitor(bridge_actor* self, const wire::frame& f, const wire::monitor& m) {
  auto& st = self->state;
  auto target = st.ctx->lookup(f.target.actor);
  if (!target) {
    control(self, m.watcher,
            wire::down{f.target, errc::not_found,
                       fmt::format("no actor '{}' on node {}", f.target.actor, st.ctx->name())});
    return;
  }
  auto& entry = st.watched[target.address()];
  if (entry.second.empty()) self->monitor(target);
  entry.first = f.target.actor;
  entry.second.push_back(m.watcher);
}

void on_down(bridge_actor* self, const wire::down& d) {
  auto& st = self->state;
  auto it = st.watching.find(d.actor.actor);
  if (it == st.watching.end()) return;
  for (const auto& watcher : it->second) {
    if (auto actor = st.ctx->lookup(watcher)) {
      self->send(actor, remote_down{d.actor, error{d.code, d.reason}});
    }
  }
  st.watching.erase(it);
}

void dispatch(bridge_actor* self, inbound in) {
  auto& st = self->state;
  const auto f = in.frame;
  if (f->source.node != st.peer) {
    // The transport routes by connection, and a seed's placeholder bridge ("seed@HOST:PORT")
    // shares its connection with the node it turns out to be: a frame belongs to its
    // sender's bridge, whose credit window and requests it may answer.
    if (auto owner = st.ctx->bridge(f->source.node)) {
      self->send(owner, decoded_atom::value, std::move(in));
      return;
    }
  }
  if (!st.ctx->for_this_process(f->target_incarnation) && flow_controlled(f->body)) {
    st.stale->add();  // sent to the process this node was before it restarted
    st.link->delivered();
    return;
  }
  if (!st.ctx->accepts(f->source.node, f->sender_incarnation)) {
    st.stale->add();
    // Membership still reads what a buried incarnation says of this node (a partition may
    // have buried both sides): it answers nothing.
    if (!flow_controlled(f->body) && !std::holds_alternative<wire::failure>(f->body)) {
      st.ctx->to_membership(*f);
    }
    return;
  }
  st.link->heard_from(f->sender_incarnation);
  const auto& body = f->body;
  if (const auto* c = std::get_if<wire::credit>(&body)) return st.link->on_credit(c->frames);
  if (const auto* m = std::get_if<wire::monitor>(&body)) return on_monitor(self, *f, *m);
  if (const auto* d = std::get_if<wire::down>(&body)) return on_down(self, *d);
  if (f->in_reply_to != 0) {
    auto it = st.pending.find(f->in_reply_to);
    if (it != st.pending.end()) {
      if (const auto* failed = std::get_if<wire::failure>(&body)) {
        it->second.promise.deliver(to_caf(error{failed->code, failed->message}));
      } else {
        it->second.promise.deliver(in);
      }
      st.pending.erase(it);
      if (flow_controlled(body)) st.link->delivered();
      return;
    }
    if (const auto* failed = std::get_if<wire::failure>(&body)) {
      report_failure(self, f->target, f->source, f->in_reply_to,
                     error{failed->code, failed->message});
      return;
    }
  }
  if (!flow_controlled(body)) {
    // Membership frames go to the membership driver whatever they name; a stray failure
    // (its request long expired) has nobody left to tell.
    if (std::holds_alternative<wire::failure>(body)) return;
    st.ctx->to_membership(*f);
    return;
  }
  deliver_app_frame(self, std::move(in));
}

/// One timer for all requests, not one each (each would wake CAF's clock thread): set for
/// the earliest deadline pending when it is set, it expires what is due and sets itself
/// again. A later request with an earlier deadline waits for it; its caller's own request
/// timeout (remote_actor::request) still fires on time, so this only reclaims the entry.
void schedule_sweep(bridge_actor* self) {
  auto& st = self->state;
  if (st.sweep_scheduled || st.pending.empty()) return;
  auto earliest = clock::time_point::max();
  for (const auto& [id, request] : st.pending) earliest = std::min(earliest, request.deadline);
  st.sweep_scheduled = true;
  self->delayed_send(
      self, std::max<clock::duration>(earliest - clock::now(), std::chrono::milliseconds(1)),
      expire_atom::value);
}

void fail_everything(bridge_actor* self, const error& reason) {
  auto& st = self->state;
  for (auto& [id, request] : st.pending) request.promise.deliver(to_caf(reason));
  st.pending.clear();
  for (const auto& [remote, watchers] : st.watching) {
    for (const auto& watcher : watchers) {
      if (auto actor = st.ctx->lookup(watcher)) {
        self->send(actor, remote_down{{st.peer, remote}, reason});
      }
    }
  }
  st.watching.clear();
  for (const auto& source : st.link->drop_waiting()) {
    report_failure(self, source, {st.peer, ""}, 0, reason);
  }
}

caf::behavior bridge(bridge_actor* self, node_context* ctx, std::string peer,
                     std::shared_ptr<peer_link> link) {
  auto& st = self->state;
  st.ctx = ctx;
  st.peer = std::move(peer);
  st.decoder.emplace(ctx->config().limits);
  st.link = std::move(link);
  auto& m = ctx->metrics();
  st.stale = &m.get_counter("baton_frames_stale_total",
                            "Frames dropped because they came from an old incarnation.",
                            {{"peer", st.peer}});
  st.rejected = &m.get_counter("baton_frames_rejected_total", "Frames the codec rejected.",
                               {{"peer", st.peer}});
  st.unknown_target =
      &m.get_counter("baton_frames_unknown_target_total",
                     "Frames naming no local actor, answered with a failure.", {{"peer", st.peer}});
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& s = self->state;
    auto it = s.watched.find(dm.source);
    if (it == s.watched.end()) return;
    const wire::actor_address gone{s.ctx->name(), it->second.first};
    for (const auto& watcher : it->second.second) {
      control(self, watcher, wire::down{gone, errc::disconnected, caf::to_string(dm.reason)});
    }
    s.watched.erase(it);
  });
  return {
      [self](outbound& o) {
        const auto source = o.source;
        const auto target = o.target;
        auto id = post(self, o);
        if (!id) report_failure(self, source, target, 0, id.error());
      },
      [self](request_atom, outbound& o) -> caf::result<inbound> {
        auto rp = self->make_response_promise();
        const auto deadline = o.deadline;
        auto id = post(self, o);
        if (!id) return to_caf(id.error());
        self->state.pending.emplace(*id, bridge_state::pending_request{rp, deadline});
        schedule_sweep(self);
        return caf::delegated<inbound>{};
      },
      [self](expire_atom) {
        auto& s = self->state;
        s.sweep_scheduled = false;
        const auto now = clock::now();
        for (auto it = s.pending.begin(); it != s.pending.end();) {
          if (it->second.deadline > now) {
            ++it;
            continue;
          }
          it->second.promise.deliver(
              to_caf(error{errc::timed_out, "no reply before the deadline"}));
          it = s.pending.erase(it);
        }
        schedule_sweep(self);
      },
      [self](raw_frame& r) {
        auto& s = self->state;
        auto decoded = s.decoder->decode(*r.bytes);
        if (!decoded) {
          s.rejected->add();
          spdlog::warn("frame from {} rejected: {}", s.peer, decoded.error().message);
          return;
        }
        dispatch(self,
                 inbound{std::make_shared<const wire::frame>(std::move(*decoded)), r.received});
      },
      [self](decoded_atom, inbound& in) { dispatch(self, std::move(in)); },
      [self](watch_remote& w) {
        auto& watchers = self->state.watching[w.target.actor];
        watchers.push_back(w.watcher.actor);
        if (watchers.size() == 1) control(self, w.target, wire::monitor{w.watcher});
      },
      [self](node_gone& g) {
        fail_everything(self, g.reason);
        self->state.ctx->sink().detach(self->state.peer, caf::actor_cast<caf::actor>(self));
        self->quit();
      },
  };
}

}  // namespace

bool flow_controlled(const wire::body& body) {
  return !(
      std::holds_alternative<wire::join>(body) || std::holds_alternative<wire::join_reply>(body) ||
      std::holds_alternative<wire::heartbeat>(body) || std::holds_alternative<wire::leave>(body) ||
      std::holds_alternative<wire::monitor>(body) || std::holds_alternative<wire::down>(body) ||
      std::holds_alternative<wire::failure>(body) || std::holds_alternative<wire::credit>(body));
}

caf::actor spawn_bridge(node_context& ctx, const std::string& peer,
                        std::shared_ptr<peer_link> link) {
  return ctx.system().spawn(bridge, &ctx, peer, std::move(link));
}

}  // namespace baton::runtime
