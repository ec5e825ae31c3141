#include "tools/llm_sim/openai_api.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "tools/llm_sim/sse_framer.h"

namespace anima::sim {

namespace {

using openai::ApiError;
using std::chrono::milliseconds;

constexpr char kJson[] = "application/json";
constexpr char kEventStream[] = "text/event-stream; charset=utf-8";

std::string_view PathOf(const std::string& target) {
  std::string_view path = target;
  return path.substr(0, path.find('?'));
}

using ojson = nlohmann::ordered_json;

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A Cloudflare ray id as Venice's CDN sends it: 16 hex digits and a colo.
std::string CfRay(const std::string& request_id) {
  std::string hex;
  for (char c : request_id) {
    if (std::isxdigit(static_cast<unsigned char>(c))) hex.push_back(c);
  }
  hex.resize(16, '0');
  return hex + "-SJC";
}

// The headers every Venice response carries (§2.6).
void AddVeniceIdentityHeaders(ResponsePlan& plan, const std::string& request_id) {
  plan.headers.emplace_back("CF-RAY", CfRay(request_id));
  plan.headers.emplace_back("x-venice-version", "20260822.120000");
  plan.headers.emplace_back("x-venice-balance-usd", "42.1234");
  plan.headers.emplace_back("x-venice-balance-diem", "0");
  plan.headers.emplace_back("server", "cloudflare");
}

// Venice's rate-limit headers: reset-requests is a unix timestamp, reset-tokens seconds.
void AddVeniceRateLimitHeaders(ResponsePlan& plan, bool exhausted) {
  plan.headers.emplace_back("x-ratelimit-limit-requests", "500");
  plan.headers.emplace_back("x-ratelimit-remaining-requests", exhausted ? "0" : "499");
  plan.headers.emplace_back("x-ratelimit-reset-requests",
                            absl::StrCat(UnixNow() + (exhausted ? 2 : 60)));
  plan.headers.emplace_back("x-ratelimit-limit-tokens", "1000000");
  plan.headers.emplace_back("x-ratelimit-remaining-tokens", exhausted ? "0" : "999000");
  plan.headers.emplace_back("x-ratelimit-reset-tokens", exhausted ? "2" : "60");
  plan.headers.emplace_back("x-ratelimit-type", "api_key");
}

// The headers every OpenAI response carries (§1.6).
void AddIdentityHeaders(ResponsePlan& plan, const std::string& request_id, int processing_ms,
                        Dialect dialect = Dialect::kOpenAi) {
  if (dialect == Dialect::kVenice) return AddVeniceIdentityHeaders(plan, request_id);
  plan.headers.emplace_back("x-request-id", request_id);
  plan.headers.emplace_back("openai-organization", "anima-sim");
  plan.headers.emplace_back("openai-processing-ms", absl::StrCat(processing_ms));
  plan.headers.emplace_back("openai-version", "2020-10-01");
  plan.headers.emplace_back("access-control-expose-headers", "X-Request-ID");
}

void AddRateLimitHeaders(ResponsePlan& plan, int64_t tokens_used, bool exhausted,
                         Dialect dialect = Dialect::kOpenAi) {
  if (dialect == Dialect::kVenice) return AddVeniceRateLimitHeaders(plan, exhausted);
  constexpr int64_t kRequests = 10000;
  constexpr int64_t kTokens = 10000000;
  plan.headers.emplace_back("x-ratelimit-limit-requests", absl::StrCat(kRequests));
  plan.headers.emplace_back("x-ratelimit-limit-tokens", absl::StrCat(kTokens));
  plan.headers.emplace_back("x-ratelimit-remaining-requests",
                            absl::StrCat(exhausted ? 0 : kRequests - 1));
  plan.headers.emplace_back(
      "x-ratelimit-remaining-tokens",
      absl::StrCat(exhausted ? 0 : std::max<int64_t>(0, kTokens - tokens_used)));
  plan.headers.emplace_back("x-ratelimit-reset-requests", exhausted ? "1s" : "6ms");
  plan.headers.emplace_back("x-ratelimit-reset-tokens", exhausted ? "84ms" : "0s");
}

// A JSON body as one write, or split as the modifiers ask.
void SetJsonBody(ResponsePlan& plan, std::string body, const Modifiers& m, uint64_t seed) {
  plan.headers.emplace_back("Content-Type", kJson);
  if (m.split_bytes || m.byte_by_byte) {
    plan.exact_writes = true;
    for (std::string& piece : SplitBytes(body, m.byte_by_byte, seed)) {
      plan.writes.push_back({milliseconds(0), std::move(piece)});
    }
  } else {
    plan.writes.push_back({milliseconds(0), std::move(body)});
  }
}

// Venice's usual error body: `error` is a plain string (§2.5).
std::string VeniceErrorBody(const ApiError& error) {
  ojson body;
  body["error"] = error.message;
  if (error.status == 400 && error.message == "Invalid request parameters") {
    ojson details;
    details["_errors"] = ojson::array();
    if (error.param) details[*error.param] = {{"_errors", ojson::array({"Invalid value"})}};
    body["details"] = std::move(details);
    body["issues"] = ojson::array();
  }
  return body.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

ResponsePlan ErrorPlan(const ApiError& error, std::string route, std::string scenario,
                       const std::string& request_id, Dialect dialect = Dialect::kOpenAi) {
  ResponsePlan plan;
  plan.status = error.status;
  plan.route = std::move(route);
  plan.scenario = std::move(scenario);
  AddIdentityHeaders(plan, request_id, 1, dialect);
  SetJsonBody(plan, dialect == Dialect::kVenice ? VeniceErrorBody(error) : openai::ErrorBody(error),
              Modifiers{}, 0);
  return plan;
}

// Venice's answers to the error outcomes (§2.5), as ApiErrors whose message becomes the string.
ApiError VeniceOutcomeError(Outcome outcome) {
  switch (outcome) {
    case Outcome::kError400:
      return {400, "Invalid request parameters", "", "max_tokens", std::nullopt};
    case Outcome::kError401:
      return {401, "Authentication failed", "", std::nullopt, std::nullopt};
    case Outcome::kError403:
      return {403, "Unauthorized access", "", std::nullopt, std::nullopt};
    case Outcome::kError404Model:
      return {404, "Specified model not found", "", std::nullopt, std::nullopt};
    case Outcome::kRateLimit429:
    case Outcome::kRateLimit429NoHeader:
      return {429, "Rate limit exceeded", "", std::nullopt, std::nullopt};
    case Outcome::kQuota429:
      return {402, "Insufficient USD or Diem balance to complete request", "", std::nullopt,
              std::nullopt};
    case Outcome::kError503:
      return {503, "The model is at capacity. Please try again later.", "", std::nullopt,
              std::nullopt};
    case Outcome::kError500:
    default:
      return {500, "Inference processing failed, please try again", "", std::nullopt, std::nullopt};
  }
}

// The first null anywhere in `j` (Venice rejects them, reference §2.2), as a dotted path.
std::optional<std::string> FindNull(const nlohmann::json& j, const std::string& path) {
  if (j.is_null()) return path.empty() ? "body" : path;
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (auto found = FindNull(*it, path.empty() ? it.key() : path + "." + it.key())) {
        return found;
      }
    }
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) {
      if (auto found = FindNull(j[i], absl::StrCat(path, "[", i, "]"))) return found;
    }
  }
  return std::nullopt;
}

