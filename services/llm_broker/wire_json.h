#pragma once

// Reading provider JSON defensively, shared by the wire formats (openai_wire.cc, gemini_wire.cc):
// a missing, null or mistyped member reads as absent, never as an exception.

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "nlohmann/json.hpp"
#include "services/llm_broker/types.h"

namespace anima::broker::wire {

// j[key] when `j` is an object holding a non-null `key`, else null.
inline const nlohmann::json* Member(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

// j[key] when it is a string, else "".
inline std::string StringMember(const nlohmann::json& j, const char* key) {
  const nlohmann::json* v = Member(j, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}

// j[key] as a count: a non-negative integer, or a finite non-negative number (truncated) below
// 9e18; anything else is absent.
inline std::optional<int64_t> CountMember(const nlohmann::json& j, const char* key) {
  const nlohmann::json* v = Member(j, key);
  if (v == nullptr || !v->is_number()) return std::nullopt;
  if (v->is_number_integer()) {
    int64_t i = v->get<int64_t>();
    return i >= 0 ? std::optional<int64_t>(i) : std::nullopt;
  }
  double d = v->get<double>();
  if (!std::isfinite(d) || d < 0 || d >= 9e18) return std::nullopt;
  return static_cast<int64_t>(d);
}

// A 2xx body the provider should not have sent: retryable, as a glitch of one replica may be.
inline ProviderError InvalidResponse(std::string message) {
  ProviderError e;
  e.code = "invalid_response";
  e.message = std::move(message);
  e.retryable = true;
  return e;
}

}  // namespace anima::broker::wire
