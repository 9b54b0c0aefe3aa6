// The one "host:port" parser: what it accepts, and the error for everything else.
#include "base/address.hpp"

#include <gtest/gtest.h>

namespace baton {
namespace {

TEST(Address, HostsPortsAndBracketedIpv6) {
  auto a = parse_host_port("127.0.0.1:7000");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 7000);
  EXPECT_EQ(a->text(), "127.0.0.1:7000");
  auto v6 = parse_host_port("[::1]:8000");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->text(), "[::1]:8000");
  auto name = parse_host_port("decode-0.example:65535");
  ASSERT_TRUE(name);
  EXPECT_EQ(name->port, 65535);
}

TEST(Address, PortZeroOnlyWhereListening) {
  EXPECT_FALSE(parse_host_port("127.0.0.1:0"));
  auto any = parse_host_port("127.0.0.1:0", port_zero::allowed);
  ASSERT_TRUE(any);
  EXPECT_EQ(any->port, 0);
}

TEST(Address, MalformedAddressesNameThemselvesAndWhatWasExpected) {
  for (const char* bad : {"", "127.0.0.1", ":7000", "host:", "host:x", "host:70000", "host:-1",
                          "host:7000x", "::1:7000", "[::1:7000", "::1]:7000", "[]:7000",
                          "[[::1]]:7000", "a b:1", "host:+1", "host: 1"}) {
    auto r = parse_host_port(bad, port_zero::allowed);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::invalid_argument);
    EXPECT_NE(r.error().message.find(std::string("\"") + bad + "\""), std::string::npos)
        << r.error().message;
    EXPECT_NE(r.error().message.find("expected host:port"), std::string::npos);
  }
}

}  // namespace
}  // namespace baton
