// anima-quota-bench: what the per-principal checks cost on the gateway's hot path, with Google
// Benchmark (docs/BENCHMARKS.md, "Tenants"). Not a test: nothing here asserts a time.
//
//   build/bin/anima-quota-bench [--benchmark_filter=...]
#include <memory>
#include <string>

#include "benchmark/benchmark.h"
#include "gateway/auth.h"
#include "gateway/principals.h"
#include "gateway/quota.h"

namespace anima::gateway {
namespace {

constexpr int kPrincipals = 10000;

nlohmann::json KeysFile(int principals) {
  nlohmann::json doc;
  doc["tiers"]["pro"] = {{"requests_per_second", 1000000},  {"requests_per_minute", 100000000},
                         {"requests_in_flight", 100000},    {"tokens_per_minute", 1000000000},
                         {"tokens_per_day", 1000000000000}, {"cost_per_day", 1e9},
                         {"cost_per_month", 1e10}};
  for (int i = 0; i < principals; ++i) {
    std::string id = "p" + std::to_string(i);
    doc["principals"][id]["tier"] = "pro";
    doc["keys"].push_back({{"principal", id}, {"sha256", KeyRing::Sha256Hex("key-" + id)}});
  }
  return doc;
}

// Admission and release of one chat: the check every routed frame pays.
void BM_AdmitRelease(benchmark::State& state) {
  QuotaTracker tracker;
  auto ring = KeyRing::Parse(KeysFile(kPrincipals)).value();
  std::vector<std::shared_ptr<const Principal>> principals;
  for (int i = 0; i < kPrincipals; ++i)
    principals.push_back(ring->FindById("p" + std::to_string(i)));
  size_t i = 0;
  for (auto _ : state) {
    const Principal& p = *principals[i++ % principals.size()];
    benchmark::DoNotOptimize(tracker.Admit(p, true));
    tracker.Release(p);
  }
}
BENCHMARK(BM_AdmitRelease)->Threads(1)->Threads(2);

// Charging an answer's tokens and cost.
void BM_Charge(benchmark::State& state) {
  QuotaTracker tracker;
  Principal p;
  p.id = "p";
  p.limits.tokens_per_minute = 1000000000;
  p.limits.tokens_per_day = 1000000000000;
  for (auto _ : state) tracker.Charge(p, 42, 0.0001);
}
BENCHMARK(BM_Charge);

// What a connection pays once: its key looked up among 10,000 principals.
void BM_KeyLookup(benchmark::State& state) {
  auto ring = KeyRing::Parse(KeysFile(kPrincipals)).value();
  Authenticator auth(AuthOptions{}, ring, "");
  int i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(auth.Check("key-p" + std::to_string(i++ % kPrincipals)));
  }
}
BENCHMARK(BM_KeyLookup);

void BM_JwtCheck(benchmark::State& state) {
  auto ring = KeyRing::Parse(KeysFile(100)).value();
  const std::string secret = "a-bench-secret-of-some-length";
  Authenticator auth(AuthOptions{}, ring, secret);
  auto exp = std::chrono::duration_cast<std::chrono::seconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count() +
             3600;
  std::string token =
      Authenticator::SignHs256(R"({"sub":"p7","exp":)" + std::to_string(exp) + "}", secret);
  for (auto _ : state) benchmark::DoNotOptimize(auth.Check(token));
}
BENCHMARK(BM_JwtCheck);

// Loading (or reloading) a keys file of 10,000 principals.
void BM_ParseKeysFile(benchmark::State& state) {
  std::string text = KeysFile(static_cast<int>(state.range(0))).dump();
  for (auto _ : state) {
    benchmark::DoNotOptimize(KeyRing::Parse(nlohmann::json::parse(text)));
  }
  state.SetLabel(std::to_string(text.size() / 1024) + " KiB");
}
BENCHMARK(BM_ParseKeysFile)->Arg(10000)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace anima::gateway

BENCHMARK_MAIN();
