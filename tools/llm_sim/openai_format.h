#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nlohmann/json.hpp"

// The OpenAI Chat Completions wire format (reference/provider-wire-formats.md §1): request
// validation and the exact bodies of responses, chunks and errors. No I/O.
namespace anima::sim::openai {

// An error as OpenAI sends it: {"error":{"message","type","param","code"}}.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::optional<std::string> param;
  std::optional<std::string> code;
};

// The body of an ApiError, pretty-printed with four spaces as the real service does.
std::string ErrorBody(const ApiError& error);

// What the simulator needs from a CreateChatCompletionRequest.
struct ChatRequest {
  std::string model;
  bool stream = false;
  bool include_usage = false;
  bool include_obfuscation = true;
  std::string last_user_text;                    // text of the last "user" message (parts joined)
  int64_t prompt_tokens = 0;                     // whitespace-separated words of every message
  std::optional<int64_t> max_completion_tokens;  // max_completion_tokens, else max_tokens
  std::string first_tool_name;                   // tools[0].function.name, if any
};

struct ParsedRequest {
  ChatRequest request;
  std::optional<ApiError> error;  // set when the body is not a valid request
};

// Validates like the real endpoint for what matters to clients: JSON object, `model` present,
// `messages` a non-empty array of objects with a role.
ParsedRequest ParseChatRequest(std::string_view body);

// Splits a reply into stream pieces: each piece is a run of whitespace followed by a run of
// non-whitespace ("Hi there" -> "Hi", " there"). Concatenating the pieces gives `text` back.
std::vector<std::string> SplitIntoTokens(std::string_view text);

// Whitespace-separated words of `text`.
int64_t CountWords(std::string_view text);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text
};

// The identity every chunk of one completion shares.
struct CompletionIdentity {
  std::string id;  // chatcmpl-...
  int64_t created = 0;
  std::string model;
};

std::string NewCompletionId();
std::string NewToolCallId();
std::string NewRequestId();  // req_ and 32 hex digits

// A chat.completion object, pretty-printed with two spaces. `tool_call` replaces the content.
std::string CompletionBody(const CompletionIdentity& identity, const std::string& content,
                           const std::string& finish_reason, const Usage& usage,
                           const std::optional<ToolCall>& tool_call);

// The chunks of a chat.completion.chunk stream, one compact line each, fields in the recorded
// order. `include_usage` adds "usage":null to every chunk but the usage chunk;
// `include_obfuscation` adds the random-length "obfuscation" padding field.
struct ChunkOptions {
  bool include_usage = false;
  bool include_obfuscation = true;
};
std::string RoleChunk(const CompletionIdentity& identity, const ChunkOptions& options);
std::string ContentChunk(const CompletionIdentity& identity, const std::string& content,
                         const ChunkOptions& options);
std::string ToolCallStartChunk(const CompletionIdentity& identity, const ToolCall& call,
                               const ChunkOptions& options);
std::string ToolArgumentsChunk(const CompletionIdentity& identity, const std::string& piece,
                               const ChunkOptions& options);
std::string FinishChunk(const CompletionIdentity& identity, const std::string& finish_reason,
                        const ChunkOptions& options);
std::string UsageChunk(const CompletionIdentity& identity, const Usage& usage,
                       const ChunkOptions& options);

// The recorded mid-stream error payload (coder/aibridge stream_error fixture), byte for byte.
std::string_view MidstreamErrorData();

// GET /v1/models.
std::string ModelListBody(const std::vector<std::string>& models);

}  // namespace anima::sim::openai
