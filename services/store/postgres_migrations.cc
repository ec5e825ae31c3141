#include "services/store/postgres_migrations.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace anima::store {

namespace {
// "anima" and 1: the advisory lock every component's migrations take.
constexpr int64_t kMigrationLock = 0x616e696d61000001;
}  // namespace

absl::Status ApplyMigrations(PostgresClient& client, const Schema& schema) {
  const int64_t latest = static_cast<int64_t>(schema.migrations.size());
  return client.Transaction("migrate", [&](PgSession& tx) -> absl::Status {
    // Held until COMMIT.
    if (auto s =
            tx.Query("SELECT pg_advisory_xact_lock($1::bigint)", {PgParam::Int(kMigrationLock)});
        !s.ok()) {
      return s.status();
    }
    if (auto s = tx.ExecScript("CREATE TABLE IF NOT EXISTS schema_migrations ("
                               "  component text NOT NULL, version integer NOT NULL,"
                               "  applied_at timestamptz NOT NULL DEFAULT now(),"
                               "  PRIMARY KEY (component, version))");
        !s.ok()) {
      return s;
    }
    auto rows = tx.Query(
        "SELECT COALESCE(max(version), 0) FROM schema_migrations WHERE component = $1::text",
        {PgParam::Text(schema.component)});
    if (!rows.ok()) return rows.status();
    int64_t version = rows->Int(0, 0);
    if (version > latest) {
      return absl::FailedPreconditionError(absl::StrCat(schema.what, " has schema version ",
                                                        version, ", newer than this build's ",
                                                        latest, ": run a newer ", schema.binary));
    }
    for (int64_t v = version; v < latest; ++v) {
      if (auto s = tx.ExecScript(schema.migrations[v]); !s.ok()) {
        return absl::InternalError(
            absl::StrCat(schema.what, ": migration to version ", v + 1, ": ", s.message()));
      }
      auto recorded = tx.Query(
          "INSERT INTO schema_migrations (component, version) VALUES ($1::text, $2::integer)",
          {PgParam::Text(schema.component), PgParam::Int(v + 1)});
      if (!recorded.ok()) return recorded.status();
      spdlog::info("{}: schema version {} applied", schema.what, v + 1);
    }
    return absl::OkStatus();
  });
}

}  // namespace anima::store
