// Set-up of the fabric endpoint: provider selection, fi_getinfo hints, opening every fid.
#include "transport/fabric/fabric.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <openssl/rand.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>

#include "transport/fabric/fabric_endpoint.hpp"

#include "base/address.hpp"

namespace baton::transport::fabric {

namespace {

constexpr std::uint32_t fabric_version = FI_VERSION(1, 17);

struct provider_choice {
  const char* libfabric_name;
  bool is_tcp;
  bool needs_device;
};

expected<provider_choice> choose(const std::string& name) {
  if (name == "tcp") return provider_choice{"tcp;ofi_rxm", true, false};
  if (name == "shm") return provider_choice{"shm", false, false};
  if (name == "verbs") return provider_choice{"verbs;ofi_rxm", false, true};
  if (name == "efa") return provider_choice{"efa", false, true};
  return fail(errc::not_found, fmt::format("unknown provider: {}", name));
}

std::string error_text(int rc) {
  return fi_strerror(rc < 0 ? -rc : rc);
}

info_ptr make_hints(const provider_choice& choice) {
  info_ptr hints(fi_allocinfo());
  hints->ep_attr->type = FI_EP_RDM;
  hints->caps = FI_MSG | FI_TAGGED | FI_RMA | FI_SOURCE;
  hints->mode = FI_CONTEXT | FI_CONTEXT2;
  // The app supports every mode bit (verbs and efa need FI_MR_LOCAL); obey what comes back.
  hints->domain_attr->mr_mode =
      FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT;
  hints->domain_attr->threading = FI_THREAD_DOMAIN;
  hints->tx_attr->msg_order = FI_ORDER_SAS;
  hints->fabric_attr->prov_name = strdup(choice.libfabric_name);  // freed by fi_freeinfo
  return hints;
}

/// A tcp address: "host:port" ("localhost" meaning 127.0.0.1); an empty text binds
/// 127.0.0.1 with an OS-chosen port, as port 0 does.
expected<host_port> tcp_address(const std::string& text, port_zero zero) {
  if (text.empty()) return host_port{"127.0.0.1", 0};
  auto parsed = parse_host_port(text, zero);
  if (!parsed) return fail(parsed.error(), "tcp ");
  if (parsed->host == "localhost") parsed->host = "127.0.0.1";
  return parsed;
}

}  // namespace

expected<std::unique_ptr<endpoint>> make_fabric_endpoint(const endpoint_config& config) {
  // libfabric reads its parameters once, at its first call: fi_av_remove must close rxm's
  // connection for reset_peer to open a new one (an operator's own setting wins).
  static std::once_flag parameters;
  std::call_once(parameters, [] { ::setenv("FI_AV_REMOVE_CLEANUP", "1", 0); });
  auto choice = choose(config.provider);
  if (!choice) return tl::unexpected(choice.error());
  auto hints = make_hints(*choice);
  std::string node;
  std::string service;
  if (choice->is_tcp) {
    auto bind = tcp_address(config.bind.text, port_zero::allowed);
    if (!bind) return tl::unexpected(bind.error());
    node = bind->host;
    service = std::to_string(bind->port);
  } else {
    node = config.bind.text;
  }
  fi_info* raw = nullptr;
  int rc = fi_getinfo(fabric_version, node.empty() ? nullptr : node.c_str(),
                      service.empty() ? nullptr : service.c_str(), node.empty() ? 0 : FI_SOURCE,
                      hints.get(), &raw);
  info_ptr info(raw);
  if (rc != 0 || info == nullptr) {
    if (choice->needs_device)
      return fail(errc::not_found,
                  fmt::format("provider not available: {} (no device)", config.provider));
    return fail(errc::not_found,
                fmt::format("provider not available: {} ({})", config.provider, error_text(rc)));
  }
  auto ep = std::make_unique<fabric_endpoint>(config);
  if (auto opened = ep->open(std::move(info)); !opened) {
    // "fi_endpoint: Address already in use" says nothing of which address.
    return fail(opened.error(),
                fmt::format("{} endpoint on {}: ", config.provider, config.bind.text));
  }
  return std::unique_ptr<endpoint>(std::move(ep));
}

namespace {

expected<void> check(int rc, const char* what) {
  if (rc == 0) return {};
  return fail(errc::failed, fmt::format("{}: {}", what, error_text(rc)));
}

}  // namespace

expected<void> fabric_endpoint::open(info_ptr info) {
  info_ = std::move(info);
  auto mode = info_->domain_attr->mr_mode;
  if (mode == FI_MR_BASIC) mode = FI_MR_VIRT_ADDR | FI_MR_PROV_KEY | FI_MR_ALLOCATED;
  // FI_LOCAL_MR is the pre-1.5 spelling of FI_MR_LOCAL, as a mode bit.
  mr_local_ =
      (mode & FI_MR_LOCAL) != 0 || (info_->mode & FI_LOCAL_MR) != 0 || config_.require_local_mr;
  blocking_wait_ = config_.provider != "shm";
  virt_addr_ = (mode & FI_MR_VIRT_ADDR) != 0;
  shm_direct_write_ = config_.provider == "shm" && virt_addr_;
  prov_key_ = (mode & FI_MR_PROV_KEY) != 0;
  mr_endpoint_ = (mode & FI_MR_ENDPOINT) != 0;
  if (auto ok = open_fids(); !ok) return ok;
  if (auto ok = learn_local_address(); !ok) return ok;
  if (auto ok = open_buffers(); !ok) return ok;
  progress_ = std::thread([this] { progress_loop(); });
  return {};
}

std::uint64_t fabric_endpoint::next_key() {
  // From the CSPRNG, not rng_: that one is seeded from a seed the node prints (for replay),
  // and a memory key must not be predictable from a log.
  std::uint64_t key = 0;
  while (key == 0) {
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&key), sizeof(key)) != 1) {
      throw std::runtime_error("RAND_bytes failed: no randomness for a memory key");
    }
  }
  return key;
}

