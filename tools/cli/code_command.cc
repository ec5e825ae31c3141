// `anima-cli code` and `anima-cli watch`: a self-coding job followed to its result, with a live
// progress bar on a terminal and one plain line per event otherwise.
#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "tools/cli/command_session.h"
#include "tools/cli/commands.h"
#include "tools/cli/frame_rules.h"
#include "tools/cli/job_progress.h"

namespace anima::cli {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

// A job may run for its router deadline (30 minutes by default); --timeout-ms shortens the wait.
constexpr std::chrono::milliseconds kDefaultJobTimeout{30 * 60 * 1000};
constexpr char kRequestId[] = "code";

bool StdoutIsTerminal() { return ::isatty(STDOUT_FILENO) == 1; }

int TerminalWidth() {
  winsize size{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 80;
}

std::optional<std::string> ReadWholeFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The regular files under `dir`, by path relative to it ('/'-separated). Symlinks are not
// followed (a link out of the tree would send files the user did not mean to).
absl::StatusOr<json> ReadFilesDir(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return absl::InvalidArgumentError("--files: not a directory: " + dir);
  json files = json::object();
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    if (it->is_symlink(ec) || !it->is_regular_file(ec)) continue;
    auto content = ReadWholeFile(it->path());
    if (!content) return absl::InvalidArgumentError("--files: cannot read " + it->path().string());
    files[fs::relative(it->path(), dir).generic_string()] = *content;
  }
  if (ec) return absl::InvalidArgumentError("--files: " + dir + ": " + ec.message());
  return files;
}

// A result's file path is the server's word: only a plain relative path inside --out is written.
std::optional<fs::path> SafeOutputPath(const fs::path& out, const std::string& name) {
  fs::path relative = fs::path(name).lexically_normal();
  if (name.empty() || relative.is_absolute() || relative.has_root_name() || relative.empty() ||
      name.find('\0') != std::string::npos) {
    return std::nullopt;
  }
  for (const auto& part : relative) {
    if (part == ".." || part == ".") return std::nullopt;
  }
  return out / relative;
}

// Follows one job: the request (code) or a watch (watch) is the first frame; progress is drawn
// until self_coding_result, which is printed (and its files written with --out).
class JobSession : public CommandSession {
 public:
  JobSession(const CliOptions& options, json first_frame, std::string job_id)
      : CommandSession(options),
        first_frame_(std::move(first_frame)),
        job_id_(std::move(job_id)),
        progress_(options.max_attempts),
        terminal_(StdoutIsTerminal()),
        ticker_(io()) {
    if (options.after_seq > 0) {
      // The events up to after_seq were seen before: a bar continues from there.
      json seen = {{"seq", options.after_seq}};
      progress_.Update(seen);
    }
  }

 private:
  void OnConnected() override {
    started_ = Clock::now();
    Send(first_frame_.dump());
    ArmTimeout(options().timeout_ms > 0 ? std::chrono::milliseconds(options().timeout_ms)
                                        : kDefaultJobTimeout);
    if (terminal_) Tick();
  }

  void OnFrame(const std::string& text, const json& frame, bool binary) override {
    if (binary || StringField(frame, "id") != kRequestId) {
      if (options().verbose) std::cerr << "< " << text << "\n";
      return;
    }
    const std::string type = StringField(frame, "type");
    if (type == "self_coding_accepted") {
      job_id_ = StringField(frame, "job_id");
      Say(absl::StrCat("job ", Printable(job_id_), " accepted"));
    } else if (type == "self_coding_progress") {
      if (job_id_.empty()) job_id_ = StringField(frame, "job_id");
      if (!progress_.Update(frame)) return;
      if (terminal_) {
        Draw();
      } else {
        std::cout << progress_.Line(Seconds()) << "\n" << std::flush;
      }
    } else if (type == "self_coding_result") {
      ClearBar();
      PrintResult(frame);
      Finish(StringField(frame, "status") == "succeeded" ? kExitOk : kExitErrorFrame);
    } else if (type == "error") {
      ClearBar();
      std::cerr << "anima-cli: " << Printable(StringField(frame, "code")) << ": "
                << Printable(StringField(frame, "message")) << "\n";
      Finish(kExitErrorFrame);
    }
  }

  void OnTimeout() override {
    ClearBar();
    std::cerr << "anima-cli: timed out; the job goes on" << WatchHint() << "\n";
    Finish(kExitTimeout);
  }

  void OnInterrupt() override {
    ClearBar();
    std::cerr << "anima-cli: interrupted; the job goes on" << WatchHint() << "\n";
    Finish(kExitInterrupted);
  }

  void OnConnectionLost() override {
    ClearBar();
    if (!job_id_.empty()) std::cerr << "anima-cli: the job goes on" << WatchHint() << "\n";
  }

  std::string WatchHint() const {
    if (job_id_.empty()) return "";
    return absl::StrCat(" (follow it again: anima-cli watch ", Printable(job_id_), " --after ",
                        progress_.last_seq(), ")");
  }

  std::chrono::seconds Seconds() const {
    return std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_);
  }

  // A line of its own, above the bar on a terminal.
  void Say(const std::string& text) {
    ClearBar();
    std::cout << text << "\n";
    if (terminal_) Draw();
    std::cout.flush();
  }

  void Draw() {
    std::cout << "\r" << progress_.Bar(Seconds(), TerminalWidth() - 1) << "\x1b[K" << std::flush;
    bar_shown_ = true;
  }

  void ClearBar() {
    if (!bar_shown_) return;
    std::cout << "\r\x1b[K" << std::flush;
    bar_shown_ = false;
  }

