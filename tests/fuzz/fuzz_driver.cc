// A small stand-in for libFuzzer's driver, for compilers without -fsanitize=fuzzer (g++).
// Usage: target [--runs=N] [corpus_dir_or_file...]
// Replays every corpus file, then N inputs made by mutating corpus entries (bit flips, byte
// insertions and deletions, splices, truncations) with a fixed seed, so a failure reproduces.
// A crash or sanitizer report fails the test; the last input is written to fuzz-crash-input.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<std::string> LoadCorpus(const std::vector<std::string>& paths) {
  std::vector<std::string> corpus;
  for (const auto& p : paths) {
    std::error_code ec;
    if (std::filesystem::is_directory(p, ec)) {
      for (const auto& entry : std::filesystem::recursive_directory_iterator(p)) {
        if (!entry.is_regular_file()) continue;
        std::ifstream in(entry.path(), std::ios::binary);
        corpus.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      }
    } else if (std::filesystem::is_regular_file(p, ec)) {
      std::ifstream in(p, std::ios::binary);
      corpus.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
  }
  if (corpus.empty()) corpus.emplace_back();
  return corpus;
}

std::string Mutate(const std::vector<std::string>& corpus, std::mt19937_64& rng) {
  std::string s = corpus[rng() % corpus.size()];
  int edits = 1 + static_cast<int>(rng() % 8);
  for (int i = 0; i < edits; ++i) {
    switch (rng() % 6) {
      case 0:  // flip a bit
        if (!s.empty()) s[rng() % s.size()] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:  // insert a random byte
        s.insert(s.begin() + static_cast<long>(s.empty() ? 0 : rng() % (s.size() + 1)),
                 static_cast<char>(rng() % 256));
        break;
      case 2:  // delete a byte
        if (!s.empty()) s.erase(rng() % s.size(), 1);
        break;
      case 3: {  // splice a piece of another entry
        const std::string& other = corpus[rng() % corpus.size()];
        if (!other.empty()) {
          size_t from = rng() % other.size();
          size_t len = 1 + rng() % (other.size() - from);
          s.insert(s.empty() ? 0 : rng() % (s.size() + 1), other.substr(from, len));
        }
        break;
      }
      case 4:  // truncate
        if (!s.empty()) s.resize(rng() % s.size());
        break;
      case 5: {  // insert an interesting token
        static const char* kTokens[] = {"\r", "\n", "\r\n", "\"",   "{",     "}",  "[",    "]",
                                        ":",  "\\", "\xff", "\xc3", "data:", "\0", "null", "1e999"};
        const char* t = kTokens[rng() % (sizeof(kTokens) / sizeof(kTokens[0]))];
        s.insert(s.empty() ? 0 : rng() % (s.size() + 1), t, std::max<size_t>(1, strlen(t)));
        break;
      }
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  long runs = 10000;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--runs=", 7) == 0) {
      runs = std::atol(argv[i] + 7);
    } else {
      paths.emplace_back(argv[i]);
    }
  }
  auto corpus = LoadCorpus(paths);
  for (const auto& input : corpus) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  std::mt19937_64 rng(0x616e696d61);  // "anima": fixed so a failing run reproduces
  for (long i = 0; i < runs; ++i) {
    std::string input = Mutate(corpus, rng);
    {
      std::ofstream last("fuzz-crash-input", std::ios::binary | std::ios::trunc);
      last.write(input.data(), static_cast<long>(input.size()));
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  std::remove("fuzz-crash-input");
  std::printf("fuzz: %zu corpus inputs and %ld mutated inputs, no failure\n", corpus.size(), runs);
  return 0;
}
