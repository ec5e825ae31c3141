// The gateway's own modules in consciousness_state: what each says, when each turns degraded, and
// that harmony is computed again over the router's modules and the gateway's. A fake clock.
#include "gateway/gateway_modules.h"

#include <string>

#include "gateway/admission.h"
#include "gateway/gateway_context.h"
#include "gtest/gtest.h"

namespace anima::gateway {
namespace {

using namespace std::chrono_literals;
using Clock = GatewayModules::Clock;

const anima::v1::ModuleStatus* Find(const anima::v1::ConsciousnessState& state,
                                    const std::string& name) {
  for (const auto& m : state.modules()) {
    if (m.name() == name) return &m;
  }
  return nullptr;
}

// A router's state of two healthy modules.
anima::v1::ConsciousnessState RouterState() {
  anima::v1::ConsciousnessState state;
  for (const char* name : {"router", "llm-broker"}) {
    auto* m = state.add_modules();
    m->set_name(name);
    m->set_health(anima::v1::MODULE_HEALTH_HEALTHY);
  }
  state.set_harmony(1);
  state.set_status("healthy");
  return state;
}

class GatewayModulesTest : public ::testing::Test {
 protected:
  GatewayModulesTest() : context_(Settings()) {
    Admission::Options options;
    options.limit.initial = 1;
    // No baseline probe pauses the queue during the test (its pause is not counted as waiting).
    options.limit.first_probe_after = 1h;
    options.limit.probe_interval = 1h;
    options.queue_target = 5ms;
    options.max_queue_wait = 1h;
    options.clock = [this] { return now_; };
    admission_ = std::make_unique<Admission>(options, nullptr);
    admission_->SetRoutes({{"chat", "high"}}, "normal");
    modules_ = std::make_unique<GatewayModules>(
        GatewayModules::Sources{.context = &context_,
                                .admission = admission_.get(),
                                .state_stream_live = [this] { return stream_live_; },
                                .clock = [this] { return now_; }});
  }

  static GatewaySettings Settings() {
    GatewaySettings s;
    s.max_connections = 10;
    return s;
  }

  anima::v1::ConsciousnessState State() {
    auto state = RouterState();
    modules_->AddTo(state);
    return state;
  }

  // One chat request refused as overloaded: the slots taken, one more waiting past the target,
  // and the next is refused; then every slot is given back (the waiter's too).
  void Refuse() {
    int held = 0;
    auto waiter = [this](bool granted) {
      if (granted) admission_->ReleaseUnused("chat");
    };
    while (admission_->Acquire("chat", waiter)) ++held;
    now_ += 6ms;
    EXPECT_TRUE(admission_->Overloaded("chat").has_value());
    for (int i = 0; i < held; ++i) admission_->Release("chat", now_ - 1ms, true);
  }

