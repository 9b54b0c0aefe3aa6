// transport/fabric/fabric.hpp
#pragma once

#include <memory>

#include "base/error.hpp"
#include "transport/endpoint.hpp"

namespace baton::transport::fabric {

/// Opens a libfabric FI_EP_RDM endpoint for config.provider ("tcp" = tcp;ofi_rxm, "shm",
/// "verbs" = verbs;ofi_rxm, "efa"), bound to config.bind, with one progress thread that
/// sleeps in fi_cq_sread while idle. errc::not_found when the provider has no device here.
[[nodiscard]] expected<std::unique_ptr<endpoint>> make_fabric_endpoint(
    const endpoint_config& config);

}  // namespace baton::transport::fabric
