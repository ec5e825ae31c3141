#include "services/common/harmony.h"

namespace anima {

double Harmony(const std::vector<anima::v1::ModuleStatus>& modules) {
  if (modules.empty()) return 0;
  double sum = 0;
  for (const auto& m : modules) {
    switch (m.health()) {
      case anima::v1::MODULE_HEALTH_HEALTHY:
        sum += 1;
        break;
      case anima::v1::MODULE_HEALTH_DEGRADED:
        sum += 0.5;
        break;
      default:
        break;
    }
  }
  return sum / static_cast<double>(modules.size());
}

const char* HarmonyStatus(double harmony, bool any_modules) {
  if (!any_modules) return "critical";
  if (harmony >= 0.9) return "healthy";
  if (harmony >= 0.5) return "degraded";
  return "critical";
}

void SetHarmony(anima::v1::ConsciousnessState& state) {
  std::vector<anima::v1::ModuleStatus> modules(state.modules().begin(), state.modules().end());
  double harmony = Harmony(modules);
  state.set_harmony(harmony);
  state.set_status(HarmonyStatus(harmony, !modules.empty()));
}

}  // namespace anima
