#include "gateway/admission.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "gateway/gateway_metrics.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"

namespace anima::gateway {

namespace {
// Round trips kept between two updates; a busy type overwrites the oldest (a median of 1024 is
// as good as one of all).
constexpr size_t kMaxSamples = 1024;
// Where a type without a routing entry of its own is counted (client-chosen types must not
// create limiters or label values).
constexpr char kOtherType[] = "other";
}  // namespace

AdaptiveLimit::AdaptiveLimit(AdaptiveLimitOptions options, TimePoint now)
    : options_(options),
      limit_(std::clamp(options.initial, options.min, options.max)),
      last_update_(now),
      next_probe_(now + options.first_probe_after) {}

int AdaptiveLimit::effective_limit() const {
  switch (phase_) {
    case Phase::kDraining:
      return 0;
    case Phase::kProbing:
      return 1;
    case Phase::kNormal:
      break;
  }
  return limit_;
}

bool AdaptiveLimit::CanStart() const { return in_flight_ < effective_limit(); }

void AdaptiveLimit::OnStart(TimePoint) {
  ++in_flight_;
  peak_in_flight_ = std::max(peak_in_flight_, in_flight_);
  active_since_probe_ = true;
}

void AdaptiveLimit::OnEnd(TimePoint started, TimePoint now, bool answered) {
  in_flight_ = std::max(0, in_flight_ - 1);
  if (!answered) return;
  Duration rtt = now - started;
  if (phase_ == Phase::kProbing) {
    // Only requests that ran one at a time measure the baseline.
    if (started >= probe_started_) probe_samples_.push_back(rtt);
  } else if (phase_ == Phase::kNormal) {
    if (samples_.size() < kMaxSamples) {
      samples_.push_back(rtt);
    } else {
      samples_[sample_count_ % kMaxSamples] = rtt;
    }
    ++sample_count_;
  }  // while draining, round trips still carry the load the probe waits out
}

void AdaptiveLimit::Advance(TimePoint now) {
  switch (phase_) {
    case Phase::kNormal:
      if (active_since_probe_ && now >= next_probe_) {
        StartProbe(now);
      } else if (now - last_update_ >= options_.update_interval) {
        if (samples_.size() >= static_cast<size_t>(options_.min_samples)) {
          Update(now);
        } else if (now - last_update_ >= 10 * options_.update_interval &&
                   peak_in_flight_ >= limit_) {
          // Fewer than min_samples answers in ten intervals at the limit: long-lived work (a
          // self_coding_watch stream, a provider call), not the cheap flood admission is for.
          // It may grow; waiting for samples could hold the next stream for minutes.
          Update(now);
        }
      }
      return;
    case Phase::kDraining:
      if (now >= probe_deadline_) {
        EndProbe(now);
      } else if (in_flight_ == 0) {
        phase_ = Phase::kProbing;
        probe_started_ = now;
      }
      return;
    case Phase::kProbing:
      if (probe_samples_.size() >= static_cast<size_t>(options_.probe_samples) ||
          now >= probe_deadline_) {
        EndProbe(now);
      }
      return;
  }
}

void AdaptiveLimit::Update(TimePoint now) {
  // No baseline yet, or too few answers to judge: nothing says the work queues for CPU.
  double gradient = 2.0;
  Duration median = samples_.empty() ? Duration::zero() : Median(samples_);
  if (median.count() > 0) last_median_ = median;
  if (baseline_ && samples_.size() >= static_cast<size_t>(options_.min_samples) &&
      median.count() > 0) {
    gradient = std::clamp(options_.tolerance * static_cast<double>(baseline_->count()) /
                              static_cast<double>(median.count()),
                          0.5, 2.0);
  }
  // Growth needs demand: a limit that was never reached says nothing about a larger one.
  if (gradient > 1.0 && peak_in_flight_ < limit_) gradient = 1.0;
  limit_ = std::clamp(static_cast<int>(std::lround(limit_ * gradient)), options_.min, options_.max);
  samples_.clear();
  sample_count_ = 0;
  peak_in_flight_ = in_flight_;
  last_update_ = now;
}

void AdaptiveLimit::StartProbe(TimePoint now) {
  phase_ = Phase::kDraining;
  probe_deadline_ = now + options_.probe_timeout;
  probe_samples_.clear();
  Advance(now);  // straight to measuring when nothing is in flight
}

void AdaptiveLimit::EndProbe(TimePoint now) {
  if (!probe_samples_.empty()) baseline_ = Median(probe_samples_);
  phase_ = Phase::kNormal;
  probe_ended_ = now;
  next_probe_ = now + options_.probe_interval;
  active_since_probe_ = false;
  samples_.clear();
  sample_count_ = 0;
  peak_in_flight_ = in_flight_;
  last_update_ = now;
}

AdaptiveLimit::Duration AdaptiveLimit::Median(std::vector<Duration>& samples) {
  auto middle = samples.begin() + static_cast<std::ptrdiff_t>(samples.size() / 2);
  std::nth_element(samples.begin(), middle, samples.end());
  return *middle;
}

Admission::Admission(Options options, GatewayMetrics* metrics)
    : options_(std::move(options)), metrics_(metrics) {}

void Admission::SetRoutes(std::map<std::string, std::string> priorities,
                          std::string default_priority) {
  std::lock_guard<std::mutex> lock(mu_);
  priorities_ = std::move(priorities);
  default_priority_ = std::move(default_priority);
  routes_known_ = true;
}

const std::string& Admission::PriorityLocked(const std::string& type) const {
  auto it = priorities_.find(type);
  return it == priorities_.end() ? default_priority_ : it->second;
}

const std::string& Admission::KeyLocked(const std::string& type) const {
  static const std::string kOther = kOtherType;
  return priorities_.count(type) > 0 ? type : kOther;
}

std::optional<Admission::Hold> Admission::HoldFor(const std::string& type) const {
  if (!options_.enabled) return std::nullopt;
  std::lock_guard<std::mutex> lock(mu_);
  if (!routes_known_) return std::nullopt;
  return Hold{KeyLocked(type), PriorityLocked(type)};
}

Admission::TypeState& Admission::StateLocked(const std::string& key) {
  // A key keeps its state even if a newer routing table no longer lists it: the slots taken
  // under it must be given back to the same limiter.
  auto& state = types_[key];
  if (!state) {
    // High-priority work is held for overload, not for another class's latency: it may load the
    // path further before its limit stops growing (the tolerance, see Options).
    AdaptiveLimitOptions limit = options_.limit;
    if (PriorityLocked(key) == "high") limit.tolerance = options_.high_tolerance;
    state = std::make_unique<TypeState>(limit, options_.clock());
    if (metrics_) state->gauges = metrics_->AdmissionGaugesFor(key);
  }
  return *state;
}

bool Admission::Acquire(const std::string& key, Waiter waiter) {
  std::lock_guard<std::mutex> lock(mu_);
  TypeState& state = StateLocked(key);
  auto now = options_.clock();
  state.limit.Advance(now);
  bool start = state.waiting.empty() && state.limit.CanStart();
  if (start) {
    state.limit.OnStart(now);
  } else {
    state.waiting.push_back({std::move(waiter), now});
  }
  Publish(state);
  return start;
}

std::optional<std::chrono::milliseconds> Admission::Overloaded(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  TypeState& state = StateLocked(key);
  // A probe holds starts on purpose (to measure the baseline): that wait is not overload.
  if (state.waiting.empty() || state.limit.probing()) return std::nullopt;
  auto now = options_.clock();
  if (state.HeadWait(now) <= Scaled(state, options_.queue_target)) {
    return std::nullopt;
  }
  ++state.refused;
  if (state.gauges.refused_standing_queue) state.gauges.refused_standing_queue->Increment();
  return RetryAfterLocked(state, now);
}

AdmissionClock::duration Admission::Scaled(const TypeState& state,
                                           std::chrono::milliseconds bound) const {
  // The bounds are for work that answers within queue_target; a slower type may wait in
  // proportion to its round trip (its baseline, or its recent median before it has one).
  auto round_trip = state.limit.baseline().value_or(state.limit.last_median());
  if (round_trip <= options_.queue_target) return bound;
  return std::chrono::duration_cast<AdmissionClock::duration>(
      bound * (std::chrono::duration<double>(round_trip) /
               std::chrono::duration<double>(options_.queue_target)));
}

std::chrono::milliseconds Admission::RetryAfter(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  return RetryAfterLocked(StateLocked(key), options_.clock());
}

std::chrono::milliseconds Admission::RetryAfterLocked(const TypeState& state,
                                                      AdmissionClock::time_point now) const {
  // Twice what the oldest waiter has waited, at least 100 ms (CoDel's interval: the queue is
  // judged afresh that often) and at most a second: soon enough to find a shorter queue, late
  // enough not to come back into the same one.
  auto retry = std::chrono::duration_cast<std::chrono::milliseconds>(2 * state.HeadWait(now));
  return std::clamp(retry, std::chrono::milliseconds(100), std::chrono::milliseconds(1000));
}

void Admission::Release(const std::string& key, AdmissionClock::time_point started, bool answered) {
  std::vector<Call> calls;
  {
    std::lock_guard<std::mutex> lock(mu_);
    TypeState& state = StateLocked(key);
    auto now = options_.clock();
    state.limit.OnEnd(started, now, answered);
    state.limit.Advance(now);
    GrantLocked(state, now, &calls);
  }
  for (auto& call : calls) call.waiter(call.granted);
}

void Admission::ReleaseUnused(const std::string& key) { Release(key, options_.clock(), false); }

void Admission::Tick() {
  std::vector<Call> calls;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto now = options_.clock();
    for (auto& [key, state] : types_) {
      state->limit.Advance(now);
      GrantLocked(*state, now, &calls);
    }
  }
  for (auto& call : calls) call.waiter(call.granted);
}

