#include "tools/llm_sim/gemini_api.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tools/llm_sim/openai_format.h"
#include "tools/llm_sim/sse_framer.h"

namespace anima::sim {

namespace gemini {
namespace {

using ojson = nlohmann::ordered_json;

std::string Dump(const ojson& j, int indent) {
  return j.dump(indent, ' ', /*ensure_ascii=*/false, ojson::error_handler_t::replace);
}

bool KnownTopLevelField(const std::string& key) {
  static constexpr std::string_view kKnown[] = {"contents",
                                                "systemInstruction",
                                                "system_instruction",
                                                "generationConfig",
                                                "generation_config",
                                                "safetySettings",
                                                "safety_settings",
                                                "tools",
                                                "toolConfig",
                                                "tool_config",
                                                "cachedContent",
                                                "cached_content",
                                                "labels",
                                                "model"};
  return std::find(std::begin(kKnown), std::end(kKnown), key) != std::end(kKnown);
}

std::string PartsText(const nlohmann::json& content) {
  std::string text;
  auto parts = content.find("parts");
  if (parts == content.end() || !parts->is_array()) return text;
  for (const auto& part : *parts) {
    if (part.is_object()) {
      if (auto t = part.find("text"); t != part.end() && t->is_string()) {
        if (!text.empty()) text += " ";
        text += t->get<std::string>();
      }
    }
  }
  return text;
}

}  // namespace

std::string ErrorBody(int code, std::string_view status, std::string_view message,
                      const ojson& details, bool wrapped) {
  ojson error;
  error["code"] = code;
  error["message"] = message;
  error["status"] = status;
  if (!details.empty()) error["details"] = details;
  ojson body = {{"error", std::move(error)}};
  if (wrapped) body = ojson::array({std::move(body)});
  return Dump(body, 2) + "\n";
}

ParsedRequest ParseRequest(std::string_view body) {
  ParsedRequest out;
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    out.error = "Invalid JSON payload received. Unexpected token.";
    return out;
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!KnownTopLevelField(it.key())) {
      out.error = absl::StrCat("Invalid JSON payload received. Unknown name \"", it.key(),
                               "\": Cannot find field.");
      return out;
    }
  }
  auto contents = j.find("contents");
  if (contents == j.end() || !contents->is_array() || contents->empty()) {
    out.error = "* GenerateContentRequest.contents: contents is not specified\n";
    return out;
  }
  int64_t words = 0;
  for (const char* key : {"systemInstruction", "system_instruction"}) {
    if (auto s = j.find(key); s != j.end() && s->is_object()) {
      words += openai::CountWords(PartsText(*s));
    }
  }
  for (const auto& content : *contents) {
    if (!content.is_object()) {
      out.error =
          "Invalid value at 'contents' (type.googleapis.com/google.ai.generativelanguage."
          "v1beta.Content), expected an object";
      return out;
    }
    std::string role = "user";
    if (auto r = content.find("role"); r != content.end() && !r->is_null()) {
      role = r->is_string() ? r->get<std::string>() : std::string("?");
    }
    if (role != "user" && role != "model") {
      out.error = "Please use a valid role: user, model.";
      return out;
    }
    std::string text = PartsText(content);
    words += openai::CountWords(text);
    if (role == "user") out.request.last_user_text = text;
  }
  out.request.prompt_tokens = words;
  for (const char* key : {"generationConfig", "generation_config"}) {
    if (auto g = j.find(key); g != j.end() && g->is_object()) {
      for (const char* max : {"maxOutputTokens", "max_output_tokens"}) {
        if (auto m = g->find(max); m != g->end() && m->is_number_integer()) {
          out.request.max_output_tokens = m->get<int64_t>();
        }
      }
    }
  }
  if (auto tools = j.find("tools"); tools != j.end() && tools->is_array() && !tools->empty()) {
    const auto& first = (*tools)[0];
    if (first.is_object()) {
      if (auto decls = first.find("functionDeclarations");
          decls != first.end() && decls->is_array() && !decls->empty() && (*decls)[0].is_object() &&
          (*decls)[0].contains("name") && (*decls)[0]["name"].is_string()) {
        out.request.first_function_name = (*decls)[0]["name"].get<std::string>();
      }
    }
  }
  return out;
}

}  // namespace gemini

