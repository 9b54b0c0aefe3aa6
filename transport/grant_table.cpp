#include "transport/grant_table.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace baton::transport {

namespace {

bool wraps(std::uint64_t offset, std::uint64_t length) {
  return offset + length < offset;
}

}  // namespace

expected<void> grant_table::add(node_id from, const received_grant& grant) {
  if (grant.length == 0 || wraps(grant.offset, grant.length))
    return fail(errc::invalid_argument, "grant: empty or wrapping range");
  auto& list = grants_[from];
  if (list.size() >= max_per_node_)
    return fail(errc::overloaded,
                fmt::format("grant: more than {} grants from one node", max_per_node_));
  list.push_back(grant);
  return {};
}

void grant_table::revoke(node_id from, std::uint64_t key, std::uint64_t offset,
                         std::uint64_t length) {
  auto it = grants_.find(from);
  if (it == grants_.end()) return;
  std::erase_if(it->second, [&](const received_grant& g) {
    return g.key == key && g.offset < offset + length && offset < g.offset + g.length;
  });
  if (it->second.empty()) grants_.erase(it);
}

void grant_table::forget(node_id from) {
  grants_.erase(from);
}

expected<received_grant> grant_table::check(const remote_slice& slice) const {
  if (slice.length == 0) return fail(errc::invalid_argument, "descriptor: zero length");
  if (wraps(slice.offset, slice.length))
    return fail(errc::invalid_argument, "descriptor: offset + length wraps");
  auto it = grants_.find(slice.node);
  if (it == grants_.end())
    return fail(errc::invalid_argument, fmt::format("descriptor: node {:#x} granted nothing",
                                                    static_cast<std::uint64_t>(slice.node)));
  bool key_seen = false;
  for (const auto& g : it->second) {
    if (g.key != slice.key) continue;
    key_seen = true;
    if (slice.offset >= g.offset && slice.offset + slice.length <= g.offset + g.length) return g;
  }
  if (!key_seen) return fail(errc::invalid_argument, "descriptor: unknown key");
  return fail(errc::invalid_argument,
              fmt::format("descriptor: [{}, {}) is outside what the node granted", slice.offset,
                          slice.offset + slice.length));
}

std::size_t grant_table::size() const noexcept {
  std::size_t n = 0;
  for (const auto& [node, list] : grants_) n += list.size();
  return n;
}

}  // namespace baton::transport
