// Agent Sandbox claims over the Kubernetes REST API: create, wait for Ready, delete, list.
#include "services/self_coding/agent_sandbox_client.h"

#include <chrono>
#include <mutex>
#include <random>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace anima::selfcoding {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr char kApiVersion[] = "extensions.agents.x-k8s.io/v1beta1";
constexpr char kResource[] = "sandboxclaims.extensions.agents.x-k8s.io";
constexpr char kManagedByKey[] = "app.kubernetes.io/managed-by";
constexpr char kManagedBy[] = "anima-self-coding";
constexpr char kReplicaKey[] = "anima.dev/replica";
constexpr char kJobKey[] = "anima.dev/job";
// The managed-by selector, percent-encoded for the query string.
constexpr char kManagedBySelector[] =
    "labelSelector=app.kubernetes.io%2Fmanaged-by%3Danima-self-coding";

// A 64-bit name collides with nothing in practice; a 409 means something else took it (or a
// retried POST that did land), so a few fresh names are plenty.
constexpr int kCreateRetries = 3;
// Release and DeleteOrphans have no caller deadline; the API server answers in milliseconds.
constexpr std::chrono::seconds kApiCallTimeout{15};
// Deleting a claim after a failed attempt: best effort, as the claim's shutdownTime and the next
// DeleteOrphans catch what this misses, so a hung API server does not hold the attempt long.
constexpr std::chrono::seconds kCleanupTimeout{5};

bool IsAlnum(char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)); }

// A valid label value for anything: at most 63 characters of [A-Za-z0-9._-] starting and ending
// with an alphanumeric (possibly empty). Other characters become '-'.
std::string LabelValue(const std::string& raw) {
  std::string out;
  for (char c : raw) {
    if (out.size() == 63) break;
    out += IsAlnum(c) || c == '.' || c == '_' || c == '-' ? c : '-';
  }
  size_t begin = 0;
  while (begin < out.size() && !IsAlnum(out[begin])) ++begin;
  size_t end = out.size();
  while (end > begin && !IsAlnum(out[end - 1])) --end;
  return out.substr(begin, end - begin);
}

// An RFC 1123 label, as namespace names are; it is also put in URL paths unescaped.
bool IsDnsLabel(const std::string& s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') return false;
  for (char c : s) {
    if (!(absl::ascii_islower(static_cast<unsigned char>(c)) ||
          absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '-')) {
      return false;
    }
  }
  return true;
}

std::string NewClaimName() {
  std::random_device random;
  uint64_t bits = (static_cast<uint64_t>(random()) << 32) | random();
  return absl::StrFormat("anima-%016x", bits);
}

// Field access that never throws on a document of the wrong shape.
const json* Member(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}
std::string StringMember(const json& object, const char* key) {
  const json* value = Member(object, key);
  return value != nullptr && value->is_string() ? value->get<std::string>() : "";
}
const json& ObjectMember(const json& object, const char* key) {
  static const json kEmpty = json::object();
  const json* value = Member(object, key);
  return value != nullptr && value->is_object() ? *value : kEmpty;
}

// What a claim's status says about it.
struct ClaimState {
  bool ready = false;
  bool deleting = false;  // metadata.deletionTimestamp is set: it is going away
  std::string reason;     // of the Ready condition ("" before the controller set one)
  std::string message;
  std::string sandbox_name;  // status.sandbox.name
  std::string pod_ip;        // status.sandbox.podIPs[0]
};

