#pragma once

// A fixture for tests of the real anima-gateway binary in front of an in-process FakeRouter: the
// router starts with each test, the gateway when the test asks for it, with the flags it needs.

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/gateway/fake_router.h"
#include "tests/integration/harness/harness.h"

namespace anima::gateway::testing {

class GatewayOverFakeRouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    router_ = FakeRouter::Start();
    ASSERT_NE(router_, nullptr);
  }

  // Starts gateway_ against router_, with debug logs and `extra_args`, and waits until it is ready.
  void StartGateway(std::vector<std::string> extra_args = {}) {
    std::vector<std::string> args = {"--port=0", "--metrics-port=0",
                                     "--router=127.0.0.1:" + std::to_string(router_->port()),
                                     "--log-level=debug"};
    // Broadcasts only where a test asks for them, so they do not interleave with answers.
    bool interval_given = false;
    for (const auto& a : extra_args) interval_given |= a.rfind("--state-interval-ms", 0) == 0;
    if (!interval_given) args.push_back("--state-interval-ms=600000");
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    gateway_ = anima::testing::Process::Start("anima-gateway", args);
    ASSERT_NE(gateway_, nullptr);
    // Ready means the gateway has reached the router once, so the first request does not race
    // the first connection (whose connect timeout is short).
    ASSERT_TRUE(anima::testing::Eventually([&] {
      return anima::testing::HttpRequest(gateway_->port("http"), "GET", "/readyz").status == 200;
    })) << gateway_->Log();
  }

  std::unique_ptr<FakeRouter> router_;
  std::unique_ptr<anima::testing::Process> gateway_;
};

}  // namespace anima::gateway::testing
