#include "tools/llm_sim/directives.h"

#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace anima::sim {

const std::string& SimRequest::Header(const std::string& lower_name) const {
  static const std::string kEmpty;
  auto it = headers.find(lower_name);
  return it == headers.end() ? kEmpty : it->second;
}

namespace {

// Reads a non-negative millisecond header into `out`; absent leaves `out` untouched.
absl::Status ReadMillis(const SimRequest& request, const std::string& name, int* out) {
  const std::string& text = request.Header(name);
  if (text.empty()) return absl::OkStatus();
  int value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < 0 || value > 3'600'000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header ", name, ": expected milliseconds from 0 to 3600000, got '", text, "'"));
  }
  *out = value;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Directives> ResolveDirectives(const SimConfig& config, const SimRequest& request,
                                             std::string_view api, std::string_view user_text,
                                             std::string_view model) {
  Directives d;
  d.rule = config.rules.Match(user_text, model);
  d.reply = config.rules.ReplyFor(d.rule, user_text, model);

  const std::string& header_scenario = request.Header("x-sim-scenario");
  if (!header_scenario.empty()) {
    auto scenario = ParseScenario(header_scenario);
    if (!scenario.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("header x-sim-scenario: ", scenario.status().message()));
    }
    d.scenario = *scenario;
  } else if (d.rule != nullptr && d.rule->scenario) {
    d.scenario = *d.rule->scenario;
  } else if (!config.faults.empty()) {
    thread_local std::mt19937_64 random{std::random_device{}()};
    const double draw = std::uniform_real_distribution<double>(0, 1)(random);
    if (const Scenario* fault = config.faults.Pick(api, draw)) d.scenario = *fault;
  }

  const Timing& t = config.timing;
  bool slow = d.scenario.outcome == Outcome::kSlow;
  d.first_token_ms = slow ? t.slow_first_token_ms : t.first_token_ms;
  d.token_interval_ms = slow ? t.slow_token_interval_ms : t.token_interval_ms;
  d.latency_ms = slow ? -1 : t.latency_ms;
  if (d.rule != nullptr) {
    if (d.rule->first_token_ms >= 0) d.first_token_ms = d.rule->first_token_ms;
    if (d.rule->token_interval_ms >= 0) d.token_interval_ms = d.rule->token_interval_ms;
    if (d.rule->latency_ms >= 0) d.latency_ms = d.rule->latency_ms;
  }
  if (auto s = ReadMillis(request, "x-sim-first-token-ms", &d.first_token_ms); !s.ok()) return s;
  if (auto s = ReadMillis(request, "x-sim-token-interval-ms", &d.token_interval_ms); !s.ok()) {
    return s;
  }
  if (auto s = ReadMillis(request, "x-sim-latency-ms", &d.latency_ms); !s.ok()) return s;
  if (const std::string& seed = request.Header("x-sim-seed"); !seed.empty()) {
    if (!absl::SimpleAtoi(seed, &d.seed)) {
      return absl::InvalidArgumentError(
          absl::StrCat("header x-sim-seed: expected an unsigned integer, got '", seed, "'"));
    }
  }
  return d;
}

}  // namespace anima::sim
