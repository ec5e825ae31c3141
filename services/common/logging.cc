#include "services/common/logging.h"

#include <chrono>
#include <ctime>
#include <memory>

#include "absl/strings/str_cat.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace anima::common {

namespace {

void AppendJsonEscaped(std::string_view in, spdlog::memory_buf_t& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char c : in) {
    switch (c) {
      case '"':
        out.append(std::string_view("\\\""));
        break;
      case '\\':
        out.append(std::string_view("\\\\"));
        break;
      case '\n':
        out.append(std::string_view("\\n"));
        break;
      case '\r':
        out.append(std::string_view("\\r"));
        break;
      case '\t':
        out.append(std::string_view("\\t"));
        break;
      default:
        if (c < 0x20) {
          const char esc[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
          out.append(esc, esc + 6);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
}

// One JSON object per line; the message is escaped so any log text stays valid JSON.
class JsonFormatter final : public spdlog::formatter {
 public:
  explicit JsonFormatter(std::string service) : service_(std::move(service)) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    using namespace std::chrono;
    auto ms = duration_cast<milliseconds>(msg.time.time_since_epoch()).count();
    std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char ts[40];
    std::strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    std::string head = absl::StrCat("{\"ts\":\"", ts, ".", absl::Dec(ms % 1000, absl::kZeroPad3),
                                    "Z\",\"level\":\"");
    dest.append(head.data(), head.data() + head.size());
    auto level = spdlog::level::to_string_view(msg.level);
    dest.append(level.data(), level.data() + level.size());
    dest.append(std::string_view("\",\"service\":\""));
    AppendJsonEscaped(service_, dest);
    dest.append(std::string_view("\",\"msg\":\""));
    AppendJsonEscaped(std::string_view(msg.payload.data(), msg.payload.size()), dest);
    dest.append(std::string_view("\"}\n"));
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>(service_);
  }

 private:
  std::string service_;
};

}  // namespace

absl::Status InitLogging(const std::string& service, const std::string& format,
                         const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--log-level: \"", level, "\" is not one of trace, debug, info, warn, error, off"));
  }
  auto logger =
      std::make_shared<spdlog::logger>(service, std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (format == "json") {
    logger->set_formatter(std::make_unique<JsonFormatter>(service));
  } else if (format == "text") {
    logger->set_pattern(absl::StrCat("%Y-%m-%dT%H:%M:%S.%e %-5l ", service, " %v"));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-format: \"", format, "\" is not one of text, json"));
  }
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return absl::OkStatus();
}

}  // namespace anima::common
