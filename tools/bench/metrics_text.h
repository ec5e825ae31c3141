#pragma once

#include <optional>
#include <string_view>

namespace anima::bench {

// The value of the unlabelled sample `name` in a Prometheus text exposition: the line
// "name 1.8874368e+07" (an optional timestamp may follow). Comment lines, labelled samples
// ("name{...} v") and longer names that start with `name` do not match. nullopt when there is no
// such line or its value is not a number.
std::optional<double> SampleValue(std::string_view exposition, std::string_view name);

}  // namespace anima::bench
