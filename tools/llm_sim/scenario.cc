#include "tools/llm_sim/scenario.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace anima::sim {

namespace {

constexpr std::pair<Outcome, std::string_view> kOutcomes[] = {
    {Outcome::kOk, "ok"},
    {Outcome::kSlow, "slow"},
    {Outcome::kLength, "length"},
    {Outcome::kToolCall, "tool_call"},
    {Outcome::kError400, "error_400"},
    {Outcome::kError401, "error_401"},
    {Outcome::kError403, "error_403"},
    {Outcome::kError404Model, "error_404_model"},
    {Outcome::kRateLimit429, "rate_limit_429"},
    {Outcome::kRateLimit429NoHeader, "rate_limit_429_no_header"},
    {Outcome::kQuota429, "quota_429"},
    {Outcome::kError500, "error_500"},
    {Outcome::kError503, "error_503"},
    {Outcome::kMidstreamError, "midstream_error"},
    {Outcome::kTruncated, "truncated"},
    {Outcome::kMalformedEvent, "malformed_event"},
    {Outcome::kPromptBlocked, "prompt_blocked"},
    {Outcome::kSafetyStop, "safety_stop"},
    {Outcome::kRecitation, "recitation"},
    {Outcome::kEmptyParts, "empty_parts"},
    {Outcome::kNullFields, "null_fields"},
};

constexpr std::pair<bool Modifiers::*, std::string_view> kModifiers[] = {
    {&Modifiers::split_bytes, "split_bytes"},
    {&Modifiers::byte_by_byte, "byte_by_byte"},
    {&Modifiers::crlf, "crlf"},
    {&Modifiers::comments, "comments"},
    {&Modifiers::nospace, "nospace"},
    {&Modifiers::multi, "multi"},
    {&Modifiers::fields, "fields"},
    {&Modifiers::close_after, "close_after"},
    {&Modifiers::wrapped, "wrapped"},
};

}  // namespace

absl::StatusOr<Scenario> ParseScenario(std::string_view text) {
  Scenario scenario;
  bool have_outcome = false;
  const absl::string_view all(text.data(), text.size());
  for (absl::string_view part : absl::StrSplit(all, ',')) {
    std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(part));
    if (name.empty()) continue;
    bool known = false;
    for (const auto& [outcome, outcome_name] : kOutcomes) {
      if (name != outcome_name) continue;
      if (have_outcome && scenario.outcome != outcome) {
        return absl::InvalidArgumentError(absl::StrCat("scenario '", all, "' names two outcomes: '",
                                                       std::string(OutcomeName(scenario.outcome)),
                                                       "' and '", name, "'"));
      }
      scenario.outcome = outcome;
      have_outcome = true;
      known = true;
    }
    for (const auto& [member, modifier_name] : kModifiers) {
      if (name != modifier_name) continue;
      scenario.modifiers.*member = true;
      known = true;
    }
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat("unknown scenario '", name, "'"));
    }
  }
  return scenario;
}

std::string_view OutcomeName(Outcome outcome) {
  for (const auto& [o, name] : kOutcomes) {
    if (o == outcome) return name;
  }
  return "ok";
}

std::vector<std::string> ScenarioNames() {
  std::vector<std::string> names;
  for (const auto& entry : kOutcomes) names.emplace_back(entry.second);
  for (const auto& entry : kModifiers) names.emplace_back(entry.second);
  return names;
}

bool IsHttpError(Outcome outcome) {
  switch (outcome) {
    case Outcome::kError400:
    case Outcome::kError401:
    case Outcome::kError403:
    case Outcome::kError404Model:
    case Outcome::kRateLimit429:
    case Outcome::kRateLimit429NoHeader:
    case Outcome::kQuota429:
    case Outcome::kError500:
    case Outcome::kError503:
      return true;
    default:
      return false;
  }
}

bool BreaksStream(Outcome outcome) {
  return outcome == Outcome::kMidstreamError || outcome == Outcome::kTruncated ||
         outcome == Outcome::kMalformedEvent;
}

absl::StatusOr<FaultMix> FaultMix::Parse(std::string_view text) {
  FaultMix mix;
  const absl::string_view all(text.data(), text.size());
  for (absl::string_view api_part : absl::StrSplit(all, ';', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> api_and_list =
        absl::StrSplit(api_part, absl::MaxSplits('=', 1));
    std::string api = absl::AsciiStrToLower(absl::StripAsciiWhitespace(api_and_list.first));
    if (api != "openai" && api != "venice" && api != "gemini") {
      return absl::InvalidArgumentError(
          absl::StrCat("faults: '", api_part, "': expected openai=..., venice=... or gemini=..."));
    }
    for (const auto& [named, ignored] : mix.apis_) {
      if (named == api) {
        return absl::InvalidArgumentError(absl::StrCat("faults: ", api, " is named twice"));
      }
    }
    std::vector<Share> shares;
    double total = 0;
    for (absl::string_view entry :
         absl::StrSplit(api_and_list.second, ',', absl::SkipWhitespace())) {
      std::pair<absl::string_view, absl::string_view> name_and_share =
          absl::StrSplit(entry, absl::MaxSplits(':', 1));
      double share = 0;
      if (!absl::SimpleAtod(absl::StripAsciiWhitespace(name_and_share.second), &share) ||
          !(share > 0) || share > 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "faults: '", entry, "': expected SCENARIO:SHARE with a share above 0 and up to 1"));
      }
      auto scenario = ParseScenario(absl::StrReplaceAll(name_and_share.first, {{"+", ","}}));
      if (!scenario.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("faults: ", api, ": ", scenario.status().message()));
      }
      total += share;
      shares.push_back({total, *scenario});
    }
    if (shares.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("faults: ", api, " names no scenario"));
    }
    if (total > 1 + 1e-9) {
      return absl::InvalidArgumentError(
          absl::StrCat("faults: the shares of ", api, " add up to ", total, ", over 1"));
    }
    mix.apis_.emplace_back(std::move(api), std::move(shares));
  }
  return mix;
}

const Scenario* FaultMix::Pick(std::string_view api, double draw) const {
  for (const auto& [name, shares] : apis_) {
    if (name != api) continue;
    for (const auto& share : shares) {
      if (draw < share.upto) return &share.scenario;
    }
    return nullptr;
  }
  return nullptr;
}

}  // namespace anima::sim
