#pragma once

#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tools/llm_sim/scenario.h"

namespace anima::sim {

// One scripted answer. `match` is a substring of the last user message, or "/regex/" (ECMAScript,
// searched) with an optional trailing "i" for case-insensitive. Replies may use the placeholders
// {prompt} (the last user message) and {model}.
struct Rule {
  std::string match;
  std::optional<std::regex> regex;  // set when `match` is /.../
  std::string model;                // when set, the rule applies only to this model
  std::optional<std::string> reply;
  std::optional<Scenario> scenario;  // from "scenario", or "status" as shorthand for an error
  std::string scenario_text;
  int first_token_ms = -1;  // -1: not set by the rule
  int token_interval_ms = -1;
  int latency_ms = -1;
  std::string tool_name;       // for tool_call; empty: the request's first tool or get_weather
  std::string tool_arguments;  // JSON text; empty: {"location":"Boston"}
};

// The rules file: {"rules":[...], "default_reply":"...", "models":[...]}. Immutable after load,
// so one instance is shared by every connection thread without locking.
class RuleSet {
 public:
  // The built-in set: no rules, a default reply that quotes the prompt, a few model ids.
  RuleSet();

  static absl::StatusOr<RuleSet> FromJson(const nlohmann::json& json, const std::string& source);
  static absl::StatusOr<RuleSet> LoadFile(const std::string& path);

  // The first rule whose match (and model, if any) fits; nullptr when none does. Regexes see at
  // most the first kRegexWindow bytes of the message (std::regex recurses per character).
  const Rule* Match(std::string_view user_text, std::string_view model) const;

  // The reply text of `rule` (or the default reply when it has none), placeholders filled in.
  std::string ReplyFor(const Rule* rule, std::string_view prompt, std::string_view model) const;

  // Model ids listed by GET /v1/models.
  const std::vector<std::string>& models() const { return models_; }
  size_t size() const { return rules_.size(); }

  static constexpr size_t kRegexWindow = 16 * 1024;

 private:
  std::vector<Rule> rules_;
  std::string default_reply_;
  std::vector<std::string> models_;
};

// Replaces {prompt} and {model} in `text`.
std::string FillPlaceholders(std::string_view text, std::string_view prompt,
                             std::string_view model);

}  // namespace anima::sim
