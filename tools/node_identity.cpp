#include "tools/node_identity.hpp"

#include <xxhash.h>

#include "engine/cpu_engine.hpp"
#include "engine/mapped_file.hpp"
#include "engine/model.hpp"

namespace baton::tools {

expected<wire::join> node_identity(const runtime::topology& topology) {
  const auto path = topology.model.checkpoint.string();
  auto m = engine::model::load(path);
  if (!m) return tl::unexpected(m.error());
  auto file = engine::mapped_file::open(path);
  if (!file) return tl::unexpected(file.error());
  const auto& c = m->config();
  wire::join j;
  j.wire_version = wire::wire_version;
  j.model_hash = XXH3_64bits(file->bytes().data(), file->bytes().size());
  j.layout = {topology.limits.kv_block_tokens, static_cast<std::uint32_t>(c.n_layers),
              static_cast<std::uint32_t>(c.n_kv_heads), static_cast<std::uint32_t>(c.head_size()),
              sizeof(float)};
  j.numerics_fingerprint = engine::numerics_fingerprint(engine::best_kernel_path());
  return j;
}

}  // namespace baton::tools
