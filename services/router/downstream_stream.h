#pragma once

#include <functional>

#include "grpcpp/support/client_callback.h"

namespace anima::router {

// Reads one downstream server stream (callback API) and hands every message to `on_message`;
// `on_done` gets the final status. Deletes itself when the call is over.
//
//   auto* s = new DownstreamStream<JobEvent>(on_message, on_done);
//   stub->async()->Watch(&ctx, &req, s);
//   s->Go();
template <typename T>
class DownstreamStream final : public grpc::ClientReadReactor<T> {
 public:
  using MessageFn = std::function<void(T&)>;
  using DoneFn = std::function<void(const grpc::Status&)>;

  DownstreamStream(MessageFn on_message, DoneFn on_done)
      : on_message_(std::move(on_message)), on_done_(std::move(on_done)) {}

  // Call after the stub's async() method has bound this reactor to the call.
  void Go() {
    this->StartRead(&message_);
    this->StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows with the status
    on_message_(message_);
    this->StartRead(&message_);
  }

  void OnDone(const grpc::Status& status) override {
    on_done_(status);
    delete this;
  }

 private:
  MessageFn on_message_;
  DoneFn on_done_;
  T message_;
};

}  // namespace anima::router
