#include "gateway/access_policy.h"

#include <algorithm>

#include <cctype>
#include <vector>

namespace anima::gateway {

namespace {

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

AccessPolicy::AccessPolicy(std::shared_ptr<Authenticator> auth, Options options, Clock clock)
    : auth_(std::move(auth)), options_(std::move(options)), clock_(std::move(clock)) {}

std::string AccessPolicy::ClientAddress(std::string_view peer,
                                        std::string_view forwarded_for) const {
  if (options_.forwarded_hops <= 0 || forwarded_for.empty()) return std::string(peer);
  std::vector<std::string_view> entries;
  size_t start = 0;
  while (start <= forwarded_for.size()) {
    size_t comma = forwarded_for.find(',', start);
    if (comma == std::string_view::npos) comma = forwarded_for.size();
    std::string_view entry = forwarded_for.substr(start, comma - start);
    while (!entry.empty() && entry.front() == ' ') entry.remove_prefix(1);
    while (!entry.empty() && entry.back() == ' ') entry.remove_suffix(1);
    entries.push_back(entry);
    start = comma + 1;
  }
  size_t hops = static_cast<size_t>(options_.forwarded_hops);
  if (entries.size() < hops || entries[entries.size() - hops].empty()) return std::string(peer);
  // Bounded: a forged header cannot make the throttle's keys arbitrarily long.
  return std::string(entries[entries.size() - hops].substr(0, 64));
}

bool AccessPolicy::OriginAllowed(std::string_view origin, std::string_view host) const {
  if (origin.empty()) return true;  // not a browser
  for (const auto& allowed : options_.allowed_origins) {
    if (allowed == "*" || EqualsIgnoreCase(allowed, origin)) return true;
  }
  // The gateway's own pages (the console) are same-origin.
  if (host.empty()) return false;
  std::string own_http = "http://" + std::string(host);
  std::string own_https = "https://" + std::string(host);
  return EqualsIgnoreCase(origin, own_http) || EqualsIgnoreCase(origin, own_https);
}

bool AccessPolicy::Throttled(const std::string& address, std::chrono::milliseconds* retry_after) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = failures_.find(address);
  if (it == failures_.end()) return false;
  auto now = clock_();
  if (it->second.Available(now) >= 1) return false;
  *retry_after = std::max(std::chrono::milliseconds(1), it->second.WaitFor(now));
  return true;
}

void AccessPolicy::RecordFailure(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto now = clock_();
  if (failures_.size() >= options_.max_tracked_addresses) {
    // Forget the addresses that are back to a full bucket; if that frees nothing, every one
    // (an attacker with that many addresses is not stopped by this throttle anyway).
    for (auto it = failures_.begin(); it != failures_.end();) {
      it = it->second.Available(now) >= it->second.capacity() ? failures_.erase(it) : std::next(it);
    }
    if (failures_.size() >= options_.max_tracked_addresses) failures_.clear();
  }
  auto [it, inserted] = failures_.try_emplace(address);
  if (inserted) {
    double burst = options_.auth_failure_burst;
    it->second =
        TokenBucket(burst,
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(burst / options_.auth_failures_per_second)),
                    now);
  }
  it->second.Charge(now, 1);
}

AccessDecision AccessPolicy::Check(const AccessRequest& request) {
  AccessDecision d;
  if (!OriginAllowed(request.origin, request.host)) {
    d.http_status = 403;
    d.reason = "origin";
    d.message = "origin " + std::string(request.origin.substr(0, 200)) +
                " is not allowed (see --allowed-origins)";
    return d;
  }
  if (!auth_) {
    d.principal = Authenticator::Local();
    return d;
  }
  std::chrono::milliseconds wait{0};
  if (Throttled(request.client_address, &wait)) {
    d.http_status = 429;
    d.reason = "throttled";
    d.retry_after = wait;
    d.message = "too many failed authentications from this address";
    return d;
  }
  PresentedToken token = Authenticator::TokenOf(request.authorization, request.protocols,
                                                request.target, request.websocket);
  auto grant = auth_->Check(token.token);
  if (!grant.ok()) {
    RecordFailure(request.client_address);
    d.http_status = 401;
    d.reason = token.token.empty() ? "missing" : "invalid";
    d.message = std::string(grant.status().message());
    return d;
  }
  d.principal = std::move(grant->principal);
  d.expires = grant->expires;
  d.key_hash = std::move(grant->key_hash);
  d.via_subprotocol = token.source == TokenSource::kSubprotocol;
  return d;
}

}  // namespace anima::gateway
