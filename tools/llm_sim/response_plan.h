#pragma once

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace anima::sim {

// A request as a provider API sees it: no Beast types, header names in lower case.
struct SimRequest {
  std::string method;
  std::string target;  // path and query, as sent
  std::map<std::string, std::string> headers;
  std::string body;

  // The header's value, or "" when absent.
  const std::string& Header(const std::string& lower_name) const;
};

// One write to the socket, after waiting `delay`. For a chunked response each write becomes one
// HTTP chunk, so the write boundaries are exactly what the client's reads can observe.
struct BodyWrite {
  std::chrono::milliseconds delay{0};
  std::string bytes;
};

// How a response ends once every write is out.
enum class Ending {
  kComplete,        // Content-Length body, or the chunked terminator "0\r\n\r\n"
  kCloseAfterLast,  // chunked terminator, then close (no keep-alive)
  kTruncate,        // the last write is announced in full (chunk size or Content-Length), only its
                    // first half is sent, then the connection closes
};

// Everything the HTTP server needs to answer one request, decided before the first byte is sent,
// so a provider API is a pure function of the request (and the server stays provider-agnostic).
struct ResponsePlan {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;  // without framing headers
  bool chunked = false;                                      // a stream: Transfer-Encoding: chunked
  // True: every write goes out in its own send (framing stressors). False: writes due at the
  // same moment (no delay between them) are merged, which is what a fast server does anyway.
  bool exact_writes = false;
  std::vector<BodyWrite> writes;
  std::chrono::milliseconds head_delay{0};  // before the status line (non-streaming latency)
  Ending ending = Ending::kComplete;
  bool close_connection = false;  // send "Connection: close" and close after the response
  bool close_silently = false;    // close after the response although keep-alive was promised

  // Metric labels (bounded sets).
  std::string route;
  std::string scenario = "ok";
};

}  // namespace anima::sim
