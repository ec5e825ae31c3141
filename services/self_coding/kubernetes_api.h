#pragma once

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/self_coding/cancel_token.h"

namespace anima::broker {
class HttpExchange;
class HttpTransport;
}  // namespace anima::broker

namespace anima::selfcoding {

// How to reach the Kubernetes API server.
struct KubernetesApi {
  std::string url;         // https://10.0.0.1:443 (no trailing slash)
  std::string token_file;  // the bearer token, re-read when it changes (bound tokens rotate)
  std::string ca_file;     // PEM bundle the API server's certificate must chain to
  std::string namespace_name;
};

// In a pod: KUBERNETES_SERVICE_HOST/PORT and the mounted service account
// (/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}). An error says what
// is missing (not in a pod, or automountServiceAccountToken: false).
absl::StatusOr<KubernetesApi> InClusterApi();
// The same with the service account's files in `service_account_dir` (for tests).
absl::StatusOr<KubernetesApi> InClusterApi(const std::string& service_account_dir);

// Lets a job's CancelToken end a blocking wait on the API at once: it wakes SleepUntil and
// cancels the call in flight. Register one for a whole wait, not one per call, so a long wait
// does not grow the token's callback list a poll at a time.
class ApiCancelHook {
 public:
  explicit ApiCancelHook(CancelToken* token);  // null: never cancelled
  ~ApiCancelHook();
  ApiCancelHook(const ApiCancelHook&) = delete;
  ApiCancelHook& operator=(const ApiCancelHook&) = delete;

  bool cancelled();
  // The exchange to cancel when the token fires (null: none in flight).
  void Watch(std::shared_ptr<broker::HttpExchange> exchange);
  // Sleeps until `until`; false when cancelled.
  bool SleepUntil(std::chrono::steady_clock::time_point until);

 private:
  void Fire();  // runs under the token's lock: quick, and never touches the token

  CancelToken* token_;
  int id_ = -1;
  std::mutex mu_;
  std::condition_variable cv_;
  bool fired_ = false;
  std::shared_ptr<broker::HttpExchange> exchange_;
};

// An HTTP answer from the API server.
struct ApiResponse {
  int status = 0;
  std::string body;
  bool ok() const { return status >= 200 && status < 300; }
};

// Blocking calls to one API server with the service account's bearer token (read from
// api.token_file, again when its mtime changes and at least every minute, as bound tokens
// rotate), over verified TLS. The token never appears in a log line or an error message.
// Thread-safe; callers are worker threads.
class KubernetesRestClient {
 public:
  // `http` null: an HttpClient of its own trusting api.ca_file (empty: the system's CA bundle,
  // for an API server with a public certificate). Refuses a URL that is not
  // https://host[:port] and a token file it cannot read.
  static absl::StatusOr<std::unique_ptr<KubernetesRestClient>> Create(
      KubernetesApi api, std::shared_ptr<broker::HttpTransport> http);

  // `method` `path` (from /apis/... or /api/..., with any query) with a JSON `body` (empty:
  // none). Any HTTP answer is a response for the caller to judge; an error status is a call
  // that got none: UNAVAILABLE (connect, TLS, reset), DEADLINE_EXCEEDED (`deadline` passed),
  // CANCELLED (`hook` fired), FAILED_PRECONDITION (the token file unreadable). Messages name the
  // method and path.
  absl::StatusOr<ApiResponse> Call(const std::string& method, const std::string& path,
                                   std::string body, std::chrono::steady_clock::time_point deadline,
                                   ApiCancelHook* hook);

  // "HTTP 409 AlreadyExists: <the Status object's message>", or the start of a body that is not a
  // Status, with the token blanked out (an error page echoing the request's headers must not carry
  // it into an error message).
  std::string Describe(const ApiResponse& response) const;

  const KubernetesApi& api() const { return api_; }

 private:
  KubernetesRestClient(KubernetesApi api, std::shared_ptr<broker::HttpTransport> http);
  absl::StatusOr<std::string> Token();

  const KubernetesApi api_;
  const std::shared_ptr<broker::HttpTransport> http_;
  mutable std::mutex mu_;
  std::string token_;  // guarded by mu_, as are the two below
  std::filesystem::file_time_type token_mtime_;
  std::chrono::steady_clock::time_point token_read_at_;
};

}  // namespace anima::selfcoding
