// Fuzzes FrameTranslator::Parse with arbitrary client frames: it must never crash, and whatever it
// accepts or refuses must render to a JSON frame. The same bytes, as a module's raw_json event
// coming back, must render to a JSON frame too.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "gateway/frame_translator.h"
#include "nlohmann/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const anima::gateway::FrameTranslator translator;
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
    // Only well-formed names reach the router.
    if (!anima::gateway::FrameTranslator::IsBuiltinType(frame.type) &&
        !anima::gateway::FrameTranslator::IsWellFormedType(frame.type)) {
      std::abort();
    }
  }
  if (!nlohmann::json::accept(reply)) std::abort();

  anima::v1::Event event;
  event.set_raw_json(std::string(text));
  auto rendered = anima::gateway::FrameTranslator::Render(event, "m1");
  if (!nlohmann::json::accept(rendered.text)) std::abort();
  return 0;
}
