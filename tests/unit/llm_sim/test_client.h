#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/beast/core.hpp>

// Test-side helpers for the simulator: a raw HTTP/1.1 connection driven with a timeout, a
// chunked-encoding decoder that keeps chunk boundaries, and an SSE reader that follows
// openai-python's SSEDecoder (CR, LF and CRLF line ends, even split across reads; comments;
// "data:" with or without one space; empty events skipped).
namespace anima::sim::testing {

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // decoded (chunked framing removed)
  boost::beast::error_code error;              // e.g. partial_message when cut short
  bool complete = false;                       // the parser saw the whole message
  std::string Header(const std::string& name) const;
};

class RawConnection {
 public:
  explicit RawConnection(int port);

  bool connected() const { return !connect_error_; }
  boost::beast::error_code Send(const std::string& bytes);
  HttpResponse Read(std::chrono::seconds timeout = std::chrono::seconds(10));
  // Every byte until the peer closes (or the timeout), without any HTTP parsing.
  std::string ReadAllRaw(std::chrono::seconds timeout = std::chrono::seconds(10));
  // True when the peer closes the connection within `timeout` (no bytes expected).
  bool WaitForClose(std::chrono::seconds timeout);
  void Close();

 private:
  boost::asio::io_context ioc_;
  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  boost::beast::error_code connect_error_;
};

// A POST /v1/chat/completions request as bytes. `extra_headers` are full lines without CRLF.
std::string ChatRequestBytes(const std::string& body, const std::vector<std::string>& extra_headers,
                             bool with_key = true);

// A chat body for one user message.
std::string ChatBody(const std::string& user_message, bool stream, bool include_usage = false,
                     const std::string& model = "gpt-4o-mini");

// Splits a raw chunked body (after the head) into its chunks' payloads. Stops at the terminator
// or at the end of the input; `terminated` says which.
std::vector<std::string> DecodeChunks(const std::string& raw_body, bool* terminated);

class SseReader {
 public:
  // Feeds one read's bytes; complete events are appended to events().
  void Feed(const std::string& bytes);
  const std::vector<std::string>& events() const { return events_; }

 private:
  void Line(const std::string& line);
  std::string pending_;
  bool last_was_cr_ = false;
  std::string data_;
  bool have_data_ = false;
  std::vector<std::string> events_;
};

// Convenience: all data payloads of a whole SSE body.
std::vector<std::string> SseEvents(const std::string& body);

}  // namespace anima::sim::testing
