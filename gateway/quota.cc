#include "gateway/quota.h"

#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace anima::gateway {

namespace {

using std::chrono::milliseconds;
using std::chrono::system_clock;

milliseconds Until(system_clock::time_point from, system_clock::time_point to) {
  return std::max(milliseconds(1), std::chrono::ceil<milliseconds>(to - from));
}

std::string Usd(double v) { return absl::StrFormat("$%.4f", v); }

}  // namespace

bool HasRateLimitHeaders(const QuotaLimits& l) {
  return l.requests_per_minute > 0 || l.requests_per_second > 0 || l.tokens_per_minute > 0;
}

RateLimitHeaders HeadersFromUsage(const UsageReport& report) {
  RateLimitHeaders h;
  auto trio = [&](const UsageEntry& e) {
    return RateLimitHeaders::Trio{
        static_cast<int64_t>(e.limit_value), static_cast<int64_t>(e.remaining),
        e.resets_at
            ? std::max(milliseconds(0), std::chrono::ceil<milliseconds>(*e.resets_at - report.at))
            : milliseconds(0)};
  };
  for (const UsageEntry& e : report.limits) {
    if (e.limit == "requests_per_minute") {
      h.requests = trio(e);
    } else if (e.limit == "requests_per_second" && !h.requests) {
      h.requests = trio(e);  // a per-minute entry, listed after it, takes its place
    } else if (e.limit == "tokens_per_minute") {
      h.tokens = trio(e);
    }
  }
  return h;
}

QuotaRefusal MakeQuotaRefusal(const Principal& principal, std::string limit,
                              milliseconds retry_after) {
  const QuotaLimits& l = principal.limits;
  QuotaRefusal r;
  r.retry_after = retry_after;
  if (limit == "requests_in_flight") {
    r.message = absl::StrCat("over requests_in_flight (", l.requests_in_flight, ") for principal ",
                             principal.id);
  } else if (limit == "tokens_per_day") {
    r.message = absl::StrCat("tokens_per_day (", l.tokens_per_day, ") used up");
    r.budget = true;
  } else if (limit == "cost_per_day") {
    r.message = absl::StrCat("cost_per_day (", Usd(l.cost_per_day), ") used up");
    r.budget = true;
  } else if (limit == "cost_per_month") {
    r.message = absl::StrCat("cost_per_month (", Usd(l.cost_per_month), ") used up");
    r.budget = true;
  } else if (limit == "tokens_per_minute") {
    r.message = absl::StrCat("over tokens_per_minute (", l.tokens_per_minute, ")");
  } else if (limit == "requests_per_second") {
    r.message = absl::StrCat("over requests_per_second (", l.requests_per_second, ")");
  } else if (limit == "requests_per_minute") {
    r.message = absl::StrCat("over requests_per_minute (", l.requests_per_minute, ")");
  } else {
    r.message = absl::StrCat("over ", limit);
  }
  r.limit = std::move(limit);
  return r;
}

QuotaTracker::QuotaTracker(SteadyClock steady, WallClock wall)
    : steady_(std::move(steady)), wall_(std::move(wall)) {}

int64_t QuotaTracker::DayOf(system_clock::time_point t) {
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  return secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
}

system_clock::time_point QuotaTracker::NextDay(system_clock::time_point t) {
  return system_clock::time_point(std::chrono::seconds((DayOf(t) + 1) * 86400));
}

int64_t QuotaTracker::MonthOf(system_clock::time_point t) {
  std::time_t secs = system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return (tm.tm_year + 1900) * 12 + tm.tm_mon;
}

system_clock::time_point QuotaTracker::NextMonth(system_clock::time_point t) {
  std::time_t secs = system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  std::tm next{};
  next.tm_year = tm.tm_mon == 11 ? tm.tm_year + 1 : tm.tm_year;
  next.tm_mon = (tm.tm_mon + 1) % 12;
  next.tm_mday = 1;
  return system_clock::from_time_t(timegm(&next));
}

