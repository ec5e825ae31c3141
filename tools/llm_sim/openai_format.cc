#include "tools/llm_sim/openai_format.h"

#include <chrono>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace anima::sim::openai {

namespace {

using ojson = nlohmann::ordered_json;

std::mt19937_64& Rng() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng;
}

std::string RandomAlnum(size_t n) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::uniform_int_distribution<size_t> pick(0, sizeof(kAlphabet) - 2);
  std::string out(n, ' ');
  for (char& c : out) c = kAlphabet[pick(Rng())];
  return out;
}

std::string Dump(const ojson& j, int indent = -1) {
  return j.dump(indent, ' ', /*ensure_ascii=*/false, ojson::error_handler_t::replace);
}

const char* JsonTypeName(const nlohmann::json& v) {
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a decimal";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

ApiError Missing(const std::string& param) {
  return {400, absl::StrCat("Missing required parameter: '", param, "'."), "invalid_request_error",
          param, "missing_required_parameter"};
}

ApiError InvalidType(const std::string& param, const std::string& expected,
                     const nlohmann::json& got) {
  return {400,
          absl::StrCat("Invalid type for '", param, "': expected ", expected, ", but got ",
                       JsonTypeName(got), " instead."),
          "invalid_request_error", param, "invalid_type"};
}

// The text of a message's content: a string, or the "text" of each part of an array.
std::string ContentText(const nlohmann::json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string text;
  if (content.is_array()) {
    for (const auto& part : content) {
      if (!part.is_object()) continue;
      auto it = part.find("text");
      if (it == part.end() || !it->is_string()) continue;
      if (!text.empty()) text += "\n";
      text += it->get<std::string>();
    }
  }
  return text;
}

ojson ChunkHead(const CompletionIdentity& identity) {
  ojson chunk;
  chunk["id"] = identity.id;
  chunk["object"] = "chat.completion.chunk";
  chunk["created"] = identity.created;
  chunk["model"] = identity.model;
  chunk["service_tier"] = "default";
  chunk["system_fingerprint"] = nullptr;
  return chunk;
}

std::string FinishWithTail(ojson chunk, const ChunkOptions& options) {
  if (options.include_usage && !chunk.contains("usage")) chunk["usage"] = nullptr;
  if (options.include_obfuscation) {
    std::uniform_int_distribution<size_t> length(1, 16);
    chunk["obfuscation"] = RandomAlnum(length(Rng()));
  }
  return Dump(chunk);
}

std::string ChoiceChunk(const CompletionIdentity& identity, ojson delta, const ojson& finish_reason,
                        const ChunkOptions& options) {
  ojson chunk = ChunkHead(identity);
  ojson choice;
  choice["index"] = 0;
  choice["delta"] = std::move(delta);
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = finish_reason;
  chunk["choices"] = ojson::array({std::move(choice)});
  return FinishWithTail(std::move(chunk), options);
}

ojson UsageJson(const Usage& usage) {
  ojson u;
  u["prompt_tokens"] = usage.prompt_tokens;
  u["completion_tokens"] = usage.completion_tokens;
  u["total_tokens"] = usage.prompt_tokens + usage.completion_tokens;
  u["prompt_tokens_details"] = {{"cached_tokens", 0}, {"audio_tokens", 0}};
  u["completion_tokens_details"] = {{"reasoning_tokens", 0},
                                    {"audio_tokens", 0},
                                    {"accepted_prediction_tokens", 0},
                                    {"rejected_prediction_tokens", 0}};
  return u;
}

}  // namespace

std::string ErrorBody(const ApiError& error) {
  ojson inner;
  inner["message"] = error.message;
  inner["type"] = error.type;
  inner["param"] = error.param ? ojson(*error.param) : ojson(nullptr);
  inner["code"] = error.code ? ojson(*error.code) : ojson(nullptr);
  ojson body;
  body["error"] = std::move(inner);
  return Dump(body, 4) + "\n";
}

