#include "services/router/chat_translation.h"

namespace anima::router {

anima::v1::CompletionRequest ToCompletionRequest(
    const anima::v1::Envelope& envelope,
    const google::protobuf::RepeatedPtrField<anima::v1::ChatMessage>& history) {
  const auto& chat = envelope.chat();
  anima::v1::CompletionRequest req;
  req.set_request_id(envelope.request_id());
  req.set_system(chat.system());
  req.set_model(chat.model());
  req.set_provider(chat.provider());
  req.set_strategy(chat.strategy());
  if (chat.has_temperature()) req.set_temperature(chat.temperature());
  if (chat.has_max_tokens()) req.set_max_tokens(chat.max_tokens());
  // Turns the client sent itself replace what the router remembers of the conversation.
  *req.mutable_messages() = chat.history_size() > 0 ? chat.history() : history;
  auto* user = req.add_messages();
  user->set_role("user");
  user->set_content(chat.message());
  return req;
}

anima::v1::ChatResponse ToChatResponse(const anima::v1::CompletionResponse& completion,
                                       const std::string& conversation_id) {
  anima::v1::ChatResponse res;
  res.set_conversation_id(conversation_id);
  res.set_message(completion.message());
  res.set_provider(completion.provider());
  res.set_model(completion.model());
  res.set_finish_reason(completion.finish_reason());
  *res.mutable_usage() = completion.usage();
  res.set_latency_ms(completion.latency_ms());
  *res.mutable_candidates() = completion.candidates();
  res.set_cost_usd(completion.cost_usd());
  *res.mutable_billed_usage() = completion.billed_usage();
  res.set_provider_time_us(completion.provider_time_us());
  return res;
}

}  // namespace anima::router