expected<void> fabric_endpoint::open_buffers() {
  // With mr_local_ both slabs are registered here, once; without it the receive slab is
  // plain memory and sends go from the operation's own frame (no copy, no descriptor).
  fid_domain* domain = mr_local_ ? domain_.get() : nullptr;
  fid_ep* bind_to = mr_endpoint_ ? ep_.get() : nullptr;
  const key_source keys = [this] { return next_key(); };
  const std::size_t frame_bytes =
      frame::header_bytes + config_.limits.max_message_bytes + frame::seal_bytes;
  auto rx = slab::make(config_.limits.receive_depth, frame_bytes, domain, bind_to, FI_RECV, keys);
  if (!rx) return tl::unexpected(rx.error());
  rx_memory_ = std::move(*rx);
  if (mr_local_) {
    // Internal frames (a hello carries our raw address) fit even with a tiny message limit.
    constexpr std::size_t internal_frame_bytes = 1024;
    auto tx = slab::make(config_.limits.send_depth, std::max(frame_bytes, internal_frame_bytes),
                         domain, bind_to, FI_SEND, keys);
    if (!tx) return tl::unexpected(tx.error());
    tx_memory_ = std::move(*tx);
  }
  for (std::uint32_t i = 0; i < rx_memory_.slots(); ++i) {
    auto slot = std::make_unique<rx_slot>();
    slot->ctx.as_rx = slot.get();
    slot->buffer = rx_memory_.slot(i);
    int rc = fi_trecv(ep_.get(), slot->buffer.data(), slot->buffer.size(),
                      local_desc(rx_memory_.desc()), FI_ADDR_UNSPEC, 0, 0, &slot->ctx.raw);
    rx_.push_back(std::move(slot));  // posted or not, it must outlive the endpoint
    if (auto ok = check(rc, "fi_trecv"); !ok) return ok;
  }
  return {};
}

