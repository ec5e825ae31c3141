// Fuzzes the simulator's Venice and Gemini request handling: the first line of the input is the
// x-sim-scenario header, the rest the request body, sent to Venice's chat completions and to
// Gemini's streamGenerateContent (with and without alt=sse) and generateContent. Every answer
// must be a well-formed plan: a valid status, errors as JSON in each provider's shape (Venice: a
// string or OpenAI-shaped `error`; Gemini: an object or a one-element array with an int code),
// and a complete Gemini SSE stream without [DONE].
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "nlohmann/json.hpp"
#include "tools/llm_sim/gemini_api.h"
#include "tools/llm_sim/venice_api.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

std::string BodyOf(const anima::sim::ResponsePlan& plan) {
  std::string body;
  for (const auto& write : plan.writes) body += write.bytes;
  return body;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto config = std::make_shared<anima::sim::SimConfig>();
  static const anima::sim::VeniceApi venice(config);
  static const anima::sim::GeminiApi gemini(config);
  std::string input(reinterpret_cast<const char*>(data), size);
  size_t eol = input.find('\n');
  anima::sim::SimRequest request;
  request.method = "POST";
  if (eol != std::string::npos) {
    request.headers["x-sim-scenario"] = input.substr(0, eol);
    request.body = input.substr(eol + 1);
  } else {
    request.body = input;
  }

  request.target = "/api/v1/chat/completions";
  request.headers["authorization"] = "Bearer fuzz";
  auto plan = venice.Handle(request);
  Check(plan.has_value());
  Check(plan->status >= 200 && plan->status <= 599);
  if (plan->status != 200) {
    auto json = nlohmann::json::parse(BodyOf(*plan), nullptr, false);
    Check(json.is_object() && json.contains("error"));
  }

  request.headers.erase("authorization");
  request.headers["x-goog-api-key"] = "fuzz";
  for (const char* target :
       {"/v1beta/models/m:streamGenerateContent?alt=sse", "/v1beta/models/m:streamGenerateContent",
        "/v1beta/models/m:generateContent"}) {
    request.target = target;
    auto g = gemini.Handle(request);
    Check(g.has_value());
    Check(g->status >= 200 && g->status <= 599);
    std::string body = BodyOf(*g);
    if (g->status != 200) {
      auto json = nlohmann::json::parse(body, nullptr, false);
      if (json.is_array()) {
        Check(json.size() == 1);
        json = json[0];
      }
      Check(json.is_object() && json["error"]["code"].is_number_integer());
    } else {
      Check(body.find("[DONE]") == std::string::npos);
    }
  }
  return 0;
}
