#include "tests/unit/llm_sim/test_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace anima::sim::testing {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

std::string HttpResponse::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

RawConnection::RawConnection(int port) : stream_(ioc_) {
  stream_.expires_after(std::chrono::seconds(10));
  stream_.async_connect(
      net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)),
      [this](beast::error_code ec) { connect_error_ = ec; });
  ioc_.run();
}

beast::error_code RawConnection::Send(const std::string& bytes) {
  beast::error_code result;
  stream_.expires_after(std::chrono::seconds(10));
  net::async_write(stream_, net::buffer(bytes), [&](beast::error_code ec, size_t) { result = ec; });
  ioc_.restart();
  ioc_.run();
  return result;
}

HttpResponse RawConnection::Read(std::chrono::seconds timeout) {
  http::response_parser<http::string_body> parser;
  parser.body_limit(boost::none);
  HttpResponse out;
  stream_.expires_after(timeout);
  http::async_read(stream_, buffer_, parser, [&](beast::error_code ec, size_t) { out.error = ec; });
  ioc_.restart();
  ioc_.run();
  out.complete = parser.is_done();
  if (parser.is_header_done()) {
    const auto& message = parser.get();
    out.status = message.result_int();
    for (const auto& field : message) {
      out.headers[absl::AsciiStrToLower(std::string(field.name_string()))] =
          std::string(field.value());
    }
    out.body = message.body();
  }
  return out;
}

std::string RawConnection::ReadAllRaw(std::chrono::seconds timeout) {
  std::string raw(static_cast<const char*>(buffer_.data().data()), buffer_.size());
  buffer_.consume(buffer_.size());
  char chunk[4096];
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    beast::error_code result;
    size_t n = 0;
    stream_.expires_at(deadline);
    stream_.async_read_some(net::buffer(chunk), [&](beast::error_code ec, size_t got) {
      result = ec;
      n = got;
    });
    ioc_.restart();
    ioc_.run();
    raw.append(chunk, n);
    if (result) break;
  }
  return raw;
}

bool RawConnection::WaitForClose(std::chrono::seconds timeout) {
  char byte;
  beast::error_code result;
  stream_.expires_after(timeout);
  stream_.async_read_some(net::buffer(&byte, 1),
                          [&](beast::error_code ec, size_t) { result = ec; });
  ioc_.restart();
  ioc_.run();
  return result == net::error::eof || result == net::error::connection_reset;
}

void RawConnection::Close() {
  beast::error_code ignored;
  stream_.socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  stream_.close();
}

std::string ChatRequestBytes(const std::string& body, const std::vector<std::string>& extra_headers,
                             bool with_key) {
  std::string request = "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n";
  if (with_key) request += "Authorization: Bearer sk-test-0123456789abcdef\r\n";
  request += "Content-Type: application/json\r\n";
  for (const auto& header : extra_headers) absl::StrAppend(&request, header, "\r\n");
  absl::StrAppend(&request, "Content-Length: ", body.size(), "\r\n\r\n", body);
  return request;
}

std::string ChatBody(const std::string& user_message, bool stream, bool include_usage,
                     const std::string& model) {
  nlohmann::json body = {{"model", model},
                         {"messages",
                          {{{"role", "system"}, {"content", "You are terse."}},
                           {{"role", "user"}, {"content", user_message}}}}};
  if (stream) body["stream"] = true;
  if (include_usage) body["stream_options"] = {{"include_usage", true}};
  return body.dump();
}

std::vector<std::string> DecodeChunks(const std::string& raw, bool* terminated) {
  std::vector<std::string> chunks;
  *terminated = false;
  size_t pos = 0;
  while (pos < raw.size()) {
    size_t eol = raw.find("\r\n", pos);
    if (eol == std::string::npos) break;
    size_t size = std::stoul(raw.substr(pos, eol - pos), nullptr, 16);
    if (size == 0) {
      *terminated = true;
      break;
    }
    size_t start = eol + 2;
    chunks.push_back(raw.substr(start, std::min(size, raw.size() - start)));
    pos = start + size + 2;
  }
  return chunks;
}

void SseReader::Feed(const std::string& bytes) {
  for (char c : bytes) {
    if (c == '\n' && last_was_cr_) {  // the LF of a CRLF split across reads, or not
      last_was_cr_ = false;
      continue;
    }
    last_was_cr_ = false;
    if (c == '\r' || c == '\n') {
      last_was_cr_ = c == '\r';
      Line(pending_);
      pending_.clear();
    } else {
      pending_ += c;
    }
  }
}

void SseReader::Line(const std::string& line) {
  if (line.empty()) {
    if (have_data_ && !data_.empty()) events_.push_back(data_);
    data_.clear();
    have_data_ = false;
    return;
  }
  if (line[0] == ':') return;
  size_t colon = line.find(':');
  std::string field = line.substr(0, colon);
  std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
  if (!value.empty() && value[0] == ' ') value.erase(0, 1);
  if (field == "data") {
    if (have_data_) data_ += "\n";
    data_ += value;
    have_data_ = true;
  }
}

std::vector<std::string> SseEvents(const std::string& body) {
  SseReader reader;
  reader.Feed(body);
  return reader.events();
}

}  // namespace anima::sim::testing
