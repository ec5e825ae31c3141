// Fuzzes FrameTranslator::Parse with arbitrary client frames: it must never crash, and whatever it
// accepts or refuses must render to a JSON frame.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "gateway/frame_translator.h"
#include "nlohmann/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const anima::gateway::FrameTranslator translator({"weather"});
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto result = translator.Parse(text);
  std::string reply;
  if (auto* error = std::get_if<anima::gateway::ProtocolError>(&result)) {
    if (error->code.empty() || error->id.empty()) std::abort();
    reply = anima::gateway::FrameTranslator::RenderError(*error);
  } else {
    const auto& frame = std::get<anima::gateway::ParsedFrame>(result);
    if (frame.id.empty() || frame.id.size() > 64 || frame.type.empty()) std::abort();
    reply = anima::gateway::FrameTranslator::RenderPong(frame.id);
    if (frame.envelope.has_raw_json() && !nlohmann::json::accept(frame.envelope.raw_json())) {
      std::abort();
    }
  }
  if (!nlohmann::json::accept(reply)) std::abort();
  return 0;
}
