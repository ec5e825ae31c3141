#pragma once

#include <string>

#include "anima/v1/envelope.pb.h"
#include "anima/v1/llm_broker.pb.h"

namespace anima::router {

// The broker request for a chat message: the system prompt, the earlier turns of the
// conversation (oldest first: the envelope's own chat.history when it has any, else `history`)
// and the new user message.
anima::v1::CompletionRequest ToCompletionRequest(
    const anima::v1::Envelope& envelope,
    const google::protobuf::RepeatedPtrField<anima::v1::ChatMessage>& history);

// The chat_response for a finished completion, with what the broker billed for it (cost_usd,
// billed_usage) for the gateway to charge.
anima::v1::ChatResponse ToChatResponse(const anima::v1::CompletionResponse& completion,
                                       const std::string& conversation_id);

}  // namespace anima::router