QuotaTracker::Shard& QuotaTracker::ShardOf(const std::string& id) {
  return shards_[std::hash<std::string>{}(id) % kShards];
}

QuotaTracker::State& QuotaTracker::StateLocked(Shard& shard, const Principal& principal,
                                               std::chrono::steady_clock::time_point now,
                                               system_clock::time_point wall) {
  auto [it, inserted] = shard.states.try_emplace(principal.id);
  State& s = it->second;
  const QuotaLimits& l = principal.limits;
  if (inserted || !(s.limits == l)) {
    // New limits (a reload) start full buckets: a principal is not punished for a change.
    s.limits = l;
    s.per_second =
        TokenBucket(static_cast<double>(l.requests_per_second), std::chrono::seconds(1), now);
    s.per_minute =
        TokenBucket(static_cast<double>(l.requests_per_minute), std::chrono::minutes(1), now);
    s.tokens_per_minute =
        TokenBucket(static_cast<double>(l.tokens_per_minute), std::chrono::minutes(1), now);
  }
  int64_t day = DayOf(wall), month = MonthOf(wall);
  if (s.day != day) {
    s.day = day;
    s.day_totals = {};
  }
  if (s.month != month) {
    s.month = month;
    s.month_totals = {};
  }
  return s;
}

template <typename F>
auto QuotaTracker::WithState(const Principal& principal, F&& f) {
  auto now = steady_();
  auto wall = wall_();
  Shard& shard = ShardOf(principal.id);
  std::lock_guard<std::mutex> lock(shard.mu);
  return f(StateLocked(shard, principal, now, wall), now, wall);
}

std::optional<QuotaRefusal> QuotaTracker::Admit(const Principal& principal, bool spends) {
  return WithState(principal, [&](State& s, auto now, auto wall) -> std::optional<QuotaRefusal> {
    const QuotaLimits& l = principal.limits;
    if (l.requests_in_flight > 0 && s.in_flight >= l.requests_in_flight) {
      // No clock frees a slot; a request ending does. A short wait is the honest hint.
      return MakeQuotaRefusal(principal, "requests_in_flight", milliseconds(100));
    }
    if (spends) {
      if (l.tokens_per_day > 0 && s.day_totals.tokens >= l.tokens_per_day) {
        return MakeQuotaRefusal(principal, "tokens_per_day", Until(wall, NextDay(wall)));
      }
      if (l.cost_per_day > 0 && s.day_totals.cost_usd >= l.cost_per_day) {
        return MakeQuotaRefusal(principal, "cost_per_day", Until(wall, NextDay(wall)));
      }
      if (l.cost_per_month > 0 && s.month_totals.cost_usd >= l.cost_per_month) {
        return MakeQuotaRefusal(principal, "cost_per_month", Until(wall, NextMonth(wall)));
      }
      if (l.tokens_per_minute > 0 && s.tokens_per_minute.Available(now) < 1) {
        return MakeQuotaRefusal(principal, "tokens_per_minute", s.tokens_per_minute.WaitFor(now));
      }
    }
    // Both rates are checked before either is taken, so a refusal costs no token.
    if (l.requests_per_second > 0 && s.per_second.Available(now) < 1) {
      return MakeQuotaRefusal(principal, "requests_per_second",
                              std::max(milliseconds(1), s.per_second.WaitFor(now)));
    }
    if (l.requests_per_minute > 0 && s.per_minute.Available(now) < 1) {
      return MakeQuotaRefusal(principal, "requests_per_minute",
                              std::max(milliseconds(1), s.per_minute.WaitFor(now)));
    }
    if (l.requests_per_second > 0) s.per_second.Charge(now, 1);
    if (l.requests_per_minute > 0) s.per_minute.Charge(now, 1);
    ++s.in_flight;
    ++s.day_totals.requests;
    ++s.month_totals.requests;
    return std::nullopt;
  });
}

