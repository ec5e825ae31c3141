#include "gateway/router_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "gtest/gtest.h"
#include "services/common/grpc_server.h"
#include "tests/integration/gateway/fake_router.h"

namespace anima::gateway {
namespace {

using namespace std::chrono_literals;

// Collects one call's callbacks and lets the test wait for on_done.
class Recorder {
 public:
  DispatchCallbacks Callbacks() {
    return {[this](anima::v1::Event e) {
              std::lock_guard<std::mutex> lock(mu_);
              EXPECT_FALSE(done_) << "an event after on_done";
              events_.push_back(std::move(e));
            },
            [this](const grpc::Status& s) {
              std::lock_guard<std::mutex> lock(mu_);
              EXPECT_FALSE(done_) << "on_done twice";
              status_ = s;
              done_ = true;
              cv_.notify_all();
            }};
  }
  bool WaitDone(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [this] { return done_; });
  }
  grpc::Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }
  std::vector<anima::v1::Event> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  grpc::Status status_;
  std::vector<anima::v1::Event> events_;
};

anima::v1::Envelope Chat(const std::string& message, bool stream = false) {
  anima::v1::Envelope e;
  e.set_request_id("r-test");
  e.set_type("chat");
  e.set_client_id("c1");
  e.mutable_chat()->set_message(message);
  e.mutable_chat()->set_stream(stream);
  return e;
}

TEST(RouterClientTest, StreamsEventsInOrderThenOk) {
  auto router = testing::FakeRouter::Start();
  ASSERT_NE(router, nullptr);
  RouterClient client(common::MakeChannel("127.0.0.1:" + std::to_string(router->port()), nullptr));
  Recorder rec;
  client.Dispatch(Chat("hi", /*stream=*/true), common::Identity{}, rec.Callbacks());
  ASSERT_TRUE(rec.WaitDone());
  EXPECT_TRUE(rec.status().ok()) << rec.status().error_message();
  auto events = rec.events();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].chat_delta().delta(), "Hel");
  EXPECT_EQ(events[1].chat_delta().delta(), "lo!");
  EXPECT_EQ(events[2].chat_response().message(), "echo: hi");
  EXPECT_EQ(router->last_request_id(), "r-test");
  EXPECT_EQ(router->last_envelope().client_id(), "c1");
}

TEST(RouterClientTest, RouterDownIsUnavailable) {
  // A port that is bound but not listening refuses connections, and no other test can take it.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  int port = ntohs(addr.sin_port);
  RouterClient client(common::MakeChannel("127.0.0.1:" + std::to_string(port), nullptr));
  Recorder rec;
  client.Dispatch(Chat("hi"), common::Identity{}, rec.Callbacks());
  ASSERT_TRUE(rec.WaitDone());
  EXPECT_EQ(rec.status().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(rec.events().empty());
  ::close(fd);
}

TEST(RouterClientTest, TimeoutIsDeadlineExceeded) {
  auto router = testing::FakeRouter::Start();
  ASSERT_NE(router, nullptr);
  auto channel = common::MakeChannel("127.0.0.1:" + std::to_string(router->port()), nullptr);
  // The deadline is to expire on a call in progress, as in production where the channel is
  // long connected. (A 50 ms deadline that fires while the channel is still connecting, on a
  // loaded machine, has tripped a refcount assertion inside gRPC 1.51 in about 1 run in 20.)
  ASSERT_TRUE(channel->WaitForConnected(std::chrono::system_clock::now() + 10s));
  RouterClient client(channel);
  Recorder rec;
  auto envelope = Chat("hang");
  envelope.set_timeout_ms(50);
  client.Dispatch(envelope, common::Identity{}, rec.Callbacks());
  ASSERT_TRUE(rec.WaitDone());
  EXPECT_EQ(rec.status().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST(RouterClientTest, CancelEndsTheCallAndReachesTheRouter) {
  auto router = testing::FakeRouter::Start();
  ASSERT_NE(router, nullptr);
  RouterClient client(common::MakeChannel("127.0.0.1:" + std::to_string(router->port()), nullptr));
  Recorder rec;
  auto call = client.Dispatch(Chat("hang"), common::Identity{}, rec.Callbacks());
  // Wait until the router has the call, so the cancel has something to reach.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (router->dispatched() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  call->Cancel();
  ASSERT_TRUE(rec.WaitDone());
  EXPECT_EQ(rec.status().error_code(), grpc::StatusCode::CANCELLED);
  deadline = std::chrono::steady_clock::now() + 10s;
  while (router->cancelled() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(router->cancelled(), 1);
  call->Cancel();  // after the end: harmless
}

TEST(RouterClientTest, CancelAllAndWaitEndsEveryCall) {
  auto router = testing::FakeRouter::Start();
  ASSERT_NE(router, nullptr);
  RouterClient client(common::MakeChannel("127.0.0.1:" + std::to_string(router->port()), nullptr));
  Recorder a, b;
  client.Dispatch(Chat("hang"), common::Identity{}, a.Callbacks());
  client.Dispatch(Chat("hang"), common::Identity{}, b.Callbacks());
  client.CancelAllAndWait();
  EXPECT_TRUE(a.WaitDone(0ms));
  EXPECT_TRUE(b.WaitDone(0ms));
}

TEST(RouterClientTest, ErrorStatusWithoutEvents) {
  auto router = testing::FakeRouter::Start();
  ASSERT_NE(router, nullptr);
  RouterClient client(common::MakeChannel("127.0.0.1:" + std::to_string(router->port()), nullptr));
  Recorder rec;
  client.Dispatch(Chat("fail:INTERNAL"), common::Identity{}, rec.Callbacks());
  ASSERT_TRUE(rec.WaitDone());
  EXPECT_EQ(rec.status().error_code(), grpc::StatusCode::INTERNAL);
}

}  // namespace
}  // namespace anima::gateway