ClaimState ParseClaimState(const json& claim) {
  ClaimState state;
  state.deleting = !StringMember(ObjectMember(claim, "metadata"), "deletionTimestamp").empty();
  const json& status = ObjectMember(claim, "status");
  const json* conditions = Member(status, "conditions");
  if (conditions != nullptr && conditions->is_array()) {
    for (const json& condition : *conditions) {
      if (StringMember(condition, "type") != "Ready") continue;
      state.ready = StringMember(condition, "status") == "True";
      state.reason = StringMember(condition, "reason");
      state.message = StringMember(condition, "message");
    }
  }
  const json& sandbox = ObjectMember(status, "sandbox");
  state.sandbox_name = StringMember(sandbox, "name");
  const json* ips = Member(sandbox, "podIPs");
  if (ips != nullptr && ips->is_array() && !ips->empty() && (*ips)[0].is_string()) {
    state.pod_ip = (*ips)[0].get<std::string>();
  }
  return state;
}

}  // namespace

struct AgentSandboxClient::Impl {
  AgentSandboxOptions options;
  std::unique_ptr<KubernetesRestClient> rest;
  std::string replica_label;
  std::string collection_path;  // /apis/.../namespaces/{ns}/sandboxclaims

  mutable std::mutex mu;
  absl::Status last_error;  // guarded by mu

  absl::Status Record(absl::Status status) {
    std::lock_guard lock(mu);
    last_error = status;
    return status;
  }
  void RecordOk() {
    std::lock_guard lock(mu);
    last_error = absl::OkStatus();
  }

  // A call whose failure to get an answer counts for last_error(), except a cancellation and,
  // when `deadline` is the attempt's (`attempt_deadline`), its passing: neither is the API's
  // doing, and a pool without a free pod must not read as API trouble.
  absl::StatusOr<ApiResponse> Call(const std::string& method, const std::string& path,
                                   std::string body, Clock::time_point deadline,
                                   ApiCancelHook* hook, bool attempt_deadline = false) {
    auto response = rest->Call(method, path, std::move(body), deadline, hook);
    if (response.ok()) return response;
    absl::StatusCode code = response.status().code();
    if (code == absl::StatusCode::kCancelled ||
        (attempt_deadline && code == absl::StatusCode::kDeadlineExceeded)) {
      return response;
    }
    return Record(response.status());
  }

  // The error for an unsuccessful answer to `verb` ("create", "list", ...) on sandboxclaims.
  absl::Status Failure(const ApiResponse& response, const std::string& verb) const {
    std::string detail = rest->Describe(response);
    const std::string& ns = options.api.namespace_name;
    switch (response.status) {
      case 401:
      case 403:
        return absl::PermissionDeniedError(
            absl::StrCat("the service account may not ", verb, " sandboxclaims in namespace ", ns,
                         " (check its token and its RBAC Role and RoleBinding): ", detail));
      case 404: {
        json status = json::parse(response.body, nullptr, /*allow_exceptions=*/false);
        if (StringMember(ObjectMember(status, "details"), "kind") == "namespaces") {
          return absl::FailedPreconditionError(
              absl::StrCat("namespace ", ns, " does not exist: ", detail));
        }
        return absl::FailedPreconditionError(
            absl::StrCat("Agent Sandbox is not installed (no ", kResource, "): ", detail));
      }
      case 409:
        return absl::AlreadyExistsError(absl::StrCat("cannot ", verb, " sandboxclaim: ", detail));
      case 400:
      case 422:
        return absl::InvalidArgumentError(
            absl::StrCat("the API server refused to ", verb, " a sandboxclaim: ", detail));
      default:
        if (response.status == 429 || response.status >= 500) {
          return absl::UnavailableError(
              absl::StrCat("Kubernetes API (", verb, " sandboxclaims): ", detail));
        }
        return absl::UnknownError(
            absl::StrCat("Kubernetes API (", verb, " sandboxclaims): ", detail));
    }
  }

  std::string ClaimPath(const std::string& name) const {
    return absl::StrCat(collection_path, "/", name);
  }