namespace {

using ojson = nlohmann::ordered_json;
using std::chrono::milliseconds;

constexpr char kJson[] = "application/json; charset=UTF-8";

std::string Dump(const ojson& j, int indent = -1) {
  return j.dump(indent, ' ', /*ensure_ascii=*/false, ojson::error_handler_t::replace);
}

std::string ResponseId() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<size_t> pick(0, sizeof(kAlphabet) - 2);
  std::string out(23, ' ');
  for (char& c : out) c = kAlphabet[pick(rng)];
  return out;
}

void AddGoogleHeaders(ResponsePlan& plan, int processing_ms) {
  plan.headers.emplace_back("vary", "Origin, X-Origin, Referer");
  plan.headers.emplace_back("server", "scaffolding on HTTPServer2");
  plan.headers.emplace_back("server-timing", absl::StrCat("gfet4t7; dur=", processing_ms));
  plan.headers.emplace_back("x-content-type-options", "nosniff");
}

ResponsePlan GoogleError(int code, std::string_view status, std::string_view message,
                         const ojson& details, bool wrapped, std::string route,
                         std::string scenario) {
  ResponsePlan plan;
  plan.status = code;
  plan.route = std::move(route);
  plan.scenario = std::move(scenario);
  plan.headers.emplace_back("Content-Type", kJson);
  AddGoogleHeaders(plan, 1);
  plan.writes.push_back(
      {milliseconds(0), gemini::ErrorBody(code, status, message, details, wrapped)});
  return plan;
}

ojson ErrorInfo(std::string_view reason) {
  return {{"@type", "type.googleapis.com/google.rpc.ErrorInfo"},
          {"reason", reason},
          {"domain", "googleapis.com"},
          {"metadata", {{"service", "generativelanguage.googleapis.com"}}}};
}

// The 429 of §3.6: a QuotaFailure naming a per-minute (or per-day) quota and, unless
// `retry_info` is false, RetryInfo with the delay.
ResponsePlan RateLimited(const std::string& model, bool per_day, bool retry_info, bool wrapped,
                         std::string route, std::string scenario) {
  std::string delay = per_day ? "47s" : "1.5s";
  std::string message = absl::StrCat(
      "You exceeded your current quota, please check your plan and billing details. For more "
      "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
      "To monitor your current usage, head to: https://ai.dev/rate-limit. \n* Quota exceeded for "
      "metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 0, "
      "model: ",
      model, "\nPlease retry in ", delay, ".");
  ojson details = ojson::array();
  details.push_back(
      {{"@type", "type.googleapis.com/google.rpc.Help"},
       {"links", ojson::array({{{"description", "Learn more about Gemini API quotas"},
                                {"url", "https://ai.google.dev/gemini-api/docs/rate-limits"}}})}});
  details.push_back(
      {{"@type", "type.googleapis.com/google.rpc.QuotaFailure"},
       {"violations",
        ojson::array(
            {{{"quotaMetric",
               "generativelanguage.googleapis.com/generate_content_free_tier_requests"},
              {"quotaId", per_day ? "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
                                  : "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"},
              {"quotaDimensions", {{"model", model}, {"location", "global"}}}}})}});
  if (retry_info) {
    details.push_back(
        {{"@type", "type.googleapis.com/google.rpc.RetryInfo"}, {"retryDelay", delay}});
  }
  return GoogleError(429, "RESOURCE_EXHAUSTED", message, details, wrapped, std::move(route),
                     std::move(scenario));
}

ResponsePlan OutcomeError(Outcome outcome, const std::string& model, bool wrapped,
                          const std::string& route, const std::string& scenario) {
  switch (outcome) {
    case Outcome::kError400:
      return GoogleError(400, "INVALID_ARGUMENT", "Please use a valid role: user, model.",
                         ojson::array(), wrapped, route, scenario);
    case Outcome::kError401:
      return GoogleError(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                         ojson::array({ErrorInfo("API_KEY_INVALID")}), wrapped, route, scenario);
    case Outcome::kError403:
      return GoogleError(403, "PERMISSION_DENIED",
                         "Generative Language API has not been used in project 000000000000 "
                         "before or it is disabled. Enable it by visiting "
                         "https://console.developers.google.com/apis/api/"
                         "generativelanguage.googleapis.com/overview?project=000000000000 then "
                         "retry.",
                         ojson::array({ErrorInfo("SERVICE_DISABLED")}), wrapped, route, scenario);
    case Outcome::kError404Model:
      return GoogleError(404, "NOT_FOUND",
                         absl::StrCat("models/", model,
                                      " is not found for API version v1beta, or is not supported "
                                      "for generateContent. Call ListModels to see the list of "
                                      "available models and their supported methods."),
                         ojson::array(), wrapped, route, scenario);
    case Outcome::kRateLimit429:
      return RateLimited(model, false, true, wrapped, route, scenario);
    case Outcome::kRateLimit429NoHeader:
      return RateLimited(model, false, false, wrapped, route, scenario);
    case Outcome::kQuota429:
      return RateLimited(model, true, true, wrapped, route, scenario);
    case Outcome::kError503:
      return GoogleError(503, "UNAVAILABLE", "The model is overloaded. Please try again later.",
                         ojson::array(), wrapped, route, scenario);
    case Outcome::kError500:
    default:
      return GoogleError(500, "INTERNAL",
                         "An internal error has occurred. Please retry or report in "
                         "https://developers.generativeai.google/guide/troubleshooting",
                         ojson::array(), wrapped, route, scenario);
  }
}

