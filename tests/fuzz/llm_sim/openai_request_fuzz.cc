// Fuzzes the simulator's OpenAI request handling: the first line of the input is the
// x-sim-scenario header, the rest is the request body. Checks that every answer is a well-formed
// plan: a valid status, a JSON body for errors, and for a complete stream an SSE body that ends
// with [DONE].
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "nlohmann/json.hpp"
#include "tools/llm_sim/openai_api.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto* api = [] {
    auto config = std::make_shared<anima::sim::SimConfig>();
    config->require_key = true;
    return new anima::sim::OpenAiApi(config);
  }();
  std::string input(reinterpret_cast<const char*>(data), size);
  size_t eol = input.find('\n');
  anima::sim::SimRequest request;
  request.method = "POST";
  request.target = "/v1/chat/completions";
  request.headers["authorization"] = "Bearer sk-fuzz";
  if (eol != std::string::npos) {
    request.headers["x-sim-scenario"] = input.substr(0, eol);
    request.body = input.substr(eol + 1);
  } else {
    request.body = input;
  }
  auto plan = api->Handle(request);
  Check(plan.has_value());
  Check(plan->status >= 200 && plan->status <= 599);
  std::string body;
  for (const auto& write : plan->writes) body += write.bytes;
  if (plan->status != 200) {
    Check(!plan->chunked);
    auto json = nlohmann::json::parse(body, nullptr, false);
    Check(json.is_object() && json.contains("error") && json["error"].contains("message"));
  } else if (plan->chunked && plan->ending == anima::sim::Ending::kComplete) {
    Check(body.find("[DONE]") != std::string::npos);
  }
  return 0;
}