// Venice's documented top-level request fields (the swagger's additionalProperties: false).
bool VeniceKnownField(const std::string& key) {
  static constexpr std::string_view kKnown[] = {"model",
                                                "messages",
                                                "temperature",
                                                "top_p",
                                                "max_tokens",
                                                "max_completion_tokens",
                                                "n",
                                                "stop",
                                                "stream",
                                                "stream_options",
                                                "tools",
                                                "tool_choice",
                                                "response_format",
                                                "seed",
                                                "presence_penalty",
                                                "frequency_penalty",
                                                "logprobs",
                                                "top_logprobs",
                                                "reasoning_effort",
                                                "reasoning",
                                                "prompt_cache_key",
                                                "prompt_cache_retention",
                                                "top_k",
                                                "min_p",
                                                "repetition_penalty",
                                                "min_temp",
                                                "max_temp",
                                                "stop_token_ids",
                                                "user",
                                                "store",
                                                "parallel_tool_calls",
                                                "venice_parameters"};
  return std::find(std::begin(kKnown), std::end(kKnown), key) != std::end(kKnown);
}

// The effective venice_parameters echoed in a response: the defaults, overridden by the request.
ojson VeniceParametersEcho(const nlohmann::json& request) {
  ojson echo = {{"enable_e2ee", true},
                {"include_venice_system_prompt", true},
                {"include_search_results_in_stream", false},
                {"return_search_results_as_documents", false},
                {"web_search_citations", ojson::array()},
                {"enable_web_search", "off"},
                {"enable_web_scraping", false},
                {"enable_web_citations", false},
                {"strip_thinking_response", false},
                {"disable_thinking", false}};
  if (auto it = request.find("venice_parameters"); it != request.end() && it->is_object()) {
    for (auto p = it->begin(); p != it->end(); ++p) {
      if (p.key() != "web_search_citations") echo[p.key()] = ojson::parse(p->dump());
    }
  }
  return echo;
}