ParsedRequest ParseChatRequest(std::string_view body) {
  ParsedRequest out;
  auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    out.error = ApiError{
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
        "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
        "contact us through our help center at help.openai.com.)",
        "invalid_request_error", std::nullopt, std::nullopt};
    return out;
  }
  auto model = json.find("model");
  if (model == json.end() || model->is_null()) {
    out.error = ApiError{400, "you must provide a model parameter", "invalid_request_error",
                         std::nullopt, std::nullopt};
    return out;
  }
  if (!model->is_string()) {
    out.error = InvalidType("model", "a string", *model);
    return out;
  }
  out.request.model = model->get<std::string>();

  auto messages = json.find("messages");
  if (messages == json.end() || messages->is_null()) {
    out.error = Missing("messages");
    return out;
  }
  if (!messages->is_array()) {
    out.error = InvalidType("messages", "an array of objects", *messages);
    return out;
  }
  if (messages->empty()) {
    out.error = ApiError{400,
                         "Invalid 'messages': empty array. Expected an array with minimum length "
                         "1, but got an empty array instead.",
                         "invalid_request_error", "messages", "empty_array"};
    return out;
  }
  for (size_t i = 0; i < messages->size(); ++i) {
    const auto& message = (*messages)[i];
    std::string path = absl::StrCat("messages[", i, "]");
    if (!message.is_object()) {
      out.error = InvalidType(path, "an object", message);
      return out;
    }
    auto role = message.find("role");
    if (role == message.end() || role->is_null()) {
      out.error = Missing(path + ".role");
      return out;
    }
    if (!role->is_string()) {
      out.error = InvalidType(path + ".role", "a string", *role);
      return out;
    }
    std::string text;
    if (auto content = message.find("content"); content != message.end()) {
      text = ContentText(*content);
    }
    out.request.prompt_tokens += CountWords(text);
    if (role->get_ref<const std::string&>() == "user") out.request.last_user_text = text;
  }

  if (auto stream = json.find("stream"); stream != json.end() && !stream->is_null()) {
    if (!stream->is_boolean()) {
      out.error = InvalidType("stream", "a boolean", *stream);
      return out;
    }
    out.request.stream = stream->get<bool>();
  }
  if (auto options = json.find("stream_options"); options != json.end() && !options->is_null()) {
    if (!out.request.stream) {
      out.error = ApiError{400,
                           "The 'stream_options' parameter is only allowed when 'stream' is "
                           "enabled.",
                           "invalid_request_error", "stream_options", std::nullopt};
      return out;
    }
    if (!options->is_object()) {
      out.error = InvalidType("stream_options", "an object", *options);
      return out;
    }
    out.request.include_usage = options->value("include_usage", false);
    out.request.include_obfuscation = options->value("include_obfuscation", true);
  }
  for (const char* key : {"max_completion_tokens", "max_tokens"}) {
    auto limit = json.find(key);
    if (limit == json.end() || limit->is_null()) continue;
    if (!limit->is_number_integer()) {
      out.error = InvalidType(key, "an integer", *limit);
      return out;
    }
    if (!out.request.max_completion_tokens)
      out.request.max_completion_tokens = limit->get<int64_t>();
  }
  if (auto tools = json.find("tools");
      tools != json.end() && tools->is_array() && !tools->empty()) {
    const auto& first = (*tools)[0];
    if (first.is_object() && first.contains("function") && first["function"].is_object()) {
      const auto& fn = first["function"];
      if (auto name = fn.find("name"); name != fn.end() && name->is_string()) {
        out.request.first_tool_name = name->get<std::string>();
      }
    }
  }
  return out;
}

std::vector<std::string> SplitIntoTokens(std::string_view text) {
  std::vector<std::string> pieces;
  size_t start = 0;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && absl::ascii_isspace(static_cast<unsigned char>(text[i]))) ++i;
    while (i < text.size() && !absl::ascii_isspace(static_cast<unsigned char>(text[i]))) ++i;
    pieces.emplace_back(text.substr(start, i - start));
    start = i;
  }
  return pieces;
}

