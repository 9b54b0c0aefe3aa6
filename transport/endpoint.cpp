#include "transport/endpoint.hpp"

#include "transport/fabric/fabric.hpp"
#include "transport/loopback/network.hpp"

namespace baton::transport {

expected<std::unique_ptr<endpoint>> make_endpoint(const endpoint_config& config,
                                                  std::shared_ptr<loopback::network> network) {
  if (config.provider == "loopback") {
    if (!network)
      return fail(errc::invalid_argument, "loopback: make_endpoint needs a loopback::network");
    return network->make_endpoint(config);
  }
  return fabric::make_fabric_endpoint(config);
}

}  // namespace baton::transport
