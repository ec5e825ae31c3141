#include "services/self_coding/kubernetes_api.h"

#include <cstdlib>
#include <fstream>
#include <future>
#include <sstream>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"
#include "services/llm_broker/http_client.h"

namespace anima::selfcoding {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr char kServiceAccountDir[] = "/var/run/secrets/kubernetes.io/serviceaccount";
// Bound service account tokens are refreshed by the kubelet well before they expire; re-reading
// this often catches a rotation even where the file's mtime does not change.
constexpr std::chrono::seconds kTokenRefresh{60};
// A LIST of a service's own objects is a few kB per object.
constexpr size_t kMaxResponseBytes = 32 << 20;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buffer;
  if (in) buffer << in.rdbuf();
  if (!in || in.bad()) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  return buffer.str();
}

std::string Trimmed(std::string_view s) {
  return std::string(absl::StripAsciiWhitespace(absl::string_view(s.data(), s.size())));
}

std::string StringField(const nlohmann::json& object, const char* key) {
  if (!object.is_object()) return "";
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

absl::StatusOr<KubernetesApi> InClusterApi() { return InClusterApi(kServiceAccountDir); }

absl::StatusOr<KubernetesApi> InClusterApi(const std::string& service_account_dir) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || *host == '\0' || port == nullptr || *port == '\0') {
    return absl::FailedPreconditionError(
        "not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
        "are not set");
  }
  KubernetesApi api;
  std::string host_part = host;
  if (host_part.find(':') != std::string::npos && host_part.front() != '[') {
    host_part = "[" + host_part + "]";  // an IPv6 address
  }
  api.url = absl::StrCat("https://", host_part, ":", port);
  api.token_file = service_account_dir + "/token";
  api.ca_file = service_account_dir + "/ca.crt";
  for (const std::string& file : {api.token_file, api.ca_file}) {
    if (!fs::exists(file)) {
      return absl::FailedPreconditionError(
          absl::StrCat("no service account credentials: ", file,
                       " is missing (is automountServiceAccountToken false for this pod?)"));
    }
  }
  std::string namespace_file = service_account_dir + "/namespace";
  auto name = ReadFile(namespace_file);
  if (!name.ok() || Trimmed(*name).empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot tell this pod's namespace: ", namespace_file, " is missing or empty"));
  }
  api.namespace_name = Trimmed(*name);
  return api;
}

ApiCancelHook::ApiCancelHook(CancelToken* token) : token_(token) {
  if (token_ != nullptr) id_ = token_->OnCancel([this] { Fire(); });
}

ApiCancelHook::~ApiCancelHook() {
  // Once Remove returns, Fire is not running and never will.
  if (token_ != nullptr) token_->Remove(id_);
}

bool ApiCancelHook::cancelled() {
  std::lock_guard lock(mu_);
  return fired_;
}

void ApiCancelHook::Watch(std::shared_ptr<broker::HttpExchange> exchange) {
  std::lock_guard lock(mu_);
  exchange_ = std::move(exchange);
  if (fired_ && exchange_ != nullptr) exchange_->Cancel();
}

bool ApiCancelHook::SleepUntil(Clock::time_point until) {
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, until, [this] { return fired_; });
  return !fired_;
}

void ApiCancelHook::Fire() {
  std::lock_guard lock(mu_);
  fired_ = true;
  if (exchange_ != nullptr) exchange_->Cancel();
  cv_.notify_all();
}

KubernetesRestClient::KubernetesRestClient(KubernetesApi api,
                                           std::shared_ptr<broker::HttpTransport> http)
    : api_(std::move(api)), http_(std::move(http)) {}

absl::StatusOr<std::unique_ptr<KubernetesRestClient>> KubernetesRestClient::Create(
    KubernetesApi api, std::shared_ptr<broker::HttpTransport> http) {
  while (!api.url.empty() && api.url.back() == '/') api.url.pop_back();
  auto url = broker::ParseUrl(api.url);
  if (!url.ok() || !url->tls || url->target != "/") {
    return absl::InvalidArgumentError(absl::StrCat(
        "Kubernetes API URL must be https://host[:port] (the token goes in every request), got \"",
        api.url, "\""));
  }
  if (http == nullptr) {
    broker::HttpClientOptions options;
    options.ca_file = api.ca_file;
    options.threads = 1;
    auto client = broker::HttpClient::Create(std::move(options));
    if (!client.ok()) return client.status();
    http = *std::move(client);
  }
  std::unique_ptr<KubernetesRestClient> rest(
      new KubernetesRestClient(std::move(api), std::move(http)));
  // A missing token is a configuration error, found now rather than at the first call.
  auto token = rest->Token();
  if (!token.ok()) return token.status();
  return rest;
}

