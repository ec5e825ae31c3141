#include "services/router/router_config.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "services/common/config.h"

namespace anima::router {

const std::set<std::string>& BuiltInTypes() {
  static const std::set<std::string> kTypes = {"chat",
                                               "consciousness_query",
                                               "self_coding_request",
                                               "self_coding_watch",
                                               "self_coding_cancel",
                                               "self_coding_list"};
  return kTypes;
}

bool IsBuiltInType(const std::string& type) { return BuiltInTypes().count(type) > 0; }

Priority RouterConfig::PriorityOf(const std::string& type) const {
  auto it = priorities.find(type);
  return it == priorities.end() ? default_priority : it->second;
}

std::chrono::milliseconds RouterConfig::DeadlineOf(const std::string& type) const {
  auto it = deadlines.find(type);
  return it == deadlines.end() ? default_deadline : it->second;
}

const ModuleRoute* RouterConfig::ModuleFor(const std::string& type) const {
  for (const auto& m : modules) {
    for (const auto& t : m.types) {
      if (t == type) return &m;
    }
  }
  return nullptr;
}

RouterConfig DefaultRouterConfig() {
  RouterConfig c;
  c.priorities = {{"chat", Priority::kHigh},
                  {"self_coding_request", Priority::kHigh},
                  {"self_coding_cancel", Priority::kHigh},
                  {"consciousness_query", Priority::kHigh},
                  {"self_coding_watch", Priority::kNormal},
                  {"self_coding_list", Priority::kNormal}};
  using std::chrono::milliseconds;
  c.deadlines = {{"chat", milliseconds(120000)},
                 {"consciousness_query", milliseconds(5000)},
                 {"self_coding_request", milliseconds(30 * 60 * 1000)},
                 {"self_coding_watch", milliseconds(30 * 60 * 1000)},
                 {"self_coding_cancel", milliseconds(10000)},
                 {"self_coding_list", milliseconds(10000)}};
  return c;
}

absl::StatusOr<RouterConfig> ParseRouterConfig(const nlohmann::json& json) {
  RouterConfig c = DefaultRouterConfig();
  common::ConfigReader root(json, "");

  if (const auto* prios = root.Object("priorities")) {
    for (const auto& [type, value] : prios->items()) {
      Priority p;
      if (!value.is_string() || !ParsePriority(value.get<std::string>(), &p)) {
        root.Fail("priorities." + type, "must be one of high, normal, low");
        break;
      }
      c.priorities[type] = p;
    }
  }
  std::string default_priority = root.String("default_priority", "normal");
  if (root.ok() && !ParsePriority(default_priority, &c.default_priority)) {
    root.Fail("default_priority", "must be one of high, normal, low");
  }
  if (const auto* deadlines = root.Object("deadlines_ms")) {
    for (const auto& [type, value] : deadlines->items()) {
      if (!value.is_number_integer() || value.get<int64_t>() < 1 ||
          value.get<int64_t>() > 24 * 3600 * 1000) {
        root.Fail("deadlines_ms." + type, "must be an integer from 1 to 86400000");
        break;
      }
      c.deadlines[type] = std::chrono::milliseconds(value.get<int64_t>());
    }
  }
  c.default_deadline =
      std::chrono::milliseconds(root.Int("default_deadline_ms", 30000, 1, 24 * 3600 * 1000));

  if (const auto* sched = root.Object("scheduler")) {
    common::ConfigReader r(*sched, "scheduler");
    auto& o = c.scheduler;
    o.high_in_flight = static_cast<int>(r.Int("high_in_flight", o.high_in_flight, 1, 1 << 20));
    o.max_in_flight = static_cast<int>(r.Int("max_in_flight", o.max_in_flight, 1, 1 << 20));
    o.normal_weight = static_cast<int>(r.Int("normal_weight", o.normal_weight, 1, 1000));
    o.low_weight = static_cast<int>(r.Int("low_weight", o.low_weight, 1, 1000));
    if (const auto* caps = r.Object("queue_capacity")) {
      common::ConfigReader q(*caps, "scheduler.queue_capacity");
      for (Priority p : {Priority::kHigh, Priority::kNormal, Priority::kLow}) {
        auto& cap = o.queue_capacity[static_cast<int>(p)];
        cap = static_cast<size_t>(q.Int(PriorityName(p), static_cast<int64_t>(cap), 0, 1 << 24));
      }
      q.RejectUnknown();
      r.Merge(q.status());
    }
    r.RejectUnknown();
    root.Merge(r.status());
  }

  if (const auto* modules = root.Array("modules")) {
    std::set<std::string> claimed, names;
    for (size_t i = 0; i < modules->size() && root.ok(); ++i) {
      std::string path = absl::StrCat("modules[", i, "]");
      common::ConfigReader r((*modules)[i], path);
      ModuleRoute m;
      m.name = r.String("name", "", true);
      // A name is a channel and a module in consciousness_state: two modules, or a module and a
      // service, must not share one.
      if (m.name == "router" || m.name == "llm-broker" || m.name == "self-coding") {
        r.Fail("name", "\"" + m.name + "\" is the name of one of Anima's own services");
      } else if (!m.name.empty() && !names.insert(m.name).second) {
        r.Fail("name", "\"" + m.name + "\" is already the name of another module");
      }
      m.address = r.String("address", "", true);
      if (const auto* types = r.Array("types", true)) {
        for (const auto& t : *types) {
          if (!t.is_string() || t.get<std::string>().empty()) {
            r.Fail("types", "must be non-empty strings");
            break;
          }
          std::string type = t.get<std::string>();
          if (IsBuiltInType(type)) {
            r.Fail("types", "\"" + type + "\" is handled by the router itself");
          } else if (!claimed.insert(type).second) {
            r.Fail("types", "\"" + type + "\" is already routed to another module");
          }
          m.types.push_back(type);
        }
        if (types->empty()) r.Fail("types", "must list at least one type");
      }
      std::string priority = r.String("priority");
      Priority p;
      if (!priority.empty()) {
        if (!ParsePriority(priority, &p)) {
          r.Fail("priority", "must be one of high, normal, low");
        } else {
          for (const auto& t : m.types) c.priorities[t] = p;
        }
      }
      int64_t deadline = r.Int("deadline_ms", 0, 1, 24 * 3600 * 1000);
      if (deadline > 0) {
        for (const auto& t : m.types) c.deadlines[t] = std::chrono::milliseconds(deadline);
      }
      r.RejectUnknown();
      root.Merge(r.status());
      c.modules.push_back(std::move(m));
    }
  }
  root.RejectUnknown();
  if (!root.ok()) return root.status();
  return c;
}

}  // namespace anima::router