  Clock::time_point now_{};
  bool stream_live_ = true;
  GatewayContext context_;
  std::unique_ptr<Admission> admission_;
  std::unique_ptr<GatewayModules> modules_;
};

TEST_F(GatewayModulesTest, AddsThreeHealthyModulesWithTheirCounters) {
  context_.open_connections = 3;
  context_.connections = 4;
  context_.in_flight = 2;
  modules_->NoteBroadcast(3);
  auto state = State();
  ASSERT_EQ(state.modules_size(), 5) << "the router's two and the gateway's three";
  const auto* gateway = Find(state, "gateway");
  ASSERT_NE(gateway, nullptr);
  EXPECT_EQ(gateway->service(), "gateway");
  EXPECT_EQ(gateway->kind(), "service");
  EXPECT_EQ(gateway->health(), anima::v1::MODULE_HEALTH_HEALTHY);
  EXPECT_EQ(gateway->in_flight(), 2);
  EXPECT_EQ(gateway->counters().at("connections"), 3);
  EXPECT_EQ(gateway->counters().at("tcp_connections"), 4);
  EXPECT_EQ(gateway->counters().at("max_connections"), 10);
  const auto* admission = Find(state, "gateway/admission");
  ASSERT_NE(admission, nullptr);
  EXPECT_EQ(admission->kind(), "queue");
  EXPECT_EQ(admission->health(), anima::v1::MODULE_HEALTH_HEALTHY);
  EXPECT_EQ(admission->counters().at("refused"), 0);
  const auto* broadcaster = Find(state, "gateway/broadcaster");
  ASSERT_NE(broadcaster, nullptr);
  EXPECT_EQ(broadcaster->kind(), "stream");
  EXPECT_EQ(broadcaster->health(), anima::v1::MODULE_HEALTH_HEALTHY);
  EXPECT_EQ(broadcaster->counters().at("broadcasts"), 1);
  EXPECT_EQ(broadcaster->counters().at("last_sessions"), 3);
  EXPECT_FALSE(broadcaster->last_active().empty());
  EXPECT_DOUBLE_EQ(state.harmony(), 1.0);
  EXPECT_EQ(state.status(), "healthy");
}

TEST_F(GatewayModulesTest, AdmissionIsDegradedWhileItShedsAndRecoversAfterTheWindow) {
  Refuse();
  auto state = State();
  const auto* admission = Find(state, "gateway/admission");
  ASSERT_NE(admission, nullptr);
  EXPECT_EQ(admission->health(), anima::v1::MODULE_HEALTH_DEGRADED);
  EXPECT_NE(admission->detail().find("shedding"), std::string::npos) << admission->detail();
  EXPECT_EQ(admission->counters().at("refused.chat"), 1);
  EXPECT_EQ(admission->counters().at("refused"), 1);
  EXPECT_GE(admission->counters().at("limit.chat"), 1);
  EXPECT_EQ(admission->counters().at("waiting.chat"), 0) << "the waiter got its slot";
  EXPECT_DOUBLE_EQ(state.harmony(), 4.5 / 5) << "harmony counts the gateway's modules";
  EXPECT_EQ(state.status(), "healthy");
  now_ += GatewayModules::kShedWindow - 1ms;
  EXPECT_EQ(Find(State(), "gateway/admission")->health(), anima::v1::MODULE_HEALTH_DEGRADED);
  now_ += 1ms;
  EXPECT_EQ(Find(State(), "gateway/admission")->health(), anima::v1::MODULE_HEALTH_HEALTHY)
      << "no refusal for the whole window";
  Refuse();
  EXPECT_EQ(Find(State(), "gateway/admission")->health(), anima::v1::MODULE_HEALTH_DEGRADED)
      << "a new refusal, seen again";
}

TEST_F(GatewayModulesTest, DrainingAndFullConnectionsDegradeTheGateway) {
  context_.connections = 8;
  EXPECT_EQ(Find(State(), "gateway")->health(), anima::v1::MODULE_HEALTH_HEALTHY);
  context_.connections = 9;
  auto full = State();
  EXPECT_EQ(Find(full, "gateway")->health(), anima::v1::MODULE_HEALTH_DEGRADED);
  EXPECT_EQ(Find(full, "gateway")->detail(), "9 of 10 connections open");
  context_.connections = 1;
  context_.draining = true;
  auto draining = State();
  EXPECT_EQ(Find(draining, "gateway")->health(), anima::v1::MODULE_HEALTH_DEGRADED);
  EXPECT_NE(Find(draining, "gateway")->detail().find("draining"), std::string::npos);
}

TEST_F(GatewayModulesTest, NoStateStreamDegradesTheBroadcaster) {
  stream_live_ = false;
  auto state = State();
  EXPECT_EQ(Find(state, "gateway/broadcaster")->health(), anima::v1::MODULE_HEALTH_DEGRADED);
  EXPECT_NE(Find(state, "gateway/broadcaster")->detail().find("no live state stream"),
            std::string::npos);
}

TEST(GatewayModulesOff, AdmissionOffIsSaidAndHealthy) {
  GatewayContext context{GatewaySettings{}};
  GatewayModules modules(GatewayModules::Sources{.context = &context, .state_stream_live = {}});
  anima::v1::ConsciousnessState state;
  modules.AddTo(state);
  ASSERT_EQ(state.modules_size(), 3);
  const auto* admission = Find(state, "gateway/admission");
  ASSERT_NE(admission, nullptr);
  EXPECT_EQ(admission->health(), anima::v1::MODULE_HEALTH_HEALTHY);
  EXPECT_NE(admission->detail().find("admission off"), std::string::npos);
  EXPECT_DOUBLE_EQ(state.harmony(), 1.0) << "harmony over the gateway's modules alone";
}

}  // namespace
}  // namespace anima::gateway