absl::StatusOr<std::string> KubernetesRestClient::Token() {
  std::error_code ec;
  fs::file_time_type mtime = fs::last_write_time(api_.token_file, ec);
  std::lock_guard lock(mu_);
  if (!token_.empty() && !ec && mtime == token_mtime_ &&
      Clock::now() - token_read_at_ < kTokenRefresh) {
    return token_;
  }
  auto content = ReadFile(api_.token_file);
  if (!content.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read the service account token: ", content.status().message()));
  }
  std::string fresh = Trimmed(*content);
  if (fresh.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the service account token file ", api_.token_file, " is empty"));
  }
  token_ = std::move(fresh);
  token_mtime_ = mtime;
  token_read_at_ = Clock::now();
  return token_;
}

absl::StatusOr<ApiResponse> KubernetesRestClient::Call(const std::string& method,
                                                       const std::string& path, std::string body,
                                                       Clock::time_point deadline,
                                                       ApiCancelHook* hook) {
  auto bearer = Token();
  if (!bearer.ok()) return bearer.status();
  broker::HttpRequest request;
  request.method = method;
  request.url = api_.url + path;
  request.headers = {{"Authorization", "Bearer " + *bearer},
                     {"Accept", "application/json"},
                     {"User-Agent", "anima-self-coding/" ANIMA_VERSION}};
  if (!body.empty()) request.headers.emplace_back("Content-Type", "application/json");
  request.body = std::move(body);
  request.deadline = deadline;

  // Shared with the transport's callbacks, which may outlive this frame by a moment.
  struct State {
    ApiResponse response;
    bool too_big = false;
    std::promise<absl::Status> done;
  };
  auto state = std::make_shared<State>();
  std::future<absl::Status> done = state->done.get_future();
  broker::HttpHandler handler;
  handler.on_head = [state](const broker::HttpResponseHead& head) {
    state->response.status = head.status;
  };
  handler.on_body = [state](std::string_view bytes) {
    if (state->response.body.size() + bytes.size() > kMaxResponseBytes) {
      state->too_big = true;
      return;
    }
    state->response.body.append(bytes);
  };
  handler.on_complete = [state](absl::Status status) { state->done.set_value(std::move(status)); };
  auto exchange = http_->Send(std::move(request), std::move(handler));
  if (hook != nullptr) hook->Watch(exchange);
  absl::Status status = done.get();
  if (hook != nullptr) hook->Watch(nullptr);

  std::string what = absl::StrCat("Kubernetes API ", method, " ", path);
  switch (status.code()) {
    case absl::StatusCode::kOk:
      break;
    case absl::StatusCode::kCancelled:
      return absl::CancelledError(absl::StrCat(what, ": cancelled"));
    case absl::StatusCode::kDeadlineExceeded:
      return absl::DeadlineExceededError(absl::StrCat(what, ": ", status.message()));
    default:
      return absl::UnavailableError(absl::StrCat(what, " at ", api_.url, ": ", status.message()));
  }
  if (state->too_big) {
    return absl::UnavailableError(
        absl::StrCat(what, ": response larger than ", kMaxResponseBytes, " bytes"));
  }
  return std::move(state->response);
}

std::string KubernetesRestClient::Describe(const ApiResponse& response) const {
  auto status = nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  std::string reason = StringField(status, "reason");
  std::string message = StringField(status, "message");
  if (message.empty()) {
    message = Trimmed(std::string_view(response.body).substr(0, 200));
    for (char& c : message) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    if (message.empty()) message = "(empty body)";
  }
  std::string text =
      absl::StrCat("HTTP ", response.status, reason.empty() ? "" : " ", reason, ": ", message);
  std::lock_guard lock(mu_);
  if (!token_.empty()) absl::StrReplaceAll({{token_, "<token>"}}, &text);
  return text;
}

}  // namespace anima::selfcoding
