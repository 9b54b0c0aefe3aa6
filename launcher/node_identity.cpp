#include "launcher/node_identity.hpp"

#include <algorithm>

#include <xxhash.h>

#include "engine/cpu_engine.hpp"
#include "engine/device.hpp"
#include "engine/mapped_file.hpp"
#include "engine/model.hpp"

namespace baton::launcher {

actors::device_options device_options_for(const runtime::topology& topology,
                                          const runtime::node_spec& node) {
  actors::device_options o;
  o.device = node.device;
  o.engine.block_tokens = topology.limits.kv_block_tokens;
  o.emulated.block_tokens = topology.limits.kv_block_tokens;
  o.emulated.scale = topology.emulated.scale;
  o.emulated.time_scale = topology.emulated.time_scale;
  o.shape = topology.emulated.shape;
  o.checkpoint = topology.model.checkpoint.string();
  return o;
}

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
  if (topology.emulated_workers()) {
    // Every node of the cluster carries the emulated workers' numerics and KV layout, so
    // an emulated node never joins a cluster of CPU engines (or of another scale).
    const auto worker = std::find_if(topology.nodes.begin(), topology.nodes.end(),
                                     [](const runtime::node_spec& n) { return n.emulated(); });
    const auto device = device_options_for(topology, *worker);
    auto setup = engine::resolve_emulated(device.device, device.shape, c, device.checkpoint,
                                          device.emulated);
    if (!setup) return tl::unexpected(setup.error());
    auto layout = engine::emulated_kv_layout(setup->shape, setup->options);
    if (!layout) return tl::unexpected(layout.error());
    j.layout = {topology.limits.kv_block_tokens, static_cast<std::uint32_t>(layout->n_layers),
                static_cast<std::uint32_t>(layout->kv_dim / layout->head_size),
                static_cast<std::uint32_t>(layout->head_size), sizeof(float)};
    j.numerics_fingerprint = engine::emulated_numerics(setup->shape, setup->options);
  }
  return j;
}

}  // namespace baton::launcher
