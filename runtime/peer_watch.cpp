#include "runtime/peer_watch.hpp"

#include <array>
#include <chrono>
#include <map>
#include <thread>

#include <spdlog/spdlog.h>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded

#include <boost/asio.hpp>

#include "base/address.hpp"

namespace baton::runtime {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

constexpr auto connect_timeout = std::chrono::seconds(1);
constexpr auto retry_refused = std::chrono::milliseconds(500);
constexpr auto retry_other = std::chrono::seconds(1);
constexpr auto dead_connect_timeout = std::chrono::milliseconds(500);
constexpr auto dead_retry = std::chrono::milliseconds(500);

std::string host_of(const std::string& address) {
  auto parsed = parse_host_port(address, port_zero::allowed);
  return parsed ? parsed->host : std::string();
}

}  // namespace

struct peer_watch::impl {
  /// One watched member. Handlers hold it and compare `generation`: an update or a
  /// forget bumps it, and the handlers of the old connection then do nothing.
  struct watched {
    explicit watched(asio::io_context& io) : socket(io), timer(io) {}
    std::string node;
    std::uint64_t incarnation = 0;
    std::uint64_t started = 0;  ///< its process's first incarnation (0: not said)
    tcp::endpoint endpoint;
    tcp::socket socket;
    asio::steady_timer timer;
    std::uint64_t generation = 0;
    bool reported = false;  ///< told `gone` for this incarnation
    bool dead = false;      ///< watched for the network's return
    bool cut = false;       ///< dead, and a connect timed out or found no route
    /// It refuted a report (a new incarnation without having died): its admin port is not
    /// evidence of anything (misconfigured), so it is never reported again.
    bool distrusted = false;
    std::array<char, 64> scratch{};
  };

  impl(std::string self_name, std::function<void(const std::string&)> on_gone,
       std::function<void(const std::string&)> on_back)
      : self(std::move(self_name)), gone(std::move(on_gone)), back(std::move(on_back)) {}

  void update(const wire::member& m) {
    if (m.node == self) return;
    const bool dead = m.state == wire::member_state::dead;
    const bool watched_state =
        dead || m.state == wire::member_state::alive || m.state == wire::member_state::suspect;
    auto it = peers.find(m.node);
    if (!watched_state || m.admin_address.empty() ||
        host_of(m.admin_address) != host_of(m.fabric_address)) {
      if (it != peers.end()) forget(*it->second), peers.erase(it);
      return;
    }
    if (it != peers.end() && it->second->incarnation == m.incarnation) {
      if (it->second->dead == dead) return;
      it->second->dead = dead;
      // Buried: an idle connection says nothing while the network is down; test it anew.
      if (dead) connect(it->second);
      return;
    }
    auto parsed = parse_host_port(m.admin_address);
    error_code ec;
    const auto address = parsed ? asio::ip::make_address(parsed->host, ec) : asio::ip::address{};
    if (!parsed || ec) return;  // a name, not an address: nothing to watch cheaply
    bool distrusted = false;
    bool cut = false;  // a refuting member comes back under a new incarnation
    if (it != peers.end()) {
      cut = it->second->cut;
      // A new process (restarted) proves the report right; the same one refuted it.
      const bool restarted = m.started != 0 && m.started != it->second->started;
      distrusted = !restarted && (it->second->distrusted || it->second->reported);
      if (!restarted && it->second->reported && !it->second->distrusted) {
        spdlog::warn(
            "member {} refuted being gone although its admin port {} refuses "
            "connections: not watching that port",
            m.node, m.admin_address);
      }
      forget(*it->second);
      peers.erase(it);
    }
    auto w = std::make_shared<watched>(io);
    w->distrusted = distrusted;
    w->dead = dead;
    w->cut = cut;
    w->node = m.node;
    w->incarnation = m.incarnation;
    w->started = m.started;
    w->endpoint = tcp::endpoint(address, parsed->port);
    peers.emplace(m.node, w);
    connect(w);
  }

  void forget(watched& w) {
    ++w.generation;
    error_code ignored;
    w.socket.close(ignored);
    w.timer.cancel();
  }

  void connect(const std::shared_ptr<watched>& w) {
    const auto generation = ++w->generation;
    error_code ignored;
    w->socket.close(ignored);
    w->timer.expires_after(w->dead ? dead_connect_timeout : connect_timeout);
    w->timer.async_wait([w, generation](error_code ec) {
      if (ec || w->generation != generation) return;
      error_code ignore;
      w->socket.close(ignore);  // the connect completes with operation_aborted
    });
    w->socket.async_connect(w->endpoint, [this, w, generation](error_code ec) {
      if (w->generation != generation) return;
      w->timer.cancel();
      if (!ec && w->cut) {  // even if gossip revived it meanwhile: its connection is stale
        w->cut = false;
        back(w->node);
      }
      if (w->dead) {
        if (ec && ec != asio::error::connection_refused) w->cut = true;
        error_code ignore;
        w->socket.close(ignore);
        return retry(w, dead_retry);
      }
      if (!ec) return watch(w, generation);
      if (ec == asio::error::connection_refused) {
        if (!w->reported && !w->distrusted) {
          w->reported = true;
          spdlog::info("member {}: its admin port refuses connections: its process is gone",
                       w->node);
          gone(w->node);
        }
        return retry(w, retry_refused);
      }
      retry(w, retry_other);  // timed out or unreachable: probes decide
    });
  }

  /// Waits for the connection to close (any byte or error ends the wait), then reconnects.
  void watch(const std::shared_ptr<watched>& w, std::uint64_t generation) {
    w->socket.async_read_some(asio::buffer(w->scratch),
                              [this, w, generation](error_code, std::size_t) {
                                if (w->generation != generation) return;
                                connect(w);
                              });
  }

  void retry(const std::shared_ptr<watched>& w, std::chrono::milliseconds after) {
    const auto generation = ++w->generation;
    w->timer.expires_after(after);
    w->timer.async_wait([this, w, generation](error_code ec) {
      if (ec || w->generation != generation) return;
      connect(w);
    });
  }

  std::string self;
  std::function<void(const std::string&)> gone;
  std::function<void(const std::string&)> back;
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::map<std::string, std::shared_ptr<watched>> peers;  // touched on the thread only
  std::thread thread;
};

peer_watch::peer_watch(std::string self, std::function<void(const std::string& node)> gone,
                       std::function<void(const std::string& node)> back)
    : impl_(std::make_unique<impl>(std::move(self), std::move(gone), std::move(back))) {
  impl_->thread = std::thread([p = impl_.get()] { p->io.run(); });
}

peer_watch::~peer_watch() {
  asio::post(impl_->io, [p = impl_.get()] {
    for (auto& [node, w] : p->peers) p->forget(*w);
    p->peers.clear();
    p->work.reset();
  });
  impl_->thread.join();
}

void peer_watch::update(const wire::member& m) {
  asio::post(impl_->io, [p = impl_.get(), m] { p->update(m); });
}

}  // namespace baton::runtime
