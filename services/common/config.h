#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace anima::common {

// Reads a JSON configuration file. Errors name the file and, for syntax errors, the byte offset.
absl::StatusOr<nlohmann::json> LoadJsonFile(const std::string& path);

// Typed, validating access to one JSON object of a configuration, with error messages that name
// the field by its full path ("providers[1].base_url: expected a string").
//
//   ConfigReader r(json, "providers[0]");
//   std::string name = r.String("name", /*required=*/true);
//   int port = r.Int("port", 8080, 1, 65535);
//   r.RejectUnknown();       // a typo in a key is an error, not a silent default
//   if (!r.status().ok()) ...
//
// The first error is kept; later calls return defaults without overwriting it.
class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& object, std::string path);

  std::string String(const std::string& key, const std::string& fallback = "",
                     bool required = false);
  int64_t Int(const std::string& key, int64_t fallback, int64_t min, int64_t max);
  double Number(const std::string& key, double fallback, double min, double max);
  bool Bool(const std::string& key, bool fallback);
  // The child at `key` (array or object), or null when absent. Its type is checked.
  const nlohmann::json* Array(const std::string& key, bool required = false);
  const nlohmann::json* Object(const std::string& key, bool required = false);

  // Every key of the object that no call above asked for is an error.
  void RejectUnknown();
  void Fail(const std::string& key, const std::string& message);

  std::string FieldPath(const std::string& key) const;
  const absl::Status& status() const { return status_; }
  bool ok() const { return status_.ok(); }
  // Carries the first error into a parent reader (e.g. of a list element).
  void Merge(const absl::Status& child);

 private:
  const nlohmann::json* Get(const std::string& key, bool required);

  const nlohmann::json& object_;
  std::string path_;
  std::vector<std::string> seen_;
  absl::Status status_;
};

}  // namespace anima::common
