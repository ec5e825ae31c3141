// `anima-cli jobs`: one self_coding_list (docs/protocol.md §6), its answer as a table.
#include <iostream>

#include "tools/cli/command_session.h"
#include "tools/cli/commands.h"
#include "tools/cli/frame_rules.h"
#include "tools/cli/tables.h"

namespace anima::cli {

namespace {

constexpr char kListId[] = "cli-jobs";

class JobsSession : public CommandSession {
 public:
  explicit JobsSession(const CliOptions& options) : CommandSession(options) {}

 private:
  void OnConnected() override {
    nlohmann::json frame = {{"type", "self_coding_list"}, {"id", kListId}};
    if (options().limit != 0) frame["limit"] = options().limit;
    if (!options().status.empty()) frame["status"] = options().status;
    if (options().all) frame["all"] = true;
    Send(frame.dump());
    ArmTimeout(std::chrono::milliseconds(options().timeout_ms > 0 ? options().timeout_ms : 30000));
  }

  void OnFrame(const std::string& text, const nlohmann::json& frame, bool binary) override {
    if (StringField(frame, "id") != kListId) {
      if (options().verbose) std::cerr << "< " << text << "\n";
      return;
    }
    const std::string type = StringField(frame, "type");
    if (type == "error") {
      std::cerr << "error: " << StringField(frame, "code") << ": " << StringField(frame, "message")
                << "\n";
      return Finish(kExitErrorFrame);
    }
    if (options().json || options().compact) {
      PrintFrame(text, frame, options().compact);
    } else {
      std::cout << JobsTable(frame, options().all) << std::flush;
    }
    Finish(kExitOk);
  }
};

}  // namespace

int RunJobs(const CliOptions& options) {
  JobsSession session(options);
  return session.Run();
}

}  // namespace anima::cli