// "sk-abc***wxyz", as OpenAI quotes a rejected key.
std::string MaskKey(std::string_view key) {
  if (key.size() <= 8) return std::string(key.substr(0, std::min<size_t>(3, key.size()))) + "***";
  return absl::StrCat(std::string(key.substr(0, 3)),
                      std::string(std::min<size_t>(key.size() - 7, 40), '*'),
                      std::string(key.substr(key.size() - 4)));
}

ApiError IncorrectKey(std::string_view key) {
  return {401,
          absl::StrCat("Incorrect API key provided: ", MaskKey(key),
                       ". You can find your API key at "
                       "https://platform.openai.com/account/api-keys."),
          "invalid_request_error", std::nullopt, "invalid_api_key"};
}

std::string_view BearerKey(const SimRequest& request) {
  absl::string_view auth = request.Header("authorization");
  if (!absl::ConsumePrefix(&auth, "Bearer ")) return {};
  auth = absl::StripAsciiWhitespace(auth);
  return std::string_view(auth.data(), auth.size());
}

// The bodies of §1.5 for each error outcome.
ApiError OutcomeError(Outcome outcome, const openai::ChatRequest& chat, std::string_view key,
                      const std::string& request_id) {
  switch (outcome) {
    case Outcome::kError400:
      return {400,
              "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
              "'max_completion_tokens' instead.",
              "invalid_request_error", "max_tokens", "unsupported_parameter"};
    case Outcome::kError401:
      return IncorrectKey(key);
    case Outcome::kError403:
      return {403, "Country, region, or territory not supported", "request_forbidden", std::nullopt,
              "unsupported_country_region_territory"};
    case Outcome::kError404Model:
      return {404,
              absl::StrCat("The model `", chat.model,
                           "` does not exist or you do not have access to it."),
              "invalid_request_error", std::nullopt, "model_not_found"};
    case Outcome::kRateLimit429:
    case Outcome::kRateLimit429NoHeader:
      return {429,
              absl::StrCat("Rate limit reached for ", chat.model,
                           " in organization org-XXXX on tokens per min (TPM): Limit 200000, Used "
                           "195869, Requested 4412. Please try again in 84ms. Visit "
                           "https://platform.openai.com/account/rate-limits to learn more."),
              "tokens", std::nullopt, "rate_limit_exceeded"};
    case Outcome::kQuota429:
      return {429,
              "You exceeded your current quota, please check your plan and billing details. For "
              "more information on this error, read the docs: "
              "https://platform.openai.com/docs/guides/error-codes/api-errors.",
              "insufficient_quota", std::nullopt, "insufficient_quota"};
    case Outcome::kError503:
      return {503,
              absl::StrCat("That model is currently overloaded with other requests. You can "
                           "retry your request, or contact us through our help center at "
                           "help.openai.com if the error persists. (Please include the request "
                           "ID ",
                           request_id, " in your message.)"),
              "server_error", std::nullopt, std::nullopt};
    case Outcome::kError500:
    default:
      return {500, "The server had an error while processing your request. Sorry about that!",
              "server_error", std::nullopt, std::nullopt};
  }
}

// Splits JSON text into pieces of about eight bytes, never inside a UTF-8 character.
std::vector<std::string> SplitArguments(const std::string& text) {
  std::vector<std::string> pieces;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = std::min(text.size(), start + 8);
    while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
    pieces.push_back(text.substr(start, end - start));
    start = end;
  }
  return pieces;
}

}  // namespace

