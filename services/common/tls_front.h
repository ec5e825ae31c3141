#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace anima::common {

struct TlsFrontOptions {
  std::string bind = "127.0.0.1";
  int port = 0;  // 0: any free port
  // The certificate (PEM chain) and key served when the client's SNI names no other one, or
  // sends no SNI.
  std::string cert_file;
  std::string key_file;
  // Certificates chosen by SNI: server name (lower case) -> {cert_file, key_file}.
  std::map<std::string, std::pair<std::string, std::string>> sni_certs;
  // Where the decrypted bytes go: the plain listener of the same process.
  int backend_port = 0;
  int threads = 1;
  // A client that has not finished the TLS handshake by then is disconnected.
  std::chrono::milliseconds handshake_timeout{10000};
};

// Terminates TLS in front of a plain listener of the same process: every accepted connection
// does the TLS handshake (the certificate picked by the client's SNI, or the default one) within
// handshake_timeout and is then piped, both ways, to 127.0.0.1:backend_port, so the server
// behind behaves the same over TLS (a closed backend connection closes the TLS one). The gateway
// serves wss:// and https:// with it; the simulator uses it so tests exercise a client's
// certificate verification and SNI against a test CA.
class TlsFront {
 public:
  static absl::StatusOr<std::unique_ptr<TlsFront>> Start(const TlsFrontOptions& options);
  ~TlsFront();

  int port() const;
  void Stop();

  struct Impl;

 private:
  explicit TlsFront(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Reads a directory of `<server name>.pem` + `<server name>.key` pairs into sni_certs.
absl::StatusOr<std::map<std::string, std::pair<std::string, std::string>>> LoadSniCertDir(
    const std::string& dir);

}  // namespace anima::common
