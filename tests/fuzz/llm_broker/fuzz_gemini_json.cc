// Runs every Gemini body parser of the broker on the input: a whole response (object or array),
// a stream event, an HTTP error body (object, array, or anything), usage metadata, a retry
// duration and a request built around it.
#include <cstdint>
#include <string>

#include "services/llm_broker/gemini_wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace anima::broker;
  std::string input(reinterpret_cast<const char*>(data), size);
  (void)gemini::ParseResponse(input);
  (void)gemini::ParseChunk(input);
  (void)gemini::ParseUsage(input);
  (void)gemini::ParseDuration(input.substr(0, 24));
  for (int status : {400, 403, 429, 500, 503}) (void)gemini::ParseHttpError(status, input);
  (void)gemini::NormalizeFinishReason(input, !input.empty() && (input[0] & 1));
  ChatRequest request;
  request.model = input.substr(0, 12);
  request.system = input;
  request.messages = {{"user", input}, {"assistant", input}, {"system", input}};
  request.stream = !input.empty() && (input[0] & 2);
  (void)gemini::BuildRequestBody(request);
  return 0;
}