ojson SafetyRatings(bool high) {
  ojson ratings = ojson::array();
  for (const char* category : {"HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_DANGEROUS_CONTENT",
                               "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_SEXUALLY_EXPLICIT"}) {
    bool blocked = high && std::string_view(category) == "HARM_CATEGORY_HATE_SPEECH";
    ojson rating = {{"category", category}, {"probability", blocked ? "HIGH" : "NEGLIGIBLE"}};
    if (blocked) rating["blocked"] = true;
    ratings.push_back(std::move(rating));
  }
  return ratings;
}

// The cumulative usageMetadata: candidates (and thoughts) only once known.
ojson UsageMetadata(int64_t prompt, std::optional<int64_t> candidates, int64_t thoughts) {
  ojson usage;
  usage["promptTokenCount"] = prompt;
  if (candidates) usage["candidatesTokenCount"] = *candidates;
  int64_t total = prompt + candidates.value_or(0) + thoughts;
  usage["totalTokenCount"] = total;
  usage["promptTokensDetails"] = ojson::array({{{"modality", "TEXT"}, {"tokenCount", prompt}}});
  if (candidates) {
    usage["candidatesTokensDetails"] =
        ojson::array({{{"modality", "TEXT"}, {"tokenCount", *candidates}}});
  }
  if (thoughts > 0) usage["thoughtsTokenCount"] = thoughts;
  return usage;
}

// One candidate. `parts` empty and `with_content` false: no content at all; `with_content` true:
// {"role":"model"} without parts.
ojson Candidate(const ojson& parts, bool with_content, const std::string& finish_reason) {
  ojson candidate;
  if (with_content) {
    ojson content;
    if (!parts.empty()) content["parts"] = parts;
    content["role"] = "model";
    candidate["content"] = std::move(content);
  }
  if (!finish_reason.empty()) candidate["finishReason"] = finish_reason;
  return candidate;
}

struct Identity {
  std::string model;
  std::string response_id;
};

ojson Response(const Identity& id, std::optional<ojson> candidate, const ojson& usage) {
  ojson r;
  if (candidate) r["candidates"] = ojson::array({std::move(*candidate)});
  r["usageMetadata"] = usage;
  r["modelVersion"] = id.model;
  r["responseId"] = id.response_id;
  return r;
}

bool HasQueryParam(std::string_view target, std::string_view name, std::string_view value) {
  size_t q = target.find('?');
  if (q == std::string_view::npos) return false;
  for (absl::string_view pair :
       absl::StrSplit(absl::string_view(target.data() + q + 1, target.size() - q - 1), '&')) {
    if (pair == absl::StrCat(std::string(name), "=", std::string(value))) return true;
  }
  return false;
}

std::string QueryParam(std::string_view target, std::string_view name) {
  size_t q = target.find('?');
  if (q == std::string_view::npos) return {};
  std::string prefix = absl::StrCat(std::string(name), "=");
  for (absl::string_view pair :
       absl::StrSplit(absl::string_view(target.data() + q + 1, target.size() - q - 1), '&')) {
    if (absl::StartsWith(pair, prefix)) return std::string(pair.substr(prefix.size()));
  }
  return {};
}

}  // namespace

GeminiApi::GeminiApi(std::shared_ptr<const SimConfig> config) : config_(std::move(config)) {}

