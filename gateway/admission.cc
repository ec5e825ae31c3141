#include "gateway/admission.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "gateway/gateway_metrics.h"
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
  const std::string& priority = PriorityLocked(type);
  if (priority == "high") return std::nullopt;
  return Hold{KeyLocked(type), priority};
}

Admission::TypeState& Admission::StateLocked(const std::string& key) {
  // A key keeps its state even if a newer routing table no longer lists it: the slots taken
  // under it must be given back to the same limiter.
  auto& state = types_[key];
  if (!state) {
    state = std::make_unique<TypeState>(options_.limit, options_.clock());
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
    state.waiting.push_back(std::move(waiter));
  }
  Publish(state);
  return start;
}

void Admission::Release(const std::string& key, AdmissionClock::time_point started, bool answered) {
  std::vector<Waiter> grants;
  {
    std::lock_guard<std::mutex> lock(mu_);
    TypeState& state = StateLocked(key);
    auto now = options_.clock();
    state.limit.OnEnd(started, now, answered);
    state.limit.Advance(now);
    GrantLocked(state, &grants);
  }
  for (auto& grant : grants) grant();
}

void Admission::ReleaseUnused(const std::string& key) { Release(key, options_.clock(), false); }

void Admission::Tick() {
  std::vector<Waiter> grants;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto now = options_.clock();
    for (auto& [key, state] : types_) {
      state->limit.Advance(now);
      GrantLocked(*state, &grants);
    }
  }
  for (auto& grant : grants) grant();
}

void Admission::GrantLocked(TypeState& state, std::vector<Waiter>* grants) {
  auto now = options_.clock();
  while (!state.waiting.empty() && state.limit.CanStart()) {
    state.limit.OnStart(now);
    grants->push_back(std::move(state.waiting.front()));
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
  }
  return out;
}

}  // namespace anima::gateway
