#include "tools/cli/url.h"

#include <gtest/gtest.h>

namespace anima::cli {
namespace {

TEST(UrlTest, WebSocketDefaults) {
  auto url = ParseUrl("ws://127.0.0.1:3002/");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(url->scheme, "ws");
  EXPECT_EQ(url->host, "127.0.0.1");
  EXPECT_EQ(url->port, "3002");
  EXPECT_EQ(url->target, "/");
  EXPECT_FALSE(url->tls);
  EXPECT_EQ(url->HostHeader(), "127.0.0.1:3002");
}

TEST(UrlTest, DefaultPortsPathAndQuery) {
  auto wss = ParseUrl("WSS://gateway.example.com/ws?token=abc");
  ASSERT_TRUE(wss.ok());
  EXPECT_EQ(wss->scheme, "wss");
  EXPECT_TRUE(wss->tls);
  EXPECT_EQ(wss->port, "443");
  EXPECT_EQ(wss->target, "/ws?token=abc");
  auto http = ParseUrl("http://localhost");
  ASSERT_TRUE(http.ok());
  EXPECT_EQ(http->port, "80");
  EXPECT_EQ(http->target, "/");
  auto query_only = ParseUrl("ws://h:1?x=1");
  ASSERT_TRUE(query_only.ok());
  EXPECT_EQ(query_only->target, "/?x=1");
}

TEST(UrlTest, Ipv6Literal) {
  auto url = ParseUrl("ws://[::1]:3002/ws");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(url->host, "::1");
  EXPECT_EQ(url->port, "3002");
  EXPECT_EQ(url->HostHeader(), "[::1]:3002");
}

TEST(UrlTest, RejectsWhatItCannotUse) {
  EXPECT_FALSE(ParseUrl("127.0.0.1:3002").ok());
  EXPECT_FALSE(ParseUrl("ftp://h/").ok());
  EXPECT_FALSE(ParseUrl("ws:///path").ok());
  EXPECT_FALSE(ParseUrl("ws://h:0/").ok());
  EXPECT_FALSE(ParseUrl("ws://h:65536/").ok());
  EXPECT_FALSE(ParseUrl("ws://h:+80/").ok());
  EXPECT_FALSE(ParseUrl("ws://h:/").ok());
  EXPECT_FALSE(ParseUrl("ws://user:pw@h/").ok());
  EXPECT_FALSE(ParseUrl("ws://h/#frag").ok());
  EXPECT_FALSE(ParseUrl("ws://[::1/").ok());
  auto bad = ParseUrl("gopher://h/");
  EXPECT_NE(bad.status().message().find("gopher"), std::string::npos);
}

TEST(UrlTest, LoopbackHosts) {
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.1.2.3"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_TRUE(IsLoopbackHost("LocalHost"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_FALSE(IsLoopbackHost("10.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("127.0.0.1.example.com"));
  EXPECT_FALSE(IsLoopbackHost("127.0.0.256"));
  EXPECT_FALSE(IsLoopbackHost("example.com"));
  EXPECT_FALSE(IsLoopbackHost(""));
}

}  // namespace
}  // namespace anima::cli