std::optional<ResponsePlan> GeminiApi::Handle(const SimRequest& request) const {
  std::string_view target = request.target;
  std::string_view path = target.substr(0, target.find('?'));
  constexpr std::string_view kPrefix = "/v1beta/";
  if (path.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  constexpr std::string_view kModels = "/v1beta/models/";
  size_t colon = path.rfind(':');
  std::string method =
      colon == std::string_view::npos ? std::string() : std::string(path.substr(colon + 1));
  bool known_method = method == "generateContent" || method == "streamGenerateContent";
  if (path.substr(0, kModels.size()) != kModels || colon == std::string_view::npos ||
      colon <= kModels.size() || !known_method || request.method != "POST") {
    return GoogleError(
        404, "NOT_FOUND",
        absl::StrCat("The requested URL ", std::string(path), " was not found on this server."),
        ojson::array(), false, "gemini_not_found", "ok");
  }
  const std::string model(path.substr(kModels.size(), colon - kModels.size()));
  const bool streaming = method == "streamGenerateContent";
  const bool sse = streaming && HasQueryParam(target, "alt", "sse");
  const std::string route =
      streaming ? "gemini_stream_generate_content" : "gemini_generate_content";

  // Authentication: the header, or ?key= (§3.1).
  std::string key = request.Header("x-goog-api-key");
  if (key.empty()) key = QueryParam(target, "key");
  if (key.empty() && config_->require_key) {
    return GoogleError(403, "PERMISSION_DENIED",
                       "Method doesn't allow unregistered callers (callers without established "
                       "identity). Please use API Key or other form of API consumer identity to "
                       "call this API.",
                       ojson::array(), false, route, "ok");
  }
  if (!key.empty() && !config_->api_key.empty() && key != config_->api_key) {
    return GoogleError(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                       ojson::array({ErrorInfo("API_KEY_INVALID")}), false, route, "ok");
  }

  gemini::ParsedRequest parsed = gemini::ParseRequest(request.body);
  if (parsed.error) {
    ojson details = ojson::array();
    if (absl::StrContains(*parsed.error, "Unknown name")) {
      details.push_back({{"@type", "type.googleapis.com/google.rpc.BadRequest"},
                         {"fieldViolations", ojson::array({{{"description", *parsed.error}}})}});
    }
    return GoogleError(400, "INVALID_ARGUMENT", *parsed.error, details, false, route, "ok");
  }
  const gemini::Request& gr = parsed.request;

  auto directives = ResolveDirectives(*config_, request, "gemini", gr.last_user_text, model);
  if (!directives.ok()) {
    return GoogleError(400, "INVALID_ARGUMENT", std::string(directives.status().message()),
                       ojson::array(), false, route, "ok");
  }
  const Directives& d = *directives;
  const Outcome outcome = d.scenario.outcome;
  const Modifiers& m = d.scenario.modifiers;
  const std::string scenario_label(OutcomeName(outcome));
  if (IsHttpError(outcome)) {
    ResponsePlan plan = OutcomeError(outcome, model, m.wrapped, route, scenario_label);
    plan.close_silently = m.close_after;
    return plan;
  }

  // The answer, as groups of token pieces: one stream event per group.
  std::vector<std::string> pieces = openai::SplitIntoTokens(d.reply);
  std::string finish = "STOP";
  int64_t thoughts = 0;
  std::optional<ojson> function_call;
  if (outcome == Outcome::kLength) {
    pieces.resize((pieces.size() + 1) / 2);
    finish = "MAX_TOKENS";
    thoughts = 4;
  } else if (outcome == Outcome::kSafetyStop) {
    finish = "SAFETY";
  } else if (outcome == Outcome::kRecitation) {
    finish = "RECITATION";
  } else if (outcome == Outcome::kToolCall) {
    std::string name = (d.rule && !d.rule->tool_name.empty()) ? d.rule->tool_name
                       : !gr.first_function_name.empty()      ? gr.first_function_name
                                                              : "get_weather";
    ojson args = ojson::parse((d.rule && !d.rule->tool_arguments.empty())
                                  ? d.rule->tool_arguments
                                  : std::string(R"({"location":"Boston"})"),
                              nullptr, false);
    if (args.is_discarded()) args = ojson::object();
    function_call = ojson{{"functionCall", {{"name", name}, {"args", args}}}};
    pieces.clear();
  }
  if (gr.max_output_tokens && static_cast<int64_t>(pieces.size()) > *gr.max_output_tokens) {
    pieces.resize(static_cast<size_t>(std::max<int64_t>(0, *gr.max_output_tokens)));
    finish = "MAX_TOKENS";
  }
  // SAFETY and RECITATION stop half way: the text so far, then a candidate without content.
  if (outcome == Outcome::kSafetyStop || outcome == Outcome::kRecitation) {
    pieces.resize(pieces.size() / 2);
  }
  constexpr size_t kPiecesPerEvent = 3;
  std::vector<std::string> groups;
  for (size_t i = 0; i < pieces.size(); i += kPiecesPerEvent) {
    std::string text;
    for (size_t k = i; k < std::min(pieces.size(), i + kPiecesPerEvent); ++k) text += pieces[k];
    groups.push_back(std::move(text));
  }
  const int64_t prompt = gr.prompt_tokens;
  const int64_t completion = function_call ? 3 : static_cast<int64_t>(pieces.size());
  const Identity identity{model, ResponseId()};
  const ojson final_usage = UsageMetadata(prompt, completion, thoughts);
  const ojson running_usage = UsageMetadata(prompt, std::nullopt, 0);
  const bool content_less_end = outcome == Outcome::kSafetyStop ||
                                outcome == Outcome::kRecitation || outcome == Outcome::kEmptyParts;
  const bool broken = BreaksStream(outcome);

  // The stream's events as JSON objects.
  std::vector<ojson> events;
  if (outcome == Outcome::kPromptBlocked) {
    ojson blocked;
    blocked["promptFeedback"] = {{"blockReason", "SAFETY"}, {"safetyRatings", SafetyRatings(true)}};
    blocked["usageMetadata"] = UsageMetadata(prompt, std::nullopt, 0);
    blocked["modelVersion"] = model;
    blocked["responseId"] = identity.response_id;
    events.push_back(std::move(blocked));
  } else if (function_call) {
    ojson c = Candidate(ojson::array({*function_call}), true, "STOP");
    c["index"] = 0;
    events.push_back(Response(identity, c, final_usage));
  } else {
    size_t sent = broken ? std::min<size_t>(2, groups.size()) : groups.size();
    for (size_t i = 0; i < sent; ++i) {
      bool last = i + 1 == groups.size() && !content_less_end && !broken;
      ojson parts = ojson::array({{{"text", groups[i]}}});
      ojson candidate = Candidate(parts, true, last ? finish : "");
      ojson usage = last ? final_usage : running_usage;
      if (outcome == Outcome::kNullFields && !last) {
        candidate["finishReason"] = nullptr;
        usage["candidatesTokenCount"] = nullptr;
      }
      events.push_back(Response(identity, candidate, usage));
      if (outcome == Outcome::kEmptyParts && i == 0) {
        events.push_back(Response(identity, Candidate(ojson::array(), true, ""), running_usage));
      }
    }
    if (!broken && (groups.empty() || content_less_end)) {
      ojson end;
      if (outcome == Outcome::kSafetyStop) {
        end = Candidate(ojson::array(), false, "SAFETY");
        end["index"] = 0;
        end["safetyRatings"] = SafetyRatings(true);
      } else if (outcome == Outcome::kRecitation) {
        end = Candidate(ojson::array(), false, "RECITATION");
        end["citationMetadata"] = {
            {"citationSources",
             ojson::array(
                 {{{"startIndex", 0}, {"endIndex", 42}, {"uri", "https://example.com"}}})}};
      } else {
        end = Candidate(ojson::array(), true, finish);
        end["index"] = 0;
      }
      events.push_back(Response(identity, end, final_usage));
    }
  }
  const ojson midstream_error = {{"error",
                                  {{"code", 503},
                                   {"message", "The model is overloaded. Please try again later."},
                                   {"status", "UNAVAILABLE"}}}};

  ResponsePlan plan;
  plan.route = route;
  plan.scenario = scenario_label;
  plan.close_silently = m.close_after;
  AddGoogleHeaders(plan, 1);

  if (!streaming) {
    // One GenerateContentResponse: the whole text, the final usage and finish reason.
    int latency = d.latency_ms >= 0
                      ? d.latency_ms
                      : d.first_token_ms + d.token_interval_ms * static_cast<int>(pieces.size());
    plan.head_delay = milliseconds(latency);
    ojson body;
    if (outcome == Outcome::kPromptBlocked) {
      body = events.front();
    } else if (function_call) {
      body = events.front();
    } else {
      std::string text;
      for (const auto& g : groups) text += g;
      ojson candidate;
      if (outcome == Outcome::kSafetyStop || outcome == Outcome::kRecitation) {
        candidate = Candidate(text.empty() ? ojson::array() : ojson::array({{{"text", text}}}),
                              !text.empty(), finish);
      } else {
        candidate = Candidate(text.empty() ? ojson::array() : ojson::array({{{"text", text}}}),
                              true, finish);
      }
      candidate["index"] = 0;
      candidate["safetyRatings"] = SafetyRatings(outcome == Outcome::kSafetyStop);
      body = Response(identity, candidate, final_usage);
    }
    plan.headers.emplace_back("Content-Type", kJson);
    std::string bytes = Dump(body, 2) + "\n";
    if (broken) {
      plan.writes.push_back({milliseconds(0), std::move(bytes)});
      plan.ending = Ending::kTruncate;
    } else if (m.split_bytes || m.byte_by_byte) {
      plan.exact_writes = true;
      for (std::string& piece : SplitBytes(bytes, m.byte_by_byte, d.seed)) {
        plan.writes.push_back({milliseconds(0), std::move(piece)});
      }
    } else {
      plan.writes.push_back({milliseconds(0), std::move(bytes)});
    }
    return plan;
  }

  plan.chunked = true;
  if (!sse) {
    // Without alt=sse: one pretty-printed JSON array, its elements written as they are ready.
    plan.headers.emplace_back("Content-Type", kJson);
    for (size_t i = 0; i < events.size(); ++i) {
      plan.writes.push_back({milliseconds(i == 0 ? d.first_token_ms : d.token_interval_ms),
                             absl::StrCat(i == 0 ? "[" : "\n,\r\n", Dump(events[i], 2))});
    }
    if (outcome == Outcome::kMidstreamError) {
      plan.writes.push_back(
          {milliseconds(d.token_interval_ms),
           absl::StrCat(events.empty() ? "[" : "\n,\r\n", Dump(midstream_error, 2), "\n]")});
      plan.ending = Ending::kCloseAfterLast;
    } else if (outcome == Outcome::kTruncated || outcome == Outcome::kMalformedEvent) {
      plan.writes.push_back(
          {milliseconds(d.token_interval_ms),
           absl::StrCat(
               events.empty() ? "[" : "\n,\r\n",
               Dump(Response(identity, Candidate(ojson::array({{{"text", "cut"}}}), true, ""),
                             running_usage),
                    2))});
      plan.ending = Ending::kTruncate;
    } else if (plan.writes.empty()) {
      plan.writes.push_back({milliseconds(0), "[]"});
    } else {
      plan.writes.back().bytes += "\n]";
    }
    return plan;
  }

  // alt=sse: CRLF framing always (§3.4), whatever else the modifiers ask for.
  plan.headers.emplace_back("Content-Type", "text/event-stream");
  Modifiers framing = m;
  framing.crlf = true;
  plan.exact_writes =
      m.split_bytes || m.byte_by_byte || m.multi || m.comments || m.nospace || m.fields;
  std::vector<SseEvent> sse_events;
  for (size_t i = 0; i < events.size(); ++i) {
    sse_events.push_back(
        {Dump(events[i]), milliseconds(i == 0 ? d.first_token_ms : d.token_interval_ms)});
  }
  if (outcome == Outcome::kMidstreamError) {
    sse_events.push_back({Dump(midstream_error), milliseconds(d.token_interval_ms)});
  } else if (outcome == Outcome::kMalformedEvent) {
    // A whole event whose data is cut JSON (a broken proxy or encoder), then the end.
    std::string next = Dump(Response(
        identity, Candidate(ojson::array({{{"text", " and then"}}}), true, ""), running_usage));
    sse_events.push_back({next.substr(0, next.size() / 2), milliseconds(d.token_interval_ms)});
  }
  if (outcome == Outcome::kPromptBlocked && !m.split_bytes && !m.byte_by_byte && !m.comments &&
      !m.fields && !m.nospace) {
    // The recorded capture: one event and no trailing blank line.
    plan.writes.push_back(
        {milliseconds(d.first_token_ms), absl::StrCat("data: ", sse_events.front().data, "\r\n")});
  } else {
    plan.writes = FrameEvents(sse_events, framing, d.seed);
  }
  if (outcome == Outcome::kMidstreamError || outcome == Outcome::kMalformedEvent) {
    plan.ending = Ending::kCloseAfterLast;
  } else if (outcome == Outcome::kTruncated) {
    ojson next = Response(identity, Candidate(ojson::array({{{"text", " and then"}}}), true, ""),
                          running_usage);
    plan.writes.push_back({milliseconds(d.token_interval_ms),
                           FrameEvents({{Dump(next), milliseconds(0)}},
                                       Modifiers{.crlf = true, .nospace = m.nospace}, 0)
                               .front()
                               .bytes});
    plan.ending = Ending::kTruncate;
  }
  return plan;
}

}  // namespace anima::sim