int64_t CountWords(std::string_view text) {
  int64_t words = 0;
  bool in_word = false;
  for (char c : text) {
    bool space = absl::ascii_isspace(static_cast<unsigned char>(c));
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  return words;
}

std::string NewCompletionId() { return "chatcmpl-" + RandomAlnum(29); }
std::string NewToolCallId() { return "call_" + RandomAlnum(24); }
std::string NewRequestId() { return absl::StrFormat("req_%016x%016x", Rng()(), Rng()()); }

std::string CompletionBody(const CompletionIdentity& identity, const std::string& content,
                           const std::string& finish_reason, const Usage& usage,
                           const std::optional<ToolCall>& tool_call) {
  ojson message;
  message["role"] = "assistant";
  message["content"] = tool_call ? ojson(nullptr) : ojson(content);
  if (tool_call) {
    message["tool_calls"] = ojson::array(
        {{{"id", tool_call->id},
          {"type", "function"},
          {"function", {{"name", tool_call->name}, {"arguments", tool_call->arguments}}}}});
  }
  message["refusal"] = nullptr;
  message["annotations"] = ojson::array();
  ojson choice;
  choice["index"] = 0;
  choice["message"] = std::move(message);
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = finish_reason;
  ojson body;
  body["id"] = identity.id;
  body["object"] = "chat.completion";
  body["created"] = identity.created;
  body["model"] = identity.model;
  body["choices"] = ojson::array({std::move(choice)});
  body["usage"] = UsageJson(usage);
  body["service_tier"] = "default";
  body["system_fingerprint"] = "fp_an1ma5im01";
  return Dump(body, 2) + "\n";
}

std::string RoleChunk(const CompletionIdentity& identity, const ChunkOptions& options) {
  ojson delta;
  delta["role"] = "assistant";
  delta["content"] = "";
  delta["refusal"] = nullptr;
  return ChoiceChunk(identity, std::move(delta), nullptr, options);
}

std::string ContentChunk(const CompletionIdentity& identity, const std::string& content,
                         const ChunkOptions& options) {
  ojson delta;
  delta["content"] = content;
  return ChoiceChunk(identity, std::move(delta), nullptr, options);
}

std::string ToolCallStartChunk(const CompletionIdentity& identity, const ToolCall& call,
                               const ChunkOptions& options) {
  ojson delta;
  delta["role"] = "assistant";
  delta["content"] = nullptr;
  delta["tool_calls"] = ojson::array({{{"index", 0},
                                       {"id", call.id},
                                       {"type", "function"},
                                       {"function", {{"name", call.name}, {"arguments", ""}}}}});
  delta["refusal"] = nullptr;
  return ChoiceChunk(identity, std::move(delta), nullptr, options);
}

std::string ToolArgumentsChunk(const CompletionIdentity& identity, const std::string& piece,
                               const ChunkOptions& options) {
  ojson delta;
  delta["tool_calls"] = ojson::array({{{"index", 0}, {"function", {{"arguments", piece}}}}});
  return ChoiceChunk(identity, std::move(delta), nullptr, options);
}

std::string FinishChunk(const CompletionIdentity& identity, const std::string& finish_reason,
                        const ChunkOptions& options) {
  return ChoiceChunk(identity, ojson::object(), finish_reason, options);
}

std::string UsageChunk(const CompletionIdentity& identity, const Usage& usage,
                       const ChunkOptions& options) {
  ojson chunk = ChunkHead(identity);
  chunk["choices"] = ojson::array();
  chunk["usage"] = UsageJson(usage);
  return FinishWithTail(std::move(chunk), options);
}

std::string_view MidstreamErrorData() {
  return R"({"error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error"}})";
}

std::string ModelListBody(const std::vector<std::string>& models) {
  ojson data = ojson::array();
  for (const auto& id : models) {
    data.push_back(
        {{"id", id}, {"object", "model"}, {"created", 1721172741}, {"owned_by", "system"}});
  }
  ojson body;
  body["object"] = "list";
  body["data"] = std::move(data);
  return Dump(body, 2) + "\n";
}

}  // namespace anima::sim::openai