OpenAiApi::OpenAiApi(std::shared_ptr<const SimConfig> config, Dialect dialect)
    : config_(std::move(config)), dialect_(dialect) {}

ResponsePlan OpenAiApi::InvalidUrl(const SimRequest& request) {
  ApiError error{
      404,
      absl::StrCat("Invalid URL (", request.method, " ", std::string(PathOf(request.target)), ")"),
      "invalid_request_error", std::nullopt, std::nullopt};
  return ErrorPlan(error, "not_found", "ok", openai::NewRequestId());
}

std::optional<ResponsePlan> OpenAiApi::Handle(const SimRequest& request) const {
  std::string_view path = PathOf(request.target);
  const std::string_view prefix = dialect_ == Dialect::kVenice ? "/api/v1" : "/v1";
  if (path.substr(0, prefix.size() + 1) != std::string(prefix) + "/") return std::nullopt;
  path.remove_prefix(prefix.size());
  if (path == "/chat/completions" && request.method == "POST") return ChatCompletions(request);
  if (path == "/models" && request.method == "GET") return Models(request, {});
  constexpr std::string_view kModelPrefix = "/models/";
  if (path.substr(0, kModelPrefix.size()) == kModelPrefix && path.size() > kModelPrefix.size() &&
      request.method == "GET") {
    return Models(request, path.substr(kModelPrefix.size()));
  }
  return InvalidUrl(request);
}

std::optional<ApiError> OpenAiApi::CheckAuth(const SimRequest& request) const {
  std::string_view key = BearerKey(request);
  if (dialect_ == Dialect::kVenice) {
    if (key.empty() ? config_->require_key
                    : (!config_->api_key.empty() && key != config_->api_key)) {
      return ApiError{401, "Authentication failed", "", std::nullopt, std::nullopt};
    }
    return std::nullopt;
  }
  if (key.empty()) {
    if (!config_->require_key) return std::nullopt;
    return ApiError{401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                    "YOUR_KEY), or as the password field (with blank username) if you're "
                    "accessing the API from your browser and are prompted for a username and "
                    "password. You can obtain an API key from "
                    "https://platform.openai.com/account/api-keys.",
                    "invalid_request_error", std::nullopt, std::nullopt};
  }
  if (!config_->api_key.empty() && key != config_->api_key) return IncorrectKey(key);
  return std::nullopt;
}

ResponsePlan OpenAiApi::Models(const SimRequest& request, std::string_view model_id) const {
  std::string request_id = openai::NewRequestId();
  if (auto error = CheckAuth(request))
    return ErrorPlan(*error, "models", "ok", request_id, dialect_);
  const auto& models = config_->rules.models();
  std::string body;
  if (model_id.empty()) {
    body = openai::ModelListBody(models);
  } else {
    if (std::find(models.begin(), models.end(), model_id) == models.end()) {
      ApiError error{404, absl::StrCat("The model '", std::string(model_id), "' does not exist"),
                     "invalid_request_error", "model", "model_not_found"};
      return ErrorPlan(error, "models", "ok", request_id, dialect_);
    }
    body = nlohmann::ordered_json({{"id", model_id},
                                   {"object", "model"},
                                   {"created", 1721172741},
                                   {"owned_by", "system"}})
               .dump(2) +
           "\n";
  }
  ResponsePlan plan;
  plan.route = "models";
  AddIdentityHeaders(plan, request_id, 1, dialect_);
  SetJsonBody(plan, std::move(body), Modifiers{}, 0);
  return plan;
}

