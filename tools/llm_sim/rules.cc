#include "tools/llm_sim/rules.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "services/common/config.h"

namespace anima::sim {

namespace {

constexpr char kDefaultReply[] =
    "This is the Anima simulator answering \"{prompt}\" as {model}. No rule matched, so this "
    "reply quotes your message.";

absl::StatusOr<Outcome> OutcomeForStatus(int status) {
  switch (status) {
    case 400:
      return Outcome::kError400;
    case 401:
      return Outcome::kError401;
    case 403:
      return Outcome::kError403;
    case 404:
      return Outcome::kError404Model;
    case 429:
      return Outcome::kRateLimit429;
    case 500:
      return Outcome::kError500;
    case 503:
      return Outcome::kError503;
    default:
      return absl::InvalidArgumentError("must be one of 400, 401, 403, 404, 429, 500, 503");
  }
}

absl::StatusOr<Rule> ParseRule(const nlohmann::json& json, const std::string& path) {
  common::ConfigReader r(json, path);
  Rule rule;
  rule.match = r.String("match", "", /*required=*/true);
  rule.model = r.String("model");
  if (json.is_object() && json.contains("reply")) rule.reply = r.String("reply");
  rule.scenario_text = r.String("scenario");
  int status = static_cast<int>(r.Int("status", 0, 0, 599));
  rule.first_token_ms = static_cast<int>(r.Int("first_token_ms", -1, 0, 3'600'000));
  rule.token_interval_ms = static_cast<int>(r.Int("token_interval_ms", -1, 0, 3'600'000));
  rule.latency_ms = static_cast<int>(r.Int("latency_ms", -1, 0, 3'600'000));
  rule.tool_name = r.String("tool_name");
  if (const auto* args = r.Object("tool_arguments")) rule.tool_arguments = args->dump();
  r.RejectUnknown();
  if (!r.ok()) return r.status();

  if (!rule.scenario_text.empty()) {
    auto scenario = ParseScenario(rule.scenario_text);
    if (!scenario.ok())
      r.Fail("scenario", std::string(scenario.status().message()));
    else
      rule.scenario = *scenario;
  }
  if (status != 0 && status != 200) {
    auto outcome = OutcomeForStatus(status);
    if (!outcome.ok()) {
      r.Fail("status", std::string(outcome.status().message()));
    } else if (rule.scenario && rule.scenario->outcome != Outcome::kOk &&
               rule.scenario->outcome != *outcome) {
      r.Fail("status", "contradicts the outcome named by \"scenario\"");
    } else {
      if (!rule.scenario) rule.scenario = Scenario{};
      rule.scenario->outcome = *outcome;
    }
  }
  if (rule.match.size() >= 2 && rule.match.front() == '/') {
    size_t close = rule.match.rfind('/');
    std::string_view flags = std::string_view(rule.match).substr(close + 1);
    if (close == 0 || (flags != "" && flags != "i")) {
      r.Fail("match", "a regex is written /pattern/ or /pattern/i");
    } else {
      auto options = std::regex::ECMAScript | std::regex::optimize;
      if (flags == "i") options |= std::regex::icase;
      try {
        rule.regex.emplace(rule.match.substr(1, close - 1), options);
      } catch (const std::regex_error& e) {
        r.Fail("match", absl::StrCat("invalid regex: ", e.what()));
      }
    }
  }
  if (!r.ok()) return r.status();
  return rule;
}

}  // namespace

std::string FillPlaceholders(std::string_view text, std::string_view prompt,
                             std::string_view model) {
  return absl::StrReplaceAll(absl::string_view(text.data(), text.size()),
                             {{"{prompt}", absl::string_view(prompt.data(), prompt.size())},
                              {"{model}", absl::string_view(model.data(), model.size())}});
}

RuleSet::RuleSet()
    : default_reply_(kDefaultReply),
      models_({"gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-5-mini", "anima-sim"}) {}

absl::StatusOr<RuleSet> RuleSet::FromJson(const nlohmann::json& json, const std::string& source) {
  RuleSet set;
  common::ConfigReader r(json, source);
  set.default_reply_ = r.String("default_reply", set.default_reply_);
  const nlohmann::json* rules = r.Array("rules");
  const nlohmann::json* models = r.Array("models");
  r.RejectUnknown();
  if (!r.ok()) return r.status();
  if (rules != nullptr) {
    for (size_t i = 0; i < rules->size(); ++i) {
      auto rule = ParseRule((*rules)[i], absl::StrCat(source, ".rules[", i, "]"));
      if (!rule.ok()) return rule.status();
      set.rules_.push_back(*std::move(rule));
    }
  }
  if (models != nullptr) {
    set.models_.clear();
    for (size_t i = 0; i < models->size(); ++i) {
      const auto& m = (*models)[i];
      if (!m.is_string() || m.get_ref<const std::string&>().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ".models[", i, "]: expected a non-empty string"));
      }
      set.models_.push_back(m.get<std::string>());
    }
  }
  return set;
}

absl::StatusOr<RuleSet> RuleSet::LoadFile(const std::string& path) {
  auto json = common::LoadJsonFile(path);
  if (!json.ok()) return json.status();
  return FromJson(*json, path);
}

const Rule* RuleSet::Match(std::string_view user_text, std::string_view model) const {
  for (const Rule& rule : rules_) {
    if (!rule.model.empty() && rule.model != model) continue;
    if (rule.regex) {
      std::string_view window = user_text.substr(0, kRegexWindow);
      if (std::regex_search(window.begin(), window.end(), *rule.regex)) return &rule;
    } else if (user_text.find(rule.match) != std::string_view::npos) {
      return &rule;
    }
  }
  return nullptr;
}

std::string RuleSet::ReplyFor(const Rule* rule, std::string_view prompt,
                              std::string_view model) const {
  const std::string& text = (rule != nullptr && rule->reply) ? *rule->reply : default_reply_;
  return FillPlaceholders(text, prompt, model);
}

}  // namespace anima::sim
