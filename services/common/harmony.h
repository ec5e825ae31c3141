#pragma once

#include <vector>

#include "anima/v1/introspection.pb.h"

namespace anima {

// PROTOCOL.md §3: harmony is the mean health of all modules (healthy 1, degraded 0.5, down 0);
// status is "healthy" at 0.9 and above, "degraded" at 0.5 and above, else "critical".
// No modules at all is critical: nothing is known to work.
double Harmony(const std::vector<anima::v1::ModuleStatus>& modules);
const char* HarmonyStatus(double harmony, bool any_modules);
// Sets `state`'s harmony and status from its modules (after the gateway adds its own).
void SetHarmony(anima::v1::ConsciousnessState& state);

}  // namespace anima
