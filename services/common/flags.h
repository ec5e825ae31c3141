#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"

namespace anima::common {

// Command-line flags with environment fallbacks: `--name=value` or `--name value` wins over the
// environment variable, which wins over the default. Booleans also accept a bare `--name`.
//
//   FlagSet flags("anima-router");
//   flags.Add("port", &port, "ANIMA_ROUTER_PORT", "gRPC port");
//   if (auto s = flags.Parse(argc, argv); !s.ok()) { ... }
class FlagSet {
 public:
  explicit FlagSet(std::string program);

  void Add(std::string name, std::string* target, std::string env, std::string help);
  void Add(std::string name, int* target, std::string env, std::string help);
  void Add(std::string name, int64_t* target, std::string env, std::string help);
  void Add(std::string name, double* target, std::string env, std::string help);
  void Add(std::string name, bool* target, std::string env, std::string help);

  // Also reads `env` for --name where the flag's own variable is unset or empty: one variable
  // that sets a default for every binary (ANIMA_LOG_LEVEL behind ANIMA_ROUTER_LOG_LEVEL).
  // --name must have been added already (else std::logic_error).
  void AddEnvFallback(const std::string& name, std::string env);

  // Applies the environment (a flag's own variable, else its fallback), then argv. Unknown flags
  // and bad values are errors naming the flag. `--help` sets help_requested() and returns OK.
  absl::Status Parse(int argc, char** argv);
  absl::Status Parse(const std::vector<std::string>& args);

  bool help_requested() const { return help_requested_; }
  std::string Usage() const;
  // Positional arguments (anything not starting with --, and everything after a bare --).
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  using Target = std::variant<std::string*, int*, int64_t*, double*, bool*>;
  struct Flag {
    std::string name;
    Target target;
    std::string env;
    std::string fallback_env;
    std::string help;
    std::string default_text;
  };
  void AddFlag(std::string name, Target target, std::string env, std::string help);
  absl::Status Assign(const Flag& flag, const std::string& value, const std::string& source);
  Flag* Find(const std::string& name);

  std::string program_;
  std::vector<Flag> flags_;
  std::vector<std::string> positional_;
  bool help_requested_ = false;
};

}  // namespace anima::common
