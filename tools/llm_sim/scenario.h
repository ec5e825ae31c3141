#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace anima::sim {

// What a simulated provider does with one request. A scenario is one outcome (`ok`,
// `rate_limit_429`, `midstream_error`, ...) plus any number of framing modifiers that change how
// the bytes of a stream reach the client without changing what they mean.
//
// Written as a comma-separated list, e.g. "midstream_error,crlf,split_bytes": at most one outcome
// (default `ok`) and any modifiers, in any order. The same names serve every provider API.
enum class Outcome {
  kOk,
  kSlow,                  // ok, with the slow first-token and inter-token delays
  kLength,                // finish_reason "length", the reply cut in half
  kToolCall,              // a function call instead of content
  kError400,              // unsupported_parameter
  kError401,              // invalid_api_key
  kError403,              // unsupported_country_region_territory
  kError404Model,         // model_not_found
  kRateLimit429,          // rate_limit_exceeded with retry-after and retry-after-ms
  kRateLimit429NoHeader,  // rate_limit_exceeded, delay only in the message
  kQuota429,              // insufficient_quota, no retry-after
  kError500,
  kError503,
  kMidstreamError,  // content, then an error event after HTTP 200, no [DONE]
  kTruncated,       // the connection closes inside a chunk, mid-JSON
  kMalformedEvent,  // content, then an event whose data is not JSON, then the connection closes
  // Gemini outcomes (the OpenAI-shaped APIs answer them like `ok`):
  kPromptBlocked,  // promptFeedback.blockReason SAFETY, no candidates
  kSafetyStop,     // a final candidate with finishReason SAFETY and no content
  kRecitation,     // a final candidate with finishReason RECITATION and no content
  kEmptyParts,     // {"content":{"role":"model"}} chunks mid-stream and at the end
  kNullFields,     // explicit nulls for usage counts and finishReason on a middle chunk
};

struct Modifiers {
  bool split_bytes = false;   // random small writes; always splits CR|LF and multibyte characters
  bool byte_by_byte = false;  // one byte per write
  bool crlf = false;          // "\r\n" line endings
  bool comments = false;      // ": keep-alive" comment events between events
  bool nospace = false;       // "data:" without the space
  bool multi = false;         // several events in one write
  bool fields = false;        // "id:" on every event and a leading "retry: 3000"
  bool close_after = false;   // close the connection after the response, without saying so
  bool wrapped = false;       // Gemini: error bodies wrapped in a one-element array [ ... ]
};

struct Scenario {
  Outcome outcome = Outcome::kOk;
  Modifiers modifiers;
};

// Parses "name[,name...]". Unknown names and two outcomes are errors naming the culprit.
absl::StatusOr<Scenario> ParseScenario(std::string_view text);

// The outcome's name as written in headers and rules (a bounded set: safe as a metric label).
std::string_view OutcomeName(Outcome outcome);

// Every outcome and modifier name, for --help and docs.
std::vector<std::string> ScenarioNames();

// True when the outcome answers with an HTTP error before any body.
bool IsHttpError(Outcome outcome);

// True for the outcomes that break a stream after HTTP 200 (midstream_error, truncated,
// malformed_event): a few content events, then no proper end.
bool BreaksStream(Outcome outcome);

// A provider fault storm: for each simulated API, scenarios drawn at random per request, each
// with its share of the requests (the rest, and every API not named, answer as usual).
// Written --faults='openai=rate_limit_429:0.2,error_500:0.1;venice=truncated:0.05'; an API is
// `openai`, `venice` or `gemini`; a scenario may combine names with '+' (`slow+split_bytes`).
class FaultMix {
 public:
  static absl::StatusOr<FaultMix> Parse(std::string_view text);

  bool empty() const { return apis_.empty(); }
  // The scenario for a request to `api`, given a uniform draw in [0, 1); nullptr: no fault.
  const Scenario* Pick(std::string_view api, double draw) const;

 private:
  struct Share {
    double upto = 0;  // cumulative share
    Scenario scenario;
  };
  std::vector<std::pair<std::string, std::vector<Share>>> apis_;
};

}  // namespace anima::sim
