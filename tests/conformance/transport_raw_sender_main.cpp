// A hostile peer for the bad-input tests:
//   transport_raw_sender <provider> <target address>
//   transport_raw_sender <provider> <target address> forge <sender node id> <count>
// Talks raw libfabric (no Baton endpoint). The first form sends the target four frames
// Baton must reject and count: a truncated header, a length field that disagrees with the
// bytes, a bad magic, and a well-formed message from a node that never said hello. The
// second forges frames from `sender` to a target that requires sealed frames: an unsealed
// message, a sealed hello under a key of its own, then `count` sealed messages of the right
// shape with a wrong tag. Exit 0 once all sends completed, 1 on any failure (5 s deadline
// per send).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>

#include "transport/fabric/fid.hpp"
#include "transport/frame.hpp"
#include "transport/frame_mac.hpp"

using namespace baton::transport;
using namespace baton::transport::fabric;

namespace {

struct raw_endpoint {
  info_ptr info;
  fid_ptr<fid_fabric> fabric;
  fid_ptr<fid_domain> domain;
  fid_ptr<fid_cq> cq;
  fid_ptr<fid_av> av;
  fid_ptr<fid_ep> ep;  // last: closed first
};

bool open(raw_endpoint& r, const std::string& provider) {
  info_ptr hints(fi_allocinfo());
  hints->ep_attr->type = FI_EP_RDM;
  hints->caps = FI_MSG | FI_TAGGED;
  hints->mode = FI_CONTEXT | FI_CONTEXT2;
  hints->domain_attr->mr_mode = FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
  hints->fabric_attr->prov_name = strdup(provider == "tcp" ? "tcp;ofi_rxm" : "shm");
  const std::string name = "baton-raw-" + std::to_string(::getpid());
  fi_info* info = nullptr;
  int rc =
      provider == "tcp"
          ? fi_getinfo(FI_VERSION(1, 17), "127.0.0.1", "0", FI_SOURCE, hints.get(), &info)
          : fi_getinfo(FI_VERSION(1, 17), name.c_str(), nullptr, FI_SOURCE, hints.get(), &info);
  r.info.reset(info);
  if (rc != 0) return false;
  fid_fabric* fab = nullptr;
  fid_domain* dom = nullptr;
  fid_cq* cq = nullptr;
  fid_av* av = nullptr;
  fid_ep* ep = nullptr;
  fi_cq_attr cq_attr{};
  cq_attr.format = FI_CQ_FORMAT_TAGGED;
  fi_av_attr av_attr{};
  av_attr.type = FI_AV_TABLE;
  if (fi_fabric(r.info->fabric_attr, &fab, nullptr) != 0) return false;
  r.fabric.reset(fab);
  if (fi_domain(fab, r.info.get(), &dom, nullptr) != 0) return false;
  r.domain.reset(dom);
  if (fi_cq_open(dom, &cq_attr, &cq, nullptr) != 0) return false;
  r.cq.reset(cq);
  if (fi_av_open(dom, &av_attr, &av, nullptr) != 0) return false;
  r.av.reset(av);
  if (fi_endpoint(dom, r.info.get(), &ep, nullptr) != 0) return false;
  r.ep.reset(ep);
  return fi_ep_bind(ep, &av->fid, 0) == 0 && fi_ep_bind(ep, &cq->fid, FI_TRANSMIT | FI_RECV) == 0 &&
         fi_enable(ep) == 0;
}

bool insert(raw_endpoint& r, const std::string& provider, const std::string& text,
            fi_addr_t& addr) {
  if (provider == "tcp") {
    auto colon = text.rfind(':');
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(static_cast<std::uint16_t>(std::stoi(text.substr(colon + 1))));
    inet_pton(AF_INET, text.substr(0, colon).c_str(), &sin.sin_addr);
    return fi_av_insert(r.av.get(), &sin, 1, &addr, 0, nullptr) == 1;
  }
  return fi_av_insert(r.av.get(), text.c_str(), 1, &addr, 0, nullptr) == 1;
}

bool send_and_wait(raw_endpoint& r, fi_addr_t to, std::vector<std::byte>& bytes) {
  fi_context2 ctx{};
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  ssize_t rc = -FI_EAGAIN;
  fi_cq_tagged_entry entry{};
  while (rc == -FI_EAGAIN && std::chrono::steady_clock::now() < until) {
    rc = fi_tsend(r.ep.get(), bytes.data(), bytes.size(), nullptr, to, 0, &ctx);
    if (rc == -FI_EAGAIN) (void)fi_cq_read(r.cq.get(), &entry, 1);
  }
  if (rc != 0) return false;
  while (std::chrono::steady_clock::now() < until) {
    rc = fi_cq_read(r.cq.get(), &entry, 1);
    if (rc == 1) return true;
    if (rc != -FI_EAGAIN) return false;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const bool forge = argc == 6 && std::string(argv[3]) == "forge";
  if (argc != 3 && !forge) {
    std::fprintf(stderr,
                 "usage: transport_raw_sender <tcp|shm> <target address> "
                 "[forge <sender node id> <count>]\n");
    return 1;
  }
  const std::string provider = argv[1];
  raw_endpoint r;
  fi_addr_t target = FI_ADDR_UNSPEC;
  if (!open(r, provider) || !insert(r, provider, argv[2], target)) {
    std::fprintf(stderr, "transport_raw_sender: set-up failed\n");
    return 1;
  }
  std::vector<std::byte> payload(16, std::byte{0x5a});
  if (forge) {
    const auto sender = static_cast<node_id>(std::stoull(argv[4]));
    auto unsealed = frame::encode(frame::kind::message, sender, payload);
    if (!send_and_wait(r, target, unsealed)) return 1;
    frame_key own{};
    own.fill(std::byte{0x42});  // not the cluster's
    frame_mac mac(session_key(own, sender, fresh_nonce()));
    const auto sealed = [&](frame::kind type, std::span<const std::byte> body, std::uint64_t seq) {
      auto f = frame::encode(type, sender, body);
      f.resize(f.size() + frame::seal_bytes);
      mac.seal(f, seq);
      return f;
    };
    auto hello = sealed(frame::kind::hello,
                        frame::encode_hello({4096, false, fresh_nonce(), {std::byte{1}}}), 1);
    if (!send_and_wait(r, target, hello)) return 1;
    for (int i = 0; i < std::stoi(argv[5]); ++i) {
      auto forged = sealed(frame::kind::message, payload, static_cast<std::uint64_t>(i) + 2);
      if (!send_and_wait(r, target, forged)) return 1;
    }
    return 0;
  }
  auto truncated = frame::encode(frame::kind::message, node_id{1}, payload);
  truncated.resize(10);
  auto wrong_length = frame::encode(frame::kind::message, node_id{1}, payload);
  wrong_length.pop_back();
  auto bad_magic = frame::encode(frame::kind::message, node_id{1}, payload);
  bad_magic[0] = std::byte{0};
  auto stranger = frame::encode(frame::kind::message, node_id{0x5eed}, payload);
  for (auto* f : {&truncated, &wrong_length, &bad_magic, &stranger})
    if (!send_and_wait(r, target, *f)) return 1;
  return 0;
}