  std::string ClaimBody(const std::string& name, const std::string& job_id) const {
    absl::Time shutdown = absl::Now() + absl::FromChrono(options.max_age);
    json claim = {
        {"apiVersion", kApiVersion},
        {"kind", "SandboxClaim"},
        {"metadata",
         {{"name", name},
          {"labels",
           {{kManagedByKey, kManagedBy},
            {kReplicaKey, replica_label},
            {kJobKey, LabelValue(job_id)}}}}},
        {"spec",
         {{"warmPoolRef", {{"name", options.warm_pool}}},
          {"lifecycle",
           {{"shutdownTime", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", shutdown, absl::UTCTimeZone())},
            {"shutdownPolicy", "Delete"}}}}}};
    return claim.dump();
  }

  // Deletes a claim: true when deleted, false when it was already gone. `record_success`: false
  // for the clean-up after a failed attempt, whose success must not hide the failure from
  // last_error().
  absl::StatusOr<bool> Delete(const std::string& name, std::chrono::seconds timeout,
                              bool record_success = true) {
    json options_body = {
        {"kind", "DeleteOptions"}, {"apiVersion", "v1"}, {"propagationPolicy", "Foreground"}};
    auto response =
        Call("DELETE", ClaimPath(name), options_body.dump(), Clock::now() + timeout, nullptr);
    if (!response.ok()) return response.status();
    if (!response->ok() && response->status != 404) return Record(Failure(*response, "delete"));
    if (record_success) RecordOk();
    if (response->status == 404) return false;
    spdlog::info("deleted sandbox claim {}", name);
    return true;
  }

  // After a failed attempt: the claim must not hold a pod. Failures are logged, not returned:
  // the attempt's own error is what the caller needs.
  void DeleteQuietly(const std::string& name) {
    auto deleted = Delete(name, kCleanupTimeout, /*record_success=*/false);
    if (!deleted.ok()) {
      spdlog::warn(
          "could not delete sandbox claim {} (its shutdownTime or the next orphan sweep "
          "will): {}",
          name, std::string(deleted.status().message()));
    }
  }

  // POSTs a new claim for `job_id`, with a fresh name on each 409. Returns its name.
  absl::StatusOr<std::string> CreateClaim(const std::string& job_id, Clock::time_point deadline,
                                          ApiCancelHook& hook) {
    absl::Status failure;
    for (int attempt = 0; attempt <= kCreateRetries; ++attempt) {
      std::string name = NewClaimName();
      auto response = Call("POST", collection_path, ClaimBody(name, job_id), deadline, &hook,
                           /*attempt_deadline=*/true);
      if (!response.ok()) {
        absl::StatusCode code = response.status().code();
        if (code != absl::StatusCode::kCancelled && code != absl::StatusCode::kDeadlineExceeded &&
            code != absl::StatusCode::kUnavailable) {
          return response.status();  // not sent (no token)
        }
        // The request may have landed before the failure: make sure no claim is left behind.
        DeleteQuietly(name);
        return absl::Status(
            code, absl::StrCat("creating sandbox claim ", name, ": ", response.status().message()));
      }
      if (response->ok()) {
        RecordOk();
        return name;
      }
      failure = Record(Failure(*response, "create"));
      if (response->status == 409) {
        spdlog::warn("sandbox claim name {} is taken, trying another: {}", name,
                     std::string(failure.message()));
        continue;
      }
      // A 5xx may come after the claim was stored (an etcd timeout, say).
      if (response->status >= 500) DeleteQuietly(name);
      return failure;
    }
    return failure;
  }
};

AgentSandboxClient::AgentSandboxClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AgentSandboxClient::~AgentSandboxClient() = default;

absl::StatusOr<std::unique_ptr<AgentSandboxClient>> AgentSandboxClient::Create(
    AgentSandboxOptions options, std::shared_ptr<broker::HttpTransport> http) {
  if (!IsDnsLabel(options.api.namespace_name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Kubernetes namespace \"", options.api.namespace_name, "\" is not a valid namespace name"));
  }
  if (options.warm_pool.empty()) {
    return absl::InvalidArgumentError("no SandboxWarmPool named for the sandbox claims");
  }
  std::string replica_label = LabelValue(options.replica);
  if (replica_label.empty()) {
    return absl::InvalidArgumentError(
        "the replica name (the pod name) is needed to label sandbox claims");
  }
  if (options.ready_timeout <= std::chrono::milliseconds::zero() ||
      options.poll_interval <= std::chrono::milliseconds::zero() ||
      options.max_age <= std::chrono::seconds::zero()) {
    return absl::InvalidArgumentError(
        "sandbox claim ready_timeout, poll_interval and max_age must be positive");
  }
  auto rest = KubernetesRestClient::Create(options.api, std::move(http));
  if (!rest.ok()) return rest.status();
  auto impl = std::make_unique<Impl>();
  impl->collection_path = absl::StrCat("/apis/", kApiVersion, "/namespaces/",
                                       options.api.namespace_name, "/sandboxclaims");
  impl->replica_label = std::move(replica_label);
  impl->options = std::move(options);
  impl->rest = *std::move(rest);
  return std::unique_ptr<AgentSandboxClient>(new AgentSandboxClient(std::move(impl)));
}

