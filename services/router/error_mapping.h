#pragma once

#include <string>

#include "anima/v1/envelope.pb.h"
#include "grpcpp/support/status.h"

namespace anima::router {

// Turns the failed status of a downstream call into the error frame the client sees.
// A BrokerFailure in the status details wins (it carries the protocol code, the causes, the
// retry hint and, for quota_exceeded from the broker or self-coding, the `limit` hit);
// otherwise the gRPC code decides: UNAVAILABLE -> unavailable (naming `service`),
// DEADLINE_EXCEEDED -> deadline_exceeded, CANCELLED -> cancelled, INVALID_ARGUMENT ->
// invalid_message, NOT_FOUND -> not_found, FAILED_PRECONDITION -> conflict,
// RESOURCE_EXHAUSTED -> overloaded, anything else -> internal.
anima::v1::ErrorEvent ErrorFromStatus(const grpc::Status& status, const std::string& service);

anima::v1::ErrorEvent MakeError(const std::string& code, const std::string& message);

}  // namespace anima::router