void QuotaTracker::Release(const Principal& principal) {
  Shard& shard = ShardOf(principal.id);
  std::lock_guard<std::mutex> lock(shard.mu);
  auto it = shard.states.find(principal.id);
  if (it != shard.states.end() && it->second.in_flight > 0) --it->second.in_flight;
}

void QuotaTracker::Charge(const Principal& principal, int64_t tokens, double cost_usd) {
  if (tokens <= 0 && cost_usd <= 0) return;
  return WithState(principal, [&](State& s, auto now, auto wall) {
    tokens = std::max<int64_t>(0, tokens);
    cost_usd = std::max(0.0, cost_usd);
    if (principal.limits.tokens_per_minute > 0) {
      s.tokens_per_minute.Charge(now, static_cast<double>(tokens));
    }
    s.day_totals.tokens += tokens;
    s.month_totals.tokens += tokens;
    s.day_totals.cost_usd += cost_usd;
    s.month_totals.cost_usd += cost_usd;
  });
}

UsageReport QuotaTracker::Usage(const Principal& principal) {
  return WithState(principal, [&](State& s, auto now, auto wall) -> UsageReport {
    const QuotaLimits& l = principal.limits;
    UsageReport r;
    r.principal = principal.id;
    r.tier = principal.tier;
    r.day = s.day_totals;
    r.month = s.month_totals;
    r.day_resets_at = NextDay(wall);
    r.month_resets_at = NextMonth(wall);
    r.at = wall;
    auto bucket = [&](const char* name, const char* window, int64_t limit, TokenBucket& b) {
      if (limit <= 0) return;
      double available = b.Available(now);
      r.limits.push_back(UsageEntry{name, window, static_cast<double>(limit),
                                    static_cast<double>(limit) - std::max(0.0, available),
                                    std::max(0.0, std::floor(available)), wall + b.UntilFull(now)});
    };
    bucket("requests_per_second", "second", l.requests_per_second, s.per_second);
    bucket("requests_per_minute", "minute", l.requests_per_minute, s.per_minute);
    if (l.requests_in_flight > 0) {
      double limit = static_cast<double>(l.requests_in_flight);
      double used = static_cast<double>(s.in_flight);
      r.limits.push_back(UsageEntry{"requests_in_flight", "now", limit, used,
                                    std::max(0.0, limit - used), std::nullopt});
    }
    bucket("tokens_per_minute", "minute", l.tokens_per_minute, s.tokens_per_minute);
    auto window = [&](const char* name, const char* span, double limit, double used,
                      system_clock::time_point resets) {
      if (limit <= 0) return;
      r.limits.push_back(UsageEntry{name, span, limit, used, std::max(0.0, limit - used), resets});
    };
    window("tokens_per_day", "day", static_cast<double>(l.tokens_per_day),
           static_cast<double>(s.day_totals.tokens), r.day_resets_at);
    window("cost_per_day", "day", l.cost_per_day, s.day_totals.cost_usd, r.day_resets_at);
    window("cost_per_month", "month", l.cost_per_month, s.month_totals.cost_usd, r.month_resets_at);
    return r;
  });
}

RateLimitHeaders QuotaTracker::Headers(const Principal& principal) {
  const QuotaLimits& l = principal.limits;
  if (!HasRateLimitHeaders(l)) return {};
  return WithState(principal, [&](State& s, auto now, auto wall) -> RateLimitHeaders {
    auto trio = [&](int64_t limit, TokenBucket& b) {
      double available = b.Available(now);
      return RateLimitHeaders::Trio{
          limit, static_cast<int64_t>(std::max(0.0, std::floor(available))), b.UntilFull(now)};
    };
    RateLimitHeaders h;
    if (l.requests_per_minute > 0) {
      h.requests = trio(l.requests_per_minute, s.per_minute);
    } else if (l.requests_per_second > 0) {
      h.requests = trio(l.requests_per_second, s.per_second);
    }
    if (l.tokens_per_minute > 0) h.tokens = trio(l.tokens_per_minute, s.tokens_per_minute);
    return h;
  });
}

}  // namespace anima::gateway
