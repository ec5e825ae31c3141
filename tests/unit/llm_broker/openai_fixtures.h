#pragma once

// Recorded OpenAI wire data (shared/reference/provider-wire-formats.md §1.4, §1.5).

namespace anima::broker::testing {

// The recorded gpt-3.5-turbo stream with include_usage (§1.4), byte for byte.
inline constexpr char kRecordedStream[] =
    "data: {\"id\":\"chatcmpl-CVFjOTBIgA3kuQLnIXXxtg7Ge7hbs\",\"object\":\"chat.completion.chunk\","
    "\"created\":1761564674,\"model\":\"gpt-3.5-turbo-0125\",\"service_tier\":\"default\","
    "\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
    "\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null,"
    "\"obfuscation\":\"kSx18\"}\n\n"
    "data: {\"id\":\"chatcmpl-CVFjOTBIgA3kuQLnIXXxtg7Ge7hbs\",\"object\":\"chat.completion.chunk\","
    "\"created\":1761564674,\"model\":\"gpt-3.5-turbo-0125\",\"service_tier\":\"default\","
    "\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},"
    "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null,\"obfuscation\":\"Gpkah\"}\n\n"
    "data: {\"id\":\"chatcmpl-CVFjOTBIgA3kuQLnIXXxtg7Ge7hbs\",\"object\":\"chat.completion.chunk\","
    "\"created\":1761564674,\"model\":\"gpt-3.5-turbo-0125\",\"service_tier\":\"default\","
    "\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"delta\":{\"content\":\",\"},"
    "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null,\"obfuscation\":\"38dLw0\"}\n\n"
    "data: {\"id\":\"chatcmpl-CVFjOTBIgA3kuQLnIXXxtg7Ge7hbs\",\"object\":\"chat.completion.chunk\","
    "\"created\":1761564674,\"model\":\"gpt-3.5-turbo-0125\",\"service_tier\":\"default\","
    "\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"delta\":{\"content\":\" how are "
    "you?\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null,\"obfuscation\":\"M5w\"}\n\n"
    "data: {\"id\":\"chatcmpl-CVFjOTBIgA3kuQLnIXXxtg7Ge7hbs\",\"object\":\"chat.completion.chunk\","
    "\"created\":1761564674,\"model\":\"gpt-3.5-turbo-0125\",\"service_tier\":\"default\","
    "\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
    "\"finish_reason\":\"stop\"}],\"usage\":null,\"obfuscation\":\"a\"}\n\n"
    "data: {\"id\":\"chatcmpl-CVFjOTBIgA3kuQLnIXXxtg7Ge7hbs\",\"object\":\"chat.completion.chunk\","
    "\"created\":1761564674,\"model\":\"gpt-3.5-turbo-0125\",\"service_tier\":\"default\","
    "\"system_fingerprint\":null,\"choices\":[],\"usage\":{\"prompt_tokens\":10,"
    "\"completion_tokens\":5,\"total_tokens\":15,\"prompt_tokens_details\":{\"cached_tokens\":0,"
    "\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,"
    "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}},\"obfuscation\":"
    "\"8618FsxJD2gV\"}\n\n"
    "data: [DONE]\n\n";

// The recorded mid-stream error after HTTP 200 (coder/aibridge stream_error.txtar), after two
// content chunks; the connection then closes without [DONE].
inline constexpr char kMidStreamError[] =
    "data: "
    "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\","
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},"
    "\"finish_reason\":null}]}\n\n"
    "data: "
    "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\n\n"
    "data: {\"error\": {\"message\": \"The server had an error while processing your request. "
    "Sorry about that!\", \"type\": \"server_error\"}}\n\n";

inline constexpr char kOkResponse[] =
    "{\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion\","
    "\"created\":1741569952,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,"
    "\"message\":{\"role\":\"assistant\",\"content\":\"Hello! How can I assist you today?\","
    "\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29},"
    "\"service_tier\":\"default\",\"system_fingerprint\":\"fp_fc9f1d7035\"}";

inline constexpr char k401Body[] =
    "{\"error\":{\"message\":\"Incorrect API key provided: sk-abc***xyz. You can find your API key "
    "at https://platform.openai.com/account/api-keys.\",\"type\":\"invalid_request_error\","
    "\"param\":null,\"code\":\"invalid_api_key\"}}";

inline constexpr char k429Body[] =
    "{\"error\":{\"message\":\"Rate limit reached for gpt-4o-mini in organization org-XXXX on "
    "tokens per min (TPM): Limit 200000, Used 195869, Requested 4412. Please try again in 84ms. "
    "Visit https://platform.openai.com/account/rate-limits to learn more.\",\"type\":\"tokens\","
    "\"param\":null,\"code\":\"rate_limit_exceeded\"}}";

inline constexpr char k429QuotaBody[] =
    "{\"error\":{\"message\":\"You exceeded your current quota, please check your plan and billing "
    "details.\",\"type\":\"insufficient_quota\",\"param\":null,\"code\":\"insufficient_quota\"}}";

inline constexpr char k500Body[] =
    "{\"error\":{\"message\":\"The server had an error while processing your request. Sorry about "
    "that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";

}  // namespace anima::broker::testing