absl::StatusOr<SandboxClaimInfo> AgentSandboxClient::Claim(
    const std::string& job_id, CancelToken* cancel,
    const std::function<void(const std::string&)>& waiting) {
  Impl& impl = *impl_;
  const auto started = Clock::now();
  const auto deadline = started + impl.options.ready_timeout;
  ApiCancelHook hook(cancel);
  if (hook.cancelled()) return absl::CancelledError("cancelled before claiming a sandbox");
  auto created = impl.CreateClaim(job_id, deadline, hook);
  if (!created.ok()) return created.status();
  const std::string name = *created;
  spdlog::info("created sandbox claim {} (pool {}) for job {}", name, impl.options.warm_pool,
               LabelValue(job_id));
  std::string prefix = absl::StrCat("waiting for a sandbox pod (claim ", name, ")");
  if (waiting) waiting(prefix);

  // Whatever ends the wait other than success deletes the claim first.
  auto give_up = [&](absl::Status status) {
    impl.DeleteQuietly(name);
    return status;
  };
  std::string last_condition;  // "reason: message" of Ready, as last reported
  std::string transient;       // the last API error tolerated while polling
  auto timed_out = [&] {
    std::string last = last_condition.empty() ? "no Ready condition yet" : last_condition;
    if (!transient.empty()) absl::StrAppend(&last, "; last API error: ", transient);
    return give_up(absl::DeadlineExceededError(
        absl::StrCat("sandbox claim ", name, " was not Ready with a pod IP within ",
                     impl.options.ready_timeout.count(), " ms (", last, ")")));
  };
  auto cancelled = [&] {
    return give_up(absl::CancelledError(absl::StrCat("cancelled while waiting for claim ", name)));
  };

  while (true) {
    if (hook.cancelled()) return cancelled();
    auto response =
        impl.Call("GET", impl.ClaimPath(name), "", deadline, &hook, /*attempt_deadline=*/true);
    if (!response.ok()) {
      switch (response.status().code()) {
        case absl::StatusCode::kCancelled:
          return cancelled();
        case absl::StatusCode::kDeadlineExceeded:
          return timed_out();
        case absl::StatusCode::kUnavailable:
          // A blip of the API server or the network; the deadline bounds how long it may last.
          transient = std::string(response.status().message());
          break;
        default:
          return give_up(response.status());
      }
    } else if (response->status == 404) {
      impl.RecordOk();
      return absl::UnavailableError(absl::StrCat(
          "sandbox claim ", name,
          " disappeared while waiting for it to become Ready (deleted by someone else, or "
          "expired)"));
    } else if (response->status == 429 || response->status >= 500) {
      transient = std::string(impl.Record(impl.Failure(*response, "get")).message());
    } else if (!response->ok()) {
      return give_up(impl.Record(impl.Failure(*response, "get")));
    } else {
      impl.RecordOk();
      json claim = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
      if (!claim.is_object()) {
        return give_up(impl.Record(absl::UnavailableError(
            absl::StrCat("Kubernetes API GET ", impl.ClaimPath(name), ": not a JSON object"))));
      }
      ClaimState state = ParseClaimState(claim);
      if (state.deleting) {
        return absl::UnavailableError(absl::StrCat(
            "sandbox claim ", name, " is being deleted while waiting for it to become Ready (",
            state.reason, state.message.empty() ? "" : ": ", state.message, ")"));
      }
      if (state.ready && !state.pod_ip.empty()) {
        auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
        spdlog::info("sandbox claim {} is Ready: sandbox {}, pod IP {} (after {} ms)", name,
                     state.sandbox_name, state.pod_ip, waited.count());
        return SandboxClaimInfo{name, state.sandbox_name, state.pod_ip};
      }
      std::string condition = state.reason;
      if (!state.message.empty()) absl::StrAppend(&condition, ": ", state.message);
      if (state.ready) condition = "Ready but no pod IP yet";
      if (condition != last_condition) {
        last_condition = condition;
        spdlog::debug("sandbox claim {}: {}", name, condition);
        if (waiting && !condition.empty()) waiting(absl::StrCat(prefix, ": ", condition));
      }
    }
    auto now = Clock::now();
    if (now >= deadline) return timed_out();
    if (!hook.SleepUntil(std::min(deadline, now + impl.options.poll_interval))) {
      return cancelled();
    }
  }
}