void Admission::GrantLocked(TypeState& state, AdmissionClock::time_point now,
                            std::vector<Call>* calls) {
  while (!state.waiting.empty() && state.limit.CanStart()) {
    state.limit.OnStart(now);
    calls->push_back({std::move(state.waiting.front().waiter), true});
    state.waiting.pop_front();
  }
  // The oldest wait the longest: refuse from the front while they are past the bound (a probe's
  // pause is not counted against them until it ends).
  const auto max_wait = Scaled(state, options_.max_queue_wait);
  while (!state.waiting.empty() && !state.limit.probing() && state.HeadWait(now) > max_wait) {
    ++state.refused;
    if (state.gauges.refused_max_wait) state.gauges.refused_max_wait->Increment();
    calls->push_back({std::move(state.waiting.front().waiter), false});
    state.waiting.pop_front();
  }
  Publish(state);
}

void Admission::Publish(const TypeState& state) {
  if (state.gauges.limit == nullptr) return;
  const auto& baseline = state.limit.baseline();
  state.gauges.limit->Set(state.limit.limit());
  state.gauges.waiting_sessions->Set(static_cast<double>(state.waiting.size()));
  state.gauges.baseline_seconds->Set(baseline ? std::chrono::duration<double>(*baseline).count()
                                              : 0.0);
}

std::map<std::string, Admission::TypeSnapshot> Admission::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, TypeSnapshot> out;
  for (const auto& [type, state] : types_) {
    TypeSnapshot& s = out[type];
    s.limit = state->limit.effective_limit();
    s.in_flight = state->limit.in_flight();
    s.waiting = state->waiting.size();
    s.baseline = state->limit.baseline();
    s.refused = state->refused;
  }
  return out;
}

}  // namespace anima::gateway