ResponsePlan OpenAiApi::ChatCompletions(const SimRequest& request) const {
  const bool venice = dialect_ == Dialect::kVenice;
  const std::string route = venice ? "venice_chat_completions" : "chat_completions";
  std::string request_id = openai::NewRequestId();
  if (auto error = CheckAuth(request)) return ErrorPlan(*error, route, "ok", request_id, dialect_);

  nlohmann::json raw;
  if (venice) {
    raw = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
    if (raw.is_object()) {
      // Venice rejects explicit nulls, and (strict, header x-sim-strict: 1) unknown fields.
      std::optional<std::string> bad = FindNull(raw, "");
      if (!bad && request.Header("x-sim-strict") == "1") {
        for (auto it = raw.begin(); it != raw.end() && !bad; ++it) {
          if (!VeniceKnownField(it.key())) bad = it.key();
        }
      }
      if (bad) {
        return ErrorPlan({400, "Invalid request parameters", "", *bad, std::nullopt}, route, "ok",
                         request_id, dialect_);
      }
    }
  }
  openai::ParsedRequest parsed = openai::ParseChatRequest(request.body);
  if (parsed.error) {
    if (venice) parsed.error->message = "Invalid request parameters";
    return ErrorPlan(*parsed.error, route, "ok", request_id, dialect_);
  }
  const openai::ChatRequest& chat = parsed.request;

  auto directives = ResolveDirectives(*config_, request, venice ? "venice" : "openai",
                                      chat.last_user_text, chat.model);
  if (!directives.ok()) {
    ApiError error{400, std::string(directives.status().message()), "invalid_request_error",
                   std::nullopt, "invalid_simulator_directive"};
    return ErrorPlan(error, route, "ok", request_id, dialect_);
  }
  const Directives& d = *directives;
  const Outcome outcome = d.scenario.outcome;
  const Modifiers& m = d.scenario.modifiers;
  std::string scenario_label(OutcomeName(outcome));

  if (IsHttpError(outcome)) {
    if (venice) {
      ResponsePlan plan =
          ErrorPlan(VeniceOutcomeError(outcome), route, scenario_label, request_id, dialect_);
      // Venice says when to come back only in x-ratelimit-reset-requests (a unix timestamp).
      if (outcome == Outcome::kRateLimit429) AddRateLimitHeaders(plan, 0, true, dialect_);
      plan.close_silently = m.close_after;
      return plan;
    }
    ResponsePlan plan = ErrorPlan(OutcomeError(outcome, chat, BearerKey(request), request_id),
                                  route, scenario_label, request_id);
    if (outcome == Outcome::kRateLimit429) {
      plan.headers.emplace_back("retry-after", "1");
      plan.headers.emplace_back("retry-after-ms", "800");
    }
    if (outcome == Outcome::kRateLimit429 || outcome == Outcome::kRateLimit429NoHeader) {
      AddRateLimitHeaders(plan, chat.prompt_tokens, /*exhausted=*/true);
    }
    plan.close_silently = m.close_after;
    return plan;
  }

  // The answer: content pieces (or tool-call argument pieces) and how it finishes.
  std::vector<std::string> pieces = openai::SplitIntoTokens(d.reply);
  std::string finish_reason = "stop";
  std::optional<openai::ToolCall> tool_call;
  if (outcome == Outcome::kToolCall) {
    std::string name = (d.rule && !d.rule->tool_name.empty()) ? d.rule->tool_name
                       : !chat.first_tool_name.empty()        ? chat.first_tool_name
                                                              : "get_weather";
    std::string arguments = (d.rule && !d.rule->tool_arguments.empty())
                                ? d.rule->tool_arguments
                                : R"({"location":"Boston"})";
    tool_call = openai::ToolCall{openai::NewToolCallId(), name, arguments};
    pieces = SplitArguments(arguments);
    finish_reason = "tool_calls";
  } else if (outcome == Outcome::kLength) {
    pieces.resize((pieces.size() + 1) / 2);
    finish_reason = "length";
  }
  if (!tool_call && chat.max_completion_tokens &&
      static_cast<int64_t>(pieces.size()) > *chat.max_completion_tokens) {
    pieces.resize(static_cast<size_t>(std::max<int64_t>(0, *chat.max_completion_tokens)));
    finish_reason = "length";
  }
  std::string content;
  for (const auto& piece : pieces) content += piece;
  openai::Usage usage{chat.prompt_tokens, static_cast<int64_t>(pieces.size())};
  openai::CompletionIdentity identity{openai::NewCompletionId(),
                                      std::chrono::duration_cast<std::chrono::seconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count(),
                                      chat.model};

  ResponsePlan plan;
  plan.route = route;
  plan.scenario = scenario_label;
  plan.close_silently = m.close_after;
  plan.exact_writes =
      m.split_bytes || m.byte_by_byte || m.multi || m.comments || m.crlf || m.nospace || m.fields;
  const bool broken = BreaksStream(outcome);

  if (!chat.stream) {
    int latency = d.latency_ms >= 0
                      ? d.latency_ms
                      : d.first_token_ms + d.token_interval_ms * static_cast<int>(pieces.size());
    plan.head_delay = milliseconds(latency);
    AddIdentityHeaders(plan, request_id, std::max(1, latency), dialect_);
    AddRateLimitHeaders(plan, chat.prompt_tokens + usage.completion_tokens, false, dialect_);
    std::string body = openai::CompletionBody(identity, content, finish_reason, usage, tool_call);
    if (venice) {
      // Venice's extras (§2.3): cost, the effective venice_parameters, prompt_logprobs.
      ojson j = ojson::parse(body);
      for (auto& choice : j["choices"]) {
        choice["stop_reason"] = nullptr;
        choice["message"]["reasoning_content"] = nullptr;
        choice["message"].erase("annotations");
        choice["message"].erase("refusal");
      }
      j.erase("service_tier");
      j.erase("system_fingerprint");
      j["cost"] = {
          {"diem", 0},
          {"usd", static_cast<double>(usage.prompt_tokens + usage.completion_tokens) * 1e-6}};
      j["prompt_logprobs"] = nullptr;
      j["venice_parameters"] = VeniceParametersEcho(raw);
      body = j.dump(2, ' ', false, ojson::error_handler_t::replace) + "\n";
    }
    if (broken) {
      // A JSON answer cannot fail half way at the SSE level; both break the body instead.
      plan.headers.emplace_back("Content-Type", kJson);
      plan.writes.push_back({milliseconds(0), std::move(body)});
      plan.ending = Ending::kTruncate;
    } else {
      SetJsonBody(plan, std::move(body), m, d.seed);
    }
    return plan;
  }

  // Venice streams carry no obfuscation padding.
  openai::ChunkOptions options{chat.include_usage, chat.include_obfuscation && !venice};
  std::vector<SseEvent> events;
  events.push_back({tool_call ? openai::ToolCallStartChunk(identity, *tool_call, options)
                              : openai::RoleChunk(identity, options),
                    milliseconds(d.first_token_ms)});
  size_t sent = broken ? std::min<size_t>(2, pieces.size()) : pieces.size();
  for (size_t i = 0; i < sent; ++i) {
    events.push_back({tool_call ? openai::ToolArgumentsChunk(identity, pieces[i], options)
                                : openai::ContentChunk(identity, pieces[i], options),
                      milliseconds(i == 0 ? 0 : d.token_interval_ms)});
  }
  if (outcome == Outcome::kMidstreamError) {
    events.push_back(
        {std::string(openai::MidstreamErrorData()), milliseconds(d.token_interval_ms)});
  } else if (outcome == Outcome::kMalformedEvent) {
    // A whole event whose data is cut JSON (a broken proxy or encoder), then the end.
    std::string chunk = openai::ContentChunk(identity, " and then", options);
    events.push_back({chunk.substr(0, chunk.size() / 2), milliseconds(d.token_interval_ms)});
  } else if (outcome != Outcome::kTruncated) {
    events.push_back({openai::FinishChunk(identity, finish_reason, options), milliseconds(0)});
    if (chat.include_usage) {
      events.push_back({openai::UsageChunk(identity, usage, options), milliseconds(0)});
    }
    events.push_back({"[DONE]", milliseconds(0)});
  }

  plan.chunked = true;
  plan.headers.emplace_back("Content-Type", kEventStream);
  AddIdentityHeaders(plan, request_id, 1, dialect_);
  AddRateLimitHeaders(plan, chat.prompt_tokens + usage.completion_tokens, false, dialect_);
  plan.writes = FrameEvents(events, m, d.seed);
  if (outcome == Outcome::kMidstreamError || outcome == Outcome::kMalformedEvent) {
    plan.ending = Ending::kCloseAfterLast;
  } else if (outcome == Outcome::kTruncated) {
    // The next event, framed as usual, of which only the first half will reach the client.
    std::string next = sent < pieces.size() ? openai::ContentChunk(identity, pieces[sent], options)
                                            : openai::FinishChunk(identity, finish_reason, options);
    plan.writes.push_back(
        {milliseconds(d.token_interval_ms),
         FrameEvents({{next, milliseconds(0)}}, Modifiers{.crlf = m.crlf, .nospace = m.nospace}, 0)
             .front()
             .bytes});
    plan.ending = Ending::kTruncate;
  }
  return plan;
}

}  // namespace anima::sim
