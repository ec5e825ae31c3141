#include "services/router/error_mapping.h"

#include "anima/v1/llm_broker.pb.h"

namespace anima::router {

anima::v1::ErrorEvent MakeError(const std::string& code, const std::string& message) {
  anima::v1::ErrorEvent error;
  error.set_code(code);
  error.set_message(message);
  return error;
}

anima::v1::ErrorEvent ErrorFromStatus(const grpc::Status& status, const std::string& service) {
  anima::v1::BrokerFailure failure;
  if (!status.error_details().empty() && failure.ParseFromString(status.error_details()) &&
      !failure.code().empty()) {
    anima::v1::ErrorEvent error = MakeError(failure.code(), failure.message());
    error.set_retry_after_ms(failure.retry_after_ms());
    *error.mutable_causes() = failure.causes();
    error.set_limit(failure.limit());
    error.set_provider_time_us(failure.provider_time_us());
    return error;
  }
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return MakeError("unavailable", service + " is unavailable: " + status.error_message());
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return MakeError("deadline_exceeded", "the request ran past its deadline");
    case grpc::StatusCode::CANCELLED:
      return MakeError("cancelled", "the request was cancelled");
    case grpc::StatusCode::INVALID_ARGUMENT:
      return MakeError("invalid_message", status.error_message());
    case grpc::StatusCode::NOT_FOUND:
      return MakeError("not_found", status.error_message());
    case grpc::StatusCode::FAILED_PRECONDITION:
      return MakeError("conflict", status.error_message());
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return MakeError("overloaded", status.error_message());
    default:
      return MakeError("internal", service + " failed: " + status.error_message());
  }
}

}  // namespace anima::router
