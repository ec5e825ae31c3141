// FrameTranslator's Render functions: router events and gateway answers to the server frames of
// PROTOCOL.md §3. Keys are written in the order the protocol shows them.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>

#include "gateway/frame_translator.h"
#include "nlohmann/json.hpp"

namespace anima::gateway {

namespace {

using Json = nlohmann::ordered_json;

// Provider text may carry invalid UTF-8; it is replaced rather than failing the frame.
std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

Json Head(std::string_view type, std::string_view id) {
  Json j = Json::object();
  j["type"] = type;
  if (!id.empty()) j["id"] = id;
  return j;
}

Json UsageJson(const anima::v1::Usage& u) {
  Json j = Json::object();
  j["prompt_tokens"] = u.prompt_tokens();
  j["completion_tokens"] = u.completion_tokens();
  j["total_tokens"] = u.total_tokens();
  return j;
}

Json CauseJson(const anima::v1::ProviderCause& c) {
  Json j = Json::object();
  j["provider"] = c.provider();
  j["code"] = c.code();
  j["message"] = c.message();
  if (c.http_status() > 0) j["http_status"] = c.http_status();
  return j;
}

// Of a job's task, what a list shows: its first kTaskPreviewChars characters (whole UTF-8
// sequences), so that a list of long tasks stays small.
constexpr size_t kTaskPreviewChars = 200;

std::string TaskPreview(const std::string& task) {
  size_t chars = 0;
  for (size_t i = 0; i < task.size(); ++i) {
    if ((static_cast<unsigned char>(task[i]) & 0xC0) == 0x80) continue;  // continuation byte
    if (chars++ == kTaskPreviewChars) return task.substr(0, i) + "…";
  }
  return task;
}

// One entry of self_coding_jobs: what the job is and where it stands, without its files
// (self_coding_watch replays the whole job).
Json JobSummary(const anima::v1::Job& job) {
  Json j = Json::object();
  j["job_id"] = job.job_id();
  j["status"] = job.status();
  j["task"] = TaskPreview(job.task());
  j["language"] = job.language();
  j["attempts"] = job.attempts();
  j["last_seq"] = job.last_seq();
  j["created_at"] = job.created_at();
  j["updated_at"] = job.updated_at();
  j["principal"] = job.principal();
  if (job.has_result() && !job.result().reason().empty()) j["reason"] = job.result().reason();
  return j;
}

Json CandidateJson(const anima::v1::Candidate& c) {
  Json j = Json::object();
  j["provider"] = c.provider();
  if (c.has_error()) {
    Json err = Json::object();
    err["code"] = c.error().code();
    err["message"] = c.error().message();
    j["error"] = std::move(err);
    return j;
  }
  j["model"] = c.model();
  j["message"] = c.message();
  j["finish_reason"] = c.finish_reason();
  if (c.has_usage()) j["usage"] = UsageJson(c.usage());
  j["latency_ms"] = c.latency_ms();
  return j;
}

void AddChatResponse(const anima::v1::ChatResponse& r, Json& j) {
  if (!r.conversation_id().empty()) j["conversation_id"] = r.conversation_id();
  j["message"] = r.message();
  j["provider"] = r.provider();
  j["model"] = r.model();
  j["finish_reason"] = r.finish_reason();
  if (r.has_usage()) j["usage"] = UsageJson(r.usage());
  j["latency_ms"] = r.latency_ms();
  if (r.candidates_size() > 0) {
    Json candidates = Json::array();
    for (const auto& c : r.candidates()) candidates.push_back(CandidateJson(c));
    j["candidates"] = std::move(candidates);
  }
}

void AddError(const anima::v1::ErrorEvent& e, Json& j) {
  j["code"] = e.code().empty() ? kInternal : e.code();
  j["message"] = e.message();
  if (!e.limit().empty()) j["limit"] = e.limit();
  if (e.retry_after_ms() > 0) j["retry_after_ms"] = e.retry_after_ms();
  if (e.causes_size() > 0) {
    Json causes = Json::array();
    for (const auto& c : e.causes()) causes.push_back(CauseJson(c));
    j["causes"] = std::move(causes);
  }
}

const char* HealthName(anima::v1::ModuleHealth h) {
  switch (h) {
    case anima::v1::MODULE_HEALTH_HEALTHY:
      return "healthy";
    case anima::v1::MODULE_HEALTH_DEGRADED:
      return "degraded";
    default:
      // An unspecified health is not evidence of health.
      return "down";
  }
}

void AddState(const anima::v1::ConsciousnessState& s, Json& j) {
  j["ts"] = s.ts();
  j["harmony"] = s.harmony();
  j["status"] = s.status();
  Json modules = Json::array();
  for (const auto& m : s.modules()) {
    Json mj = Json::object();
    mj["name"] = m.name();
    mj["service"] = m.service();
    mj["kind"] = m.kind();
    mj["status"] = HealthName(m.health());
    mj["in_flight"] = m.in_flight();
    mj["requests_per_second"] = m.requests_per_second();
    mj["error_rate"] = m.error_rate();
    mj["p95_ms"] = m.p95_ms();
    mj["last_active"] = m.last_active();
    if (!m.detail().empty()) mj["detail"] = m.detail();
    if (!m.counters().empty()) {
      // Sorted by name, so a client (and a test) sees them in a stable order.
      Json counters = Json::object();
      for (const auto& [name, value] : m.counters()) counters[name] = value;
      mj["counters"] = std::move(counters);
    }
    modules.push_back(std::move(mj));
  }
  j["modules"] = std::move(modules);
  const auto& load = s.load();
  Json lj = Json::object();
  lj["connections"] = load.connections();
  Json depth = Json::object();
  for (const char* cls : {"high", "normal", "low"}) {
    auto it = load.queue_depth().find(cls);
    depth[cls] = it == load.queue_depth().end() ? 0 : it->second;
  }
  lj["queue_depth"] = std::move(depth);
  lj["cpu_percent"] = load.cpu_percent();
  lj["rss_bytes"] = load.rss_bytes();
  j["load"] = std::move(lj);
}

void AddResult(const anima::v1::SelfCodingResult& r, Json& j) {
  j["job_id"] = r.job_id();
  j["status"] = r.status();
  j["attempts"] = r.attempts();
  // Files in path order, so the same result always renders the same way.
  std::map<std::string, std::string> sorted(r.files().begin(), r.files().end());
  Json files = Json::object();
  for (const auto& [path, content] : sorted) files[path] = content;
  j["files"] = std::move(files);
  if (r.has_tests()) {
    Json tests = Json::object();
    tests["passed"] = r.tests().passed();
    tests["failed"] = r.tests().failed();
    tests["output_tail"] = r.tests().output_tail();
    j["tests"] = std::move(tests);
  }
  if (r.has_usage()) j["usage"] = UsageJson(r.usage());
  if (!r.reason().empty()) j["reason"] = r.reason();
}

}  // namespace

std::chrono::steady_clock::time_point FrameTranslator::WithoutProviderTime(
    std::chrono::steady_clock::time_point dispatched, std::chrono::steady_clock::time_point now,
    const anima::v1::Event& event) {
  int64_t us = event.has_chat_response() ? event.chat_response().provider_time_us()
               : event.has_error()       ? event.error().provider_time_us()
                                         : 0;
  if (us <= 0) return dispatched;
  return std::min(dispatched + std::chrono::microseconds(us), now);
}

RenderedFrame FrameTranslator::Render(const anima::v1::Event& event, std::string_view id) {
  using anima::v1::Event;
  RenderedFrame out;
  Json j;
  switch (event.body_case()) {
    case Event::kChatDelta:
      out.type = "chat_delta";
      j = Head(out.type, id);
      j["delta"] = event.chat_delta().delta();
      j["index"] = event.chat_delta().index();
      break;
    case Event::kChatResponse:
      out.type = "chat_response";
      out.terminal = true;
      j = Head(out.type, id);
      AddChatResponse(event.chat_response(), j);
      break;
    case Event::kError:
      out.type = "error";
      out.terminal = true;
      j = Head(out.type, id);
      AddError(event.error(), j);
      break;
    case Event::kConsciousnessState:
      out.type = "consciousness_state";
      out.terminal = true;
      j = Head(out.type, id);
      AddState(event.consciousness_state(), j);
      break;
    case Event::kSelfCodingAccepted:
      out.type = "self_coding_accepted";
      j = Head(out.type, id);
      j["job_id"] = event.self_coding_accepted().job_id();
      break;
    case Event::kSelfCodingProgress: {
      const auto& p = event.self_coding_progress();
      out.type = "self_coding_progress";
      j = Head(out.type, id);
      j["job_id"] = p.job_id();
      j["seq"] = p.seq();
      j["stage"] = p.stage();
      j["attempt"] = p.attempt();
      j["percent"] = p.percent();
      j["message"] = p.message();
      j["ts"] = p.ts();
      break;
    }
    case Event::kSelfCodingResult:
      out.type = "self_coding_result";
      out.terminal = true;
      j = Head(out.type, id);
      AddResult(event.self_coding_result(), j);
      break;
    case Event::kSelfCodingJobs: {
      out.type = "self_coding_jobs";
      out.terminal = true;
      j = Head(out.type, id);
      Json jobs = Json::array();
      for (const auto& job : event.self_coding_jobs().jobs()) jobs.push_back(JobSummary(job));
      j["jobs"] = std::move(jobs);
      break;
    }
    case Event::kRawJson: {
      Json raw = Json::parse(event.raw_json(), nullptr, /*allow_exceptions=*/false);
      auto type = raw.is_object() ? raw.find("type") : raw.end();
      if (!raw.is_object() || type == raw.end() || !type->is_string()) {
        out.type = "error";
        out.terminal = true;
        out.text =
            RenderError(kInternal, "a module sent a frame that is not a typed JSON object", id);
        return out;
      }
      out.type = "module";
      if (!id.empty()) raw["id"] = id;
      out.text = Dump(raw);
      return out;
    }
    case Event::BODY_NOT_SET:
      out.type = "error";
      out.terminal = true;
      out.text = RenderError(kInternal, "the router sent an empty event", id);
      return out;
  }
  out.text = Dump(j);
  return out;
}

std::string FrameTranslator::RenderError(const ProtocolError& error) {
  return RenderError(error.code, error.message, error.id);
}

std::string FrameTranslator::RenderError(std::string_view code, std::string_view message,
                                         std::string_view id) {
  Json j = Head("error", id);
  j["code"] = code;
  j["message"] = message;
  return Dump(j);
}

std::string FrameTranslator::RenderRetryLater(std::string_view code, std::string_view message,
                                              std::string_view id, int64_t retry_after_ms) {
  Json j = Head("error", id);
  j["code"] = code;
  j["message"] = message;
  j["retry_after_ms"] = retry_after_ms;
  return Dump(j);
}

std::string FrameTranslator::RenderQuotaExceeded(const QuotaRefusal& refusal, std::string_view id) {
  Json j = Head("error", id);
  j["code"] = kQuotaExceeded;
  j["message"] = refusal.message;
  j["limit"] = refusal.limit;
  j["retry_after_ms"] = std::max<int64_t>(1, refusal.retry_after.count());
  return Dump(j);
}

namespace {

std::string Rfc3339(std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof(buf) - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}

// Counts as integers, dollars as numbers.
Json Amount(const std::string& limit, double v) {
  if (limit.rfind("cost_", 0) == 0) return v;
  return static_cast<int64_t>(std::llround(v));
}

Json TotalsJson(const UsageTotals& t, std::chrono::system_clock::time_point resets_at) {
  Json j = Json::object();
  j["requests"] = t.requests;
  j["tokens"] = t.tokens;
  j["cost_usd"] = t.cost_usd;
  j["resets_at"] = Rfc3339(resets_at);
  return j;
}

}  // namespace

std::string FrameTranslator::RenderUsage(const UsageReport& report, std::string_view id) {
  Json j = Head("usage", id);
  j["principal"] = report.principal;
  if (!report.tier.empty()) j["tier"] = report.tier;
  Json limits = Json::array();
  for (const UsageEntry& e : report.limits) {
    Json l = Json::object();
    l["limit"] = e.limit;
    l["window"] = e.window;
    l["max"] = Amount(e.limit, e.limit_value);
    l["used"] = Amount(e.limit, e.used);
    l["remaining"] = Amount(e.limit, e.remaining);
    l["resets_at"] = e.resets_at ? Json(Rfc3339(*e.resets_at)) : Json(nullptr);
    limits.push_back(std::move(l));
  }
  j["limits"] = std::move(limits);
  j["day"] = TotalsJson(report.day, report.day_resets_at);
  j["month"] = TotalsJson(report.month, report.month_resets_at);
  return Dump(j);
}

std::string FrameTranslator::RenderPong(std::string_view id) { return Dump(Head("pong", id)); }

std::string FrameTranslator::RenderTopics(std::string_view type, std::string_view id,
                                          const std::vector<std::string>& topics) {
  Json j = Head(type, id);
  j["topics"] = topics;
  return Dump(j);
}

std::string FrameTranslator::RenderWelcome(std::string_view session_id, std::string_view principal,
                                           bool admin, const WelcomeLimits& limits) {
  Json j = Json::object();
  j["type"] = "welcome";
  j["session_id"] = session_id;
  j["protocol"] = 1;
  j["server"] = "anima-gateway/0.1.0";
  j["principal"] = principal;
  j["role"] = admin ? "admin" : "user";
  Json l = Json::object();
  l["max_message_bytes"] = limits.max_message_bytes;
  l["max_in_flight"] = limits.max_in_flight;
  l["messages_per_second"] = limits.messages_per_second;
  j["limits"] = std::move(l);
  return Dump(j);
}

}  // namespace anima::gateway
