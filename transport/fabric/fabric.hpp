// transport/fabric/fabric.hpp
#pragma once

#include <memory>

#include "base/error.hpp"
#include "transport/endpoint.hpp"

namespace baton::transport::fabric {

/// Opens a libfabric FI_EP_RDM endpoint for config.provider ("tcp" = tcp;ofi_rxm, "shm",
/// "verbs" = verbs;ofi_rxm, "efa"), bound to config.bind, with one progress thread that
/// sleeps in fi_cq_sread while idle. errc::not_found when the provider has no device here.
/// Providers that require FI_MR_LOCAL (verbs, efa; or config.require_local_mr) get a
/// registered descriptor for every local buffer: frames are copied into send buffers
/// registered at start-up (config.limits.send_depth of them), received into receive
/// buffers registered likewise, and RMA uses the region's own registration.
[[nodiscard]] expected<std::unique_ptr<endpoint>> make_fabric_endpoint(
    const endpoint_config& config);

}  // namespace baton::transport::fabric
