#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "services/store/postgres_client.h"

namespace anima::store {

// One component's schema in a shared PostgreSQL database: its migrations in order (the script
// at index i takes the schema from version i to i + 1), recorded in schema_migrations
// (component, version) so that several components share one database.
struct Schema {
  std::string component;  // "selfcoding", "gateway_usage"
  std::string what;       // for messages: "the PostgreSQL job store"
  std::string binary;     // for messages: the program that knows newer versions
  std::vector<const char*> migrations;
};

// Applies the migrations `schema` lacks, in one transaction under one advisory lock shared by
// every component, so that replicas starting at the same time are safe: the second waits, then
// finds nothing to do. FailedPrecondition for a database migrated by a newer build.
absl::Status ApplyMigrations(PostgresClient& client, const Schema& schema);

}  // namespace anima::store