absl::Status AgentSandboxClient::Release(const std::string& claim_name) {
  auto deleted = impl_->Delete(claim_name, kApiCallTimeout);
  if (!deleted.ok()) return deleted.status();
  if (!*deleted) spdlog::debug("sandbox claim {} was already gone", claim_name);
  return absl::OkStatus();
}

absl::StatusOr<int> AgentSandboxClient::DeleteOrphans(bool include_own) {
  Impl& impl = *impl_;
  auto response = impl.Call("GET", absl::StrCat(impl.collection_path, "?", kManagedBySelector), "",
                            Clock::now() + kApiCallTimeout, nullptr);
  if (!response.ok()) return response.status();
  if (!response->ok()) return impl.Record(impl.Failure(*response, "list"));
  json list = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  const json* items = Member(list, "items");
  if (items == nullptr || !items->is_array()) {
    return impl.Record(
        absl::UnavailableError("Kubernetes API: a sandboxclaims list without items"));
  }
  impl.RecordOk();

  const absl::Time now = absl::Now();
  const absl::Duration max_age = absl::FromChrono(impl.options.max_age);
  int deleted = 0;
  int wanted = 0;
  absl::Status failure;
  for (const json& item : *items) {
    const json& metadata = ObjectMember(item, "metadata");
    std::string name = StringMember(metadata, "name");
    if (name.empty() || !StringMember(metadata, "deletionTimestamp").empty()) continue;
    absl::Time created;
    std::string error;
    bool old = absl::ParseTime(absl::RFC3339_full, StringMember(metadata, "creationTimestamp"),
                               &created, &error) &&
               now - created > max_age;
    bool own = include_own &&
               StringMember(ObjectMember(metadata, "labels"), kReplicaKey) == impl.replica_label;
    if (!old && !own) continue;
    ++wanted;
    spdlog::info("deleting orphaned sandbox claim {} ({})", name,
                 old ? "older than the longest attempt" : "left by this replica's predecessor");
    auto result = impl.Delete(name, kApiCallTimeout);
    if (!result.ok()) {
      failure = result.status();
    } else if (*result) {
      ++deleted;
    }
  }
  if (!failure.ok()) {
    return absl::Status(failure.code(),
                        absl::StrCat("deleted ", deleted, " of ", wanted,
                                     " orphaned sandbox claims: ", failure.message()));
  }
  return deleted;
}

absl::Status AgentSandboxClient::last_error() const {
  std::lock_guard lock(impl_->mu);
  return impl_->last_error;
}

}  // namespace anima::selfcoding
