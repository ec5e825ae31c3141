// Runs every OpenAI (and Venice) body parser of the broker on the input: a full response, a
// stream chunk, an HTTP error body (with delay headers, Venice's reset header and Retry-After
// dates taken from the input) and a request built around it.
#include <cstdint>
#include <string>

#include "services/llm_broker/openai_wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace anima::broker;
  std::string input(reinterpret_cast<const char*>(data), size);
  (void)openai::ParseResponse(input);
  (void)openai::ParseChunk(input);
  (void)openai::ErrorFromBody(input);
  HttpResponseHead head;
  head.status = 429;
  std::string prefix = input.substr(0, 12);
  head.headers = {{"retry-after-ms", prefix},
                  {"Retry-After", input.substr(0, 40)},
                  {"x-should-retry", prefix},
                  {"x-ratelimit-reset-requests", prefix}};
  for (int status : {400, 429, 500, 503}) (void)openai::ParseHttpError(status, &head, input);
  ChatRequest request;
  request.model = prefix;
  request.system = input;
  request.messages = {{"user", input}};
  request.stream = !input.empty() && (input[0] & 1);
  (void)openai::BuildRequestBody(request);
  (void)openai::BuildRequestBody(request, /*venice=*/true);
  (void)openai::ParseRetryAfterValue(input, std::chrono::system_clock::now());
  (void)NormalizeFinishReason(input);
  return 0;
}
