#include "services/llm_broker/provider.h"

#include <algorithm>

namespace anima::broker {

bool Provider::Supports(const std::string& model) const {
  const auto& list = models();
  return list.empty() || std::find(list.begin(), list.end(), model) != list.end();
}

}  // namespace anima::broker
