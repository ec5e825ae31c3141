#pragma once

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "services/router/priority_scheduler.h"

namespace anima::router {

// An external module: a gRPC service implementing anima.v1.Module/Handle, given message types.
struct ModuleRoute {
  std::string name;     // e.g. "word-count"; appears in consciousness_state as a module
  std::string address;  // host:port
  std::vector<std::string> types;
};

// The router's routing table, priorities and deadlines. Built-in types always route to their
// built-in modules; external modules may claim any other type.
struct RouterConfig {
  std::map<std::string, Priority> priorities;  // by message type; others are `default_priority`
  Priority default_priority = Priority::kNormal;
  std::map<std::string, std::chrono::milliseconds> deadlines;  // by message type
  std::chrono::milliseconds default_deadline{30000};
  PriorityScheduler::Options scheduler;
  std::vector<ModuleRoute> modules;

  Priority PriorityOf(const std::string& type) const;
  std::chrono::milliseconds DeadlineOf(const std::string& type) const;
  // The module that handles `type`, or null.
  const ModuleRoute* ModuleFor(const std::string& type) const;
};

// The defaults: chat, self_coding_request, self_coding_cancel and consciousness_query are high
// (as in the original system), self_coding_watch and self_coding_list normal, any other type
// normal.
RouterConfig DefaultRouterConfig();

// Parses and validates a configuration file's JSON on top of the defaults. Errors name the field:
// `modules[0].address: is required`.
absl::StatusOr<RouterConfig> ParseRouterConfig(const nlohmann::json& json);

// The message types the router handles itself.
const std::set<std::string>& BuiltInTypes();
bool IsBuiltInType(const std::string& type);

}  // namespace anima::router