expected<void> fabric_endpoint::open_fids() {
  fid_fabric* fab = nullptr;
  if (auto ok = check(fi_fabric(info_->fabric_attr, &fab, nullptr), "fi_fabric"); !ok) return ok;
  fabric_.reset(fab);
  fid_domain* dom = nullptr;
  if (auto ok = check(fi_domain(fabric_.get(), info_.get(), &dom, nullptr), "fi_domain"); !ok)
    return ok;
  domain_.reset(dom);
  fi_cq_attr cq_attr{};
  cq_attr.format = FI_CQ_FORMAT_TAGGED;
  // fi_cq_sread needs a wait object (on FI_WAIT_NONE it crashes, deps.md 3); shm never
  // sreads (see blocking_wait_), so it gets none.
  cq_attr.wait_obj = blocking_wait_ ? FI_WAIT_UNSPEC : FI_WAIT_NONE;
  cq_attr.size = config_.limits.receive_depth + 2 * config_.limits.max_inflight_ops +
                 config_.limits.max_expired_ops + 64;
  fid_cq* cq = nullptr;
  if (auto ok = check(fi_cq_open(domain_.get(), &cq_attr, &cq, nullptr), "fi_cq_open"); !ok)
    return ok;
  cq_.reset(cq);
  fi_av_attr av_attr{};
  av_attr.type = FI_AV_TABLE;
  fid_av* av = nullptr;
  if (auto ok = check(fi_av_open(domain_.get(), &av_attr, &av, nullptr), "fi_av_open"); !ok)
    return ok;
  av_.reset(av);
  fid_ep* ep = nullptr;
  if (auto ok = check(fi_endpoint(domain_.get(), info_.get(), &ep, nullptr), "fi_endpoint"); !ok)
    return ok;
  ep_.reset(ep);
  if (auto ok = check(fi_ep_bind(ep_.get(), &av_->fid, 0), "fi_ep_bind(av)"); !ok) return ok;
  if (auto ok = check(fi_ep_bind(ep_.get(), &cq_->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind(cq)");
      !ok)
    return ok;
  return check(fi_enable(ep_.get()), "fi_enable");
}

expected<void> fabric_endpoint::learn_local_address() {
  std::vector<std::byte> name(256);
  std::size_t len = name.size();
  if (auto ok = check(fi_getname(&ep_->fid, name.data(), &len), "fi_getname"); !ok) return ok;
  name.resize(std::min(len, name.size()));
  raw_local_ = name;
  local_.text = text_of(name);
  return {};
}

std::string fabric_endpoint::text_of(const std::vector<std::byte>& raw) const {
  if (info_->addr_format == FI_SOCKADDR_IN && raw.size() >= sizeof(sockaddr_in)) {
    sockaddr_in sin{};
    std::memcpy(&sin, raw.data(), sizeof(sin));
    char ip[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &sin.sin_addr, ip, sizeof(ip));
    return fmt::format("{}:{}", ip, ntohs(sin.sin_port));
  }
  return {reinterpret_cast<const char*>(raw.data()),
          strnlen(reinterpret_cast<const char*>(raw.data()), raw.size())};
}

expected<std::vector<std::byte>> fabric_endpoint::raw_address_of(const address& peer) const {
  if (info_->addr_format == FI_SOCKADDR_IN) {
    auto parsed = tcp_address(peer.text, port_zero::refused);
    if (!parsed) return tl::unexpected(parsed.error());
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    if (inet_pton(AF_INET, parsed->host.c_str(), &sin.sin_addr) != 1)
      return fail(errc::invalid_argument,
                  fmt::format("tcp address \"{}\": expected a numeric IPv4 host", peer.text));
    sin.sin_port = htons(parsed->port);
    std::vector<std::byte> raw(sizeof(sin));
    std::memcpy(raw.data(), &sin, sizeof(sin));
    return raw;
  }
  if (peer.text.empty() || peer.text.size() > 200)
    return fail(errc::invalid_argument, "address: empty or too long");
  // A bare shm name means the first endpoint its process bound under that name, which
  // the provider calls fi_shm://NAME:0:0.
  std::string text = peer.text;
  if (config_.provider == "shm" && text.find("://") == std::string::npos)
    text = fmt::format("fi_shm://{}:0:0", text);
  std::vector<std::byte> raw(text.size() + 1);  // FI_ADDR_STR: NUL-terminated
  std::memcpy(raw.data(), text.data(), text.size());
  return raw;
}

}  // namespace baton::transport::fabric
