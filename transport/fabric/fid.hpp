// transport/fabric/fid.hpp
#pragma once

#include <memory>

#include <rdma/fabric.h>

/// RAII owners for libfabric handles. Every fid Baton opens lives in one of these, so a
/// failed set-up or a destructor closes exactly what was opened, in member order.
namespace baton::transport::fabric {

template <class T>
struct fid_closer {
  void operator()(T* handle) const noexcept {
    if (handle != nullptr) fi_close(&handle->fid);
  }
};

/// Owns a fid_fabric, fid_domain, fid_cq, fid_av, fid_ep or fid_mr.
template <class T>
using fid_ptr = std::unique_ptr<T, fid_closer<T>>;

struct info_freer {
  void operator()(fi_info* info) const noexcept { fi_freeinfo(info); }
};

/// Owns an fi_info list (from fi_getinfo, fi_allocinfo or fi_dupinfo).
using info_ptr = std::unique_ptr<fi_info, info_freer>;

}  // namespace baton::transport::fabric
