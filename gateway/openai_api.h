#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "anima/v1/envelope.pb.h"
#include "gateway/quota.h"
#include "grpcpp/support/status_code_enum.h"

namespace anima::gateway {

// An OpenAI error object with the HTTP status it is sent with (docs/gateway.md lists the
// mapping).
struct OpenAiError {
  int http_status = 500;
  std::string type;  // invalid_request_error, authentication_error, rate_limit_error, ...
  std::string code;  // the Anima error code, or empty
  std::string message;
  std::string param;                // the request field at fault, or empty
  int64_t retry_after_seconds = 0;  // > 0: sent as Retry-After
  int64_t retry_after_ms = 0;       // > 0: also sent as retry-after-ms (OpenAI's SDKs read it)
};

// A parsed POST /v1/chat/completions body.
struct ChatCompletionRequest {
  anima::v1::Envelope envelope;  // type "chat" with its ChatBody; request_id not set
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// The OpenAI-compatible HTTP API as plain translation (no I/O): request bodies to envelopes,
// router events and failures to OpenAI objects and errors.
class OpenAiApi {
 public:
  // `model`: "auto" or absent (the router's default), "provider/model", or a model name.
  // system/developer messages are joined into ChatBody.system; the last message must be the
  // user's and becomes ChatBody.message; earlier user/assistant turns go to ChatBody.history.
  static std::variant<ChatCompletionRequest, OpenAiError> ParseChatCompletion(
      std::string_view body);

  static std::string RenderError(const OpenAiError& error);
  // An ErrorEvent of the router (PROTOCOL.md §3 codes) as an OpenAI error.
  static OpenAiError ErrorFromEvent(const anima::v1::ErrorEvent& event);
  // A Dispatch call that ended with `code` and no answer.
  static OpenAiError ErrorFromStatus(grpc::StatusCode code, std::string_view message);
  static OpenAiError BodyTooLarge(size_t limit);
  // 429 `overloaded`: admission refused the request (Retry-After and retry-after-ms).
  static OpenAiError Overloaded(std::chrono::milliseconds retry_after);
  static OpenAiError Unauthenticated(std::string_view message);
  // 429 as OpenAI answers it: type and code `insufficient_quota` for a budget,
  // `rate_limit_exceeded` for a rate; the quota's name in `param`.
  static OpenAiError QuotaExceeded(const QuotaRefusal& refusal);
  // An x-ratelimit-reset-* value as OpenAI writes it: "120ms", "1.5s", "6m0s".
  static std::string ResetDuration(std::chrono::milliseconds d);

  // GET /v1/models from "provider/model" ids.
  static std::string RenderModelList(
      const std::vector<std::pair<std::string, std::string>>& provider_models);
};

// The objects of one chat completion, all with the same id, created time and model.
class ChatCompletionRenderer {
 public:
  // `requested_model` is reported until the router's answer names the model used.
  explicit ChatCompletionRenderer(std::string requested_model = "auto");

  const std::string& id() const { return id_; }
  // The chat.completion object of a non-streaming answer.
  std::string Completion(const anima::v1::ChatResponse& response) const;
  // chat.completion.chunk objects (without the "data: " framing).
  std::string RoleChunk() const;
  std::string DeltaChunk(std::string_view text) const;
  // The last chunk with choices: an empty delta and the finish_reason.
  std::string FinishChunk(const anima::v1::ChatResponse& response);
  // `choices: []` and the usage (stream_options.include_usage).
  std::string UsageChunk(const anima::v1::ChatResponse& response) const;

 private:
  std::string id_;
  int64_t created_;
  std::string model_;
};

}  // namespace anima::gateway
