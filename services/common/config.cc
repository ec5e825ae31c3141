#include "services/common/config.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace anima::common {

absl::StatusOr<nlohmann::json> LoadJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the file"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto parsed = nlohmann::json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false,
                                      /*ignore_comments=*/true);
  if (parsed.is_discarded()) {
    // Parse again with exceptions only to recover the position of the error for the message.
    try {
      auto ignored = nlohmann::json::parse(buffer.str(), nullptr, true, true);
      (void)ignored;
    } catch (const nlohmann::json::parse_error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": not valid JSON at byte ", e.byte, ": ", e.what()));
    }
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  }
  if (!parsed.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the top level must be an object"));
  }
  return parsed;
}

ConfigReader::ConfigReader(const nlohmann::json& object, std::string path)
    : object_(object), path_(std::move(path)) {
  if (!object_.is_object()) status_ = absl::InvalidArgumentError(path_ + ": expected an object");
}

std::string ConfigReader::FieldPath(const std::string& key) const {
  return path_.empty() ? key : absl::StrCat(path_, ".", key);
}

void ConfigReader::Fail(const std::string& key, const std::string& message) {
  if (status_.ok()) status_ = absl::InvalidArgumentError(FieldPath(key) + ": " + message);
}

void ConfigReader::Merge(const absl::Status& child) {
  if (status_.ok() && !child.ok()) status_ = child;
}

const nlohmann::json* ConfigReader::Get(const std::string& key, bool required) {
  seen_.push_back(key);
  if (!status_.ok() || !object_.is_object()) return nullptr;
  auto it = object_.find(key);
  if (it == object_.end() || it->is_null()) {
    if (required) Fail(key, "is required");
    return nullptr;
  }
  return &*it;
}

std::string ConfigReader::String(const std::string& key, const std::string& fallback,
                                 bool required) {
  const auto* v = Get(key, required);
  if (v == nullptr) return fallback;
  if (!v->is_string()) {
    Fail(key, "expected a string");
    return fallback;
  }
  if (required && v->get_ref<const std::string&>().empty()) {
    Fail(key, "must not be empty");
    return fallback;
  }
  return v->get<std::string>();
}

int64_t ConfigReader::Int(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  const auto* v = Get(key, false);
  if (v == nullptr) return fallback;
  if (!v->is_number_integer()) {
    Fail(key, "expected an integer");
    return fallback;
  }
  int64_t n = v->get<int64_t>();
  if (n < min || n > max) {
    Fail(key, absl::StrCat("must be between ", min, " and ", max, ", got ", n));
    return fallback;
  }
  return n;
}

double ConfigReader::Number(const std::string& key, double fallback, double min, double max) {
  const auto* v = Get(key, false);
  if (v == nullptr) return fallback;
  if (!v->is_number()) {
    Fail(key, "expected a number");
    return fallback;
  }
  double n = v->get<double>();
  if (n < min || n > max) {
    Fail(key, absl::StrCat("must be between ", min, " and ", max, ", got ", n));
    return fallback;
  }
  return n;
}

bool ConfigReader::Bool(const std::string& key, bool fallback) {
  const auto* v = Get(key, false);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) {
    Fail(key, "expected true or false");
    return fallback;
  }
  return v->get<bool>();
}

const nlohmann::json* ConfigReader::Array(const std::string& key, bool required) {
  const auto* v = Get(key, required);
  if (v != nullptr && !v->is_array()) {
    Fail(key, "expected an array");
    return nullptr;
  }
  return v;
}

const nlohmann::json* ConfigReader::Object(const std::string& key, bool required) {
  const auto* v = Get(key, required);
  if (v != nullptr && !v->is_object()) {
    Fail(key, "expected an object");
    return nullptr;
  }
  return v;
}

void ConfigReader::RejectUnknown() {
  if (!status_.ok() || !object_.is_object()) return;
  for (const auto& [key, value] : object_.items()) {
    if (std::find(seen_.begin(), seen_.end(), key) == seen_.end()) {
      Fail(key, "unknown field");
      return;
    }
  }
}

}  // namespace anima::common