  // The elapsed time moves even when no event comes.
  void Tick() {
    ticker_.expires_after(std::chrono::seconds(1));
    ticker_.async_wait([this](boost::system::error_code ec) {
      if (ec || finished()) return;
      Draw();
      Tick();
    });
  }

  void PrintResult(const json& result) {
    ticker_.cancel();
    const std::string status = StringField(result, "status");
    std::string summary = absl::StrCat(Printable(status));
    if (auto a = result.find("attempts"); a != result.end() && a->is_number_integer()) {
      absl::StrAppend(&summary, " after ", a->get<int64_t>(),
                      a->get<int64_t>() == 1 ? " attempt" : " attempts");
    }
    absl::StrAppend(&summary, " in ", Elapsed(Seconds()));
    const json& tests = result.contains("tests") ? result["tests"] : json();
    if (tests.is_object()) {
      absl::StrAppend(&summary, "; tests ", tests.value("passed", 0), " passed, ",
                      tests.value("failed", 0), " failed");
    }
    std::cout << summary << "\n";
    if (std::string reason = StringField(result, "reason"); !reason.empty()) {
      std::cout << "reason: " << Printable(reason) << "\n";
    }
    if (status != "succeeded" && tests.is_object()) {
      auto tail = tests.find("output_tail");
      if (tail != tests.end() && tail->is_string() && !tail->get<std::string>().empty()) {
        std::cout << "--- output tail\n" << tail->get<std::string>() << "\n---\n";
      }
    }
    auto files = result.find("files");
    if (files == result.end() || !files->is_object()) return;
    if (options().out_dir.empty()) {
      for (const auto& [name, content] : files->items()) {
        if (!content.is_string()) continue;
        std::cout << "==> " << Printable(name) << " <==\n" << content.get<std::string>();
        if (!content.get<std::string>().empty() && content.get<std::string>().back() != '\n') {
          std::cout << "\n";
        }
      }
      return;
    }
    WriteFiles(*files);
  }

  void WriteFiles(const json& files) {
    const fs::path out(options().out_dir);
    for (const auto& [name, content] : files.items()) {
      auto path = SafeOutputPath(out, name);
      if (!path || !content.is_string()) {
        std::cerr << "anima-cli: not written (not a plain relative path): " << Printable(name)
                  << "\n";
        continue;
      }
      std::error_code ec;
      fs::create_directories(path->parent_path(), ec);
      std::ofstream file(*path, std::ios::binary | std::ios::trunc);
      file << content.get<std::string>();
      if (ec || !file.flush()) {
        std::cerr << "anima-cli: cannot write " << path->string() << "\n";
        continue;
      }
      std::cout << "wrote " << path->string() << " (" << content.get<std::string>().size()
                << " bytes)\n";
    }
  }

  json first_frame_;
  std::string job_id_;
  JobProgress progress_;
  const bool terminal_;
  boost::asio::steady_timer ticker_;
  Clock::time_point started_ = Clock::now();
  bool bar_shown_ = false;
};

}  // namespace

int RunCode(const CliOptions& options, const std::vector<std::string>& task_words) {
  json request = json::object();
  if (!options.request_file.empty()) {
    auto text = ReadWholeFile(options.request_file);
    json from_file = text ? json::parse(*text, nullptr, false) : json();
    if (!from_file.is_object()) {
      std::cerr << "anima-cli: --request: " << options.request_file
                << (text ? " is not a JSON object" : ": cannot read") << "\n";
      return kExitUsage;
    }
    for (const char* field : {"task", "language", "tests", "files", "max_attempts"}) {
      if (from_file.contains(field)) request[field] = from_file[field];
    }
  }
  std::string task;
  for (const auto& w : task_words) absl::StrAppend(&task, task.empty() ? "" : " ", w);
  if (!task.empty()) request["task"] = task;
  if (!request.contains("task")) {
    std::cerr << "anima-cli: code needs a task: anima-cli code \"what to write\" (or --request)\n";
    return kExitUsage;
  }
  request["type"] = "self_coding_request";
  request["id"] = kRequestId;
  if (!options.language.empty()) request["language"] = options.language;
  if (options.max_attempts > 0) request["max_attempts"] = options.max_attempts;
  if (!options.tests_file.empty()) {
    auto tests = ReadWholeFile(options.tests_file);
    if (!tests) {
      std::cerr << "anima-cli: --tests: cannot read " << options.tests_file << "\n";
      return kExitUsage;
    }
    request["tests"] = *tests;
  }
  if (!options.files_dir.empty()) {
    auto files = ReadFilesDir(options.files_dir);
    if (!files.ok()) {
      std::cerr << "anima-cli: " << files.status().message() << "\n";
      return kExitUsage;
    }
    request["files"] = *std::move(files);
  }
  // The bar shows "attempt N/M": M is the request's, else the service's default (PROTOCOL.md).
  CliOptions effective = options;
  auto m = request.find("max_attempts");
  effective.max_attempts = m != request.end() && m->is_number_integer() ? m->get<int>() : 3;
  return JobSession(effective, std::move(request), "").Run();
}

int RunWatch(const CliOptions& options, const std::vector<std::string>& args) {
  if (args.size() != 1) {
    std::cerr << "anima-cli: watch takes one job id: anima-cli watch JOB [--after SEQ]\n";
    return kExitUsage;
  }
  json watch = {{"type", "self_coding_watch"}, {"id", kRequestId}, {"job_id", args[0]}};
  if (options.after_seq > 0) watch["after_seq"] = options.after_seq;
  return JobSession(options, std::move(watch), args[0]).Run();
}

}  // namespace anima::cli
