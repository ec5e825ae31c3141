#include "services/common/flags.h"

#include <cerrno>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace anima::common {

namespace {

std::string DefaultText(const std::variant<std::string*, int*, int64_t*, double*, bool*>& t) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return "\"" + *p + "\"";
        } else if constexpr (std::is_same_v<T, bool>) {
          return *p ? "true" : "false";
        } else {
          std::ostringstream out;
          out << *p;
          return out.str();
        }
      },
      t);
}

}  // namespace

FlagSet::FlagSet(std::string program) : program_(std::move(program)) {}

void FlagSet::AddFlag(std::string name, Target target, std::string env, std::string help) {
  flags_.push_back(Flag{std::move(name), target, std::move(env), "", std::move(help), ""});
  flags_.back().default_text = DefaultText(target);
}

void FlagSet::Add(std::string name, std::string* t, std::string env, std::string help) {
  AddFlag(std::move(name), t, std::move(env), std::move(help));
}
void FlagSet::Add(std::string name, int* t, std::string env, std::string help) {
  AddFlag(std::move(name), t, std::move(env), std::move(help));
}
void FlagSet::Add(std::string name, int64_t* t, std::string env, std::string help) {
  AddFlag(std::move(name), t, std::move(env), std::move(help));
}
void FlagSet::Add(std::string name, double* t, std::string env, std::string help) {
  AddFlag(std::move(name), t, std::move(env), std::move(help));
}
void FlagSet::Add(std::string name, bool* t, std::string env, std::string help) {
  AddFlag(std::move(name), t, std::move(env), std::move(help));
}

void FlagSet::AddEnvFallback(const std::string& name, std::string env) {
  Flag* flag = Find(name);
  // A misspelled name is a bug in the binary, not a user error: fail on every start.
  if (flag == nullptr) throw std::logic_error("AddEnvFallback: no flag --" + name);
  flag->fallback_env = std::move(env);
}

FlagSet::Flag* FlagSet::Find(const std::string& name) {
  for (auto& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

absl::Status FlagSet::Assign(const Flag& flag, const std::string& value,
                             const std::string& source) {
  auto bad = [&](const char* what) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", what, " for --", flag.name, ": \"", value, "\""));
  };
  if (auto* s = std::get_if<std::string*>(&flag.target)) {
    **s = value;
  } else if (auto* i = std::get_if<int*>(&flag.target)) {
    if (!absl::SimpleAtoi(value, *i)) return bad("expected an integer");
  } else if (auto* l = std::get_if<int64_t*>(&flag.target)) {
    if (!absl::SimpleAtoi(value, *l)) return bad("expected an integer");
  } else if (auto* d = std::get_if<double*>(&flag.target)) {
    if (!absl::SimpleAtod(value, *d)) return bad("expected a number");
  } else if (auto* b = std::get_if<bool*>(&flag.target)) {
    if (value == "1" || value == "true" || value == "yes" || value == "on") {
      **b = true;
    } else if (value == "0" || value == "false" || value == "no" || value == "off") {
      **b = false;
    } else {
      return bad("expected true or false");
    }
  }
  return absl::OkStatus();
}

absl::Status FlagSet::Parse(int argc, char** argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return Parse(args);
}

absl::Status FlagSet::Parse(const std::vector<std::string>& args) {
  for (const auto& f : flags_) {
    for (const std::string* env : {&f.env, &f.fallback_env}) {
      if (env->empty()) continue;
      if (const char* v = std::getenv(env->c_str()); v != nullptr && *v != '\0') {
        if (auto s = Assign(f, v, "environment " + *env); !s.ok()) return s;
        break;
      }
    }
  }
  bool only_positional = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (only_positional || arg.size() < 3 || arg.rfind("--", 0) != 0) {
      if (arg == "--") {
        only_positional = true;
        continue;
      }
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (name == "help") {
      help_requested_ = true;
      continue;
    }
    Flag* flag = Find(name);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, "; see --help"));
    }
    if (!has_value) {
      if (std::holds_alternative<bool*>(flag->target)) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
    }
    if (auto s = Assign(*flag, value, "command line"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::string FlagSet::Usage() const {
  std::ostringstream out;
  out << "usage: " << program_ << " [flags]\n\nflags (environment variable in brackets):\n";
  for (const auto& f : flags_) {
    out << "  --" << f.name;
    if (!f.env.empty()) {
      out << " [" << f.env;
      if (!f.fallback_env.empty()) out << ", else " << f.fallback_env;
      out << "]";
    }
    out << "\n      " << f.help << " (default " << f.default_text << ")\n";
  }
  return out.str();
}

}  // namespace anima::common
