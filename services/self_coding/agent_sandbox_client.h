#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/self_coding/cancel_token.h"
#include "services/self_coding/kubernetes_api.h"

namespace anima::broker {
class HttpTransport;
}

namespace anima::selfcoding {

// KubernetesApi and InClusterApi() (where the API server is, from inside a pod) are in
// kubernetes_api.h.

struct AgentSandboxOptions {
  KubernetesApi api;
  // The SandboxWarmPool every claim names (extensions.agents.x-k8s.io/v1beta1 claims always go
  // through a pool; the pool names the SandboxTemplate). A pool of 0 replicas claims cold.
  std::string warm_pool = "anima-runner";
  // Label value naming this replica (the pod name) on every claim it makes, so the claims a
  // crashed predecessor of the same name left are found, and for people reading `kubectl get`.
  std::string replica;
  // How long a claim may take to become Ready with a pod IP before the attempt gives up on it.
  std::chrono::milliseconds ready_timeout{120000};
  // A claim older than this is an orphan whatever its label (an attempt never takes this long);
  // it is also the claim's spec.lifecycle.shutdownTime, so the controller deletes it even if no
  // replica of this service is left to.
  std::chrono::seconds max_age{3600};
  // Poll interval while waiting for readiness.
  std::chrono::milliseconds poll_interval{250};
};

// A claimed sandbox, Ready, with the pod's address.
struct SandboxClaimInfo {
  std::string name;          // the SandboxClaim's name (generated: anima-<random>)
  std::string sandbox_name;  // status.sandbox.name
  std::string pod_ip;        // status.sandbox.podIPs[0]
};

// Creates, waits for and deletes Agent Sandbox claims (extensions.agents.x-k8s.io/v1beta1
// SandboxClaim) over the Kubernetes REST API with the service account's bearer token, verified
// TLS (the cluster CA), and nothing else: no client library. Every claim is labelled
// app.kubernetes.io/managed-by=anima-self-coding, anima.dev/replica=<replica>,
// anima.dev/job=<job id> (sanitised to a label value). The token never appears in a log line or
// an error message. Thread-safe.
class AgentSandboxClient {
 public:
  // `http` is the HTTPS client to use; null: one of its own trusting options.api.ca_file.
  static absl::StatusOr<std::unique_ptr<AgentSandboxClient>> Create(
      AgentSandboxOptions options, std::shared_ptr<broker::HttpTransport> http = nullptr);
  ~AgentSandboxClient();

  // Creates a claim for `job_id` and waits until its Ready condition is True and it has a pod IP,
  // telling `waiting` (optional) the claim's name and its Ready condition's reason/message each
  // time they change. On timeout (DEADLINE_EXCEEDED, naming the claim and the last reason),
  // cancellation (CANCELLED) or any error after creating it, the claim is deleted before
  // returning. A 409 on create (the generated name taken) is retried with a new name; a claim
  // that disappears while waiting is UNAVAILABLE. API errors name the HTTP status and the
  // Status object's message.
  absl::StatusOr<SandboxClaimInfo> Claim(const std::string& job_id, CancelToken* cancel,
                                         const std::function<void(const std::string&)>& waiting);

  // Deletes a claim (propagationPolicy Foreground). OK when it is already gone (404).
  absl::Status Release(const std::string& claim_name);

  // Lists this service's claims (by the managed-by label) and deletes those older than max_age
  // and, when `include_own` (at start: this replica holds none yet), those labelled with this
  // replica. Returns how many it deleted.
  absl::StatusOr<int> DeleteOrphans(bool include_own);

  // Whether the last API call succeeded, and if not why (for the sandbox module's detail).
  absl::Status last_error() const;

 private:
  struct Impl;
  explicit AgentSandboxClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace anima::selfcoding
