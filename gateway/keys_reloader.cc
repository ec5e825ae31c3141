#include "gateway/keys_reloader.h"

#include <signal.h>
#include <sys/stat.h>

#include <ctime>
#include <tuple>

#include "spdlog/spdlog.h"

namespace anima::gateway {

namespace {

using FileId = std::tuple<ino_t, off_t, int64_t, int64_t>;

FileId Identify(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return {};
  return {st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec};
}

sigset_t ReloadSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

void KeysReloader::BlockReloadSignal() {
  sigset_t set = ReloadSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

KeysReloader::KeysReloader(std::shared_ptr<Authenticator> auth)
    : auth_(std::move(auth)), thread_([this] { Run(); }) {}

KeysReloader::~KeysReloader() {
  stop_ = true;
  thread_.join();
}

void KeysReloader::Run() {
  const std::string& path = auth_->options().keys_file;
  FileId seen = Identify(path);
  sigset_t set = ReloadSet();
  while (!stop_) {
    timespec second{1, 0};
    bool hup = sigtimedwait(&set, nullptr, &second) == SIGHUP;
    FileId now = Identify(path);
    if (!hup && now == seen) continue;
    seen = now;
    if (auto s = auth_->Reload(); !s.ok()) {
      spdlog::error("keys file not reloaded, the keys in use stay: {}", std::string(s.message()));
      continue;
    }
    auto keys = auth_->keys();
    spdlog::info("keys file reloaded ({}): {} principals, {} keys", hup ? "SIGHUP" : "changed",
                 keys->principal_count(), keys->key_count());
  }
}

}  // namespace anima::gateway
