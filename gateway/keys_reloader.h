#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "gateway/auth.h"

namespace anima::gateway {

// Reloads the keys file on SIGHUP and when the file changes (its inode, size or mtime, checked
// every second), without touching open connections: each session re-resolves its principal on
// its next request (WsSession::CurrentPrincipal). A file with an error is logged and ignored;
// the keys in use stay. Never logs a key.
//
// SIGHUP must be blocked in every thread (BlockReloadSignal, first thing in main) so that only
// this thread takes it.
class KeysReloader {
 public:
  static void BlockReloadSignal();

  explicit KeysReloader(std::shared_ptr<Authenticator> auth);
  ~KeysReloader();  // stops the thread (within a second)

 private:
  void Run();

  std::shared_ptr<Authenticator> auth_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace anima::gateway
