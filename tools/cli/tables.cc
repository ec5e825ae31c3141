#include "tools/cli/tables.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tools/cli/job_progress.h"

namespace anima::cli {

namespace {

using Json = nlohmann::json;

// A string field made safe to print (Printable), or "" when absent or not a string.
std::string Text(const Json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? Printable(it->get<std::string>()) : "";
}

double Number(const Json& object, const char* key, double fallback = 0) {
  auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<double>() : fallback;
}

// "10:00:03" of an RFC 3339 time on `today`'s date, else "2026-12-02 10:00:03".
std::string ShortTime(const std::string& rfc3339, const std::string& today) {
  if (rfc3339.size() < 19) return rfc3339;
  std::string day = rfc3339.substr(0, 10);
  std::string time = rfc3339.substr(11, 8);
  return day == today ? time : absl::StrCat(day, " ", time);
}

std::string Bytes(double bytes) {
  if (bytes >= 1 << 30) return absl::StrFormat("%.1f GiB", bytes / (1 << 30));
  if (bytes >= 1 << 20) return absl::StrFormat("%.1f MiB", bytes / (1 << 20));
  if (bytes >= 1 << 10) return absl::StrFormat("%.1f KiB", bytes / (1 << 10));
  return absl::StrFormat("%.0f B", bytes);
}

}  // namespace

size_t Columns(const std::string& s) {
  return static_cast<size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

std::string CutToColumns(const std::string& s, size_t columns) {
  size_t seen = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((s[i] & 0xC0) != 0x80) {
      if (seen == columns) return s.substr(0, i);
      ++seen;
    }
  }
  return s;
}

void Table::Add(std::vector<std::string> cells) {
  cells.resize(columns_.size());
  for (size_t c = 0; c < cells.size(); ++c) {
    size_t max = columns_[c].max_columns;
    if (max > 1 && Columns(cells[c]) > max) cells[c] = CutToColumns(cells[c], max - 1) + "…";
  }
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  std::vector<size_t> widths;
  for (const Column& column : columns_) widths.push_back(Columns(column.header));
  for (const auto& row : rows_) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], Columns(row[c]));
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells, bool header) {
    std::string text;
    for (size_t c = 0; c < cells.size(); ++c) {
      std::string pad(widths[c] - Columns(cells[c]), ' ');
      if (c > 0) text += "  ";
      text += columns_[c].right && !header ? pad + cells[c] : cells[c] + pad;
    }
    text.erase(text.find_last_not_of(' ') + 1);
    absl::StrAppend(&out, text, "\n");
  };
  std::vector<std::string> headers;
  for (const Column& column : columns_) headers.push_back(column.header);
  line(headers, true);
  for (const auto& row : rows_) line(row, false);
  return out;
}

std::string StateTable(const Json& state) {
  std::string out = absl::StrFormat("harmony %.3f  %s  at %s\n", Number(state, "harmony"),
                                    Text(state, "status"), Text(state, "ts"));
  if (auto load = state.find("load"); load != state.end() && load->is_object()) {
    std::string queues;
    if (auto q = load->find("queue_depth"); q != load->end() && q->is_object()) {
      for (const char* p : {"high", "normal", "low"}) {
        absl::StrAppend(&queues, queues.empty() ? "" : " / ", p, " ",
                        static_cast<int64_t>(Number(*q, p)));
      }
    }
    absl::StrAppendFormat(&out, "load: %d connections, queues %s, cpu %.1f%%, rss %s\n",
                          static_cast<int64_t>(Number(*load, "connections")), queues,
                          Number(*load, "cpu_percent"), Bytes(Number(*load, "rss_bytes")));
  }
  Table table({{"MODULE"},
               {"KIND"},
               {"STATUS"},
               {"IN FLIGHT", true},
               {"REQ/S", true},
               {"ERRORS", true},
               {"P95 MS", true},
               {"DETAIL", false, 60}});
  if (auto modules = state.find("modules"); modules != state.end() && modules->is_array()) {
    for (const Json& m : *modules) {
      if (!m.is_object()) continue;
      table.Add({Text(m, "name"), Text(m, "kind"), Text(m, "status"),
                 absl::StrCat(static_cast<int64_t>(Number(m, "in_flight"))),
                 absl::StrFormat("%.1f", Number(m, "requests_per_second")),
                 absl::StrFormat("%.1f%%", 100 * Number(m, "error_rate")),
                 absl::StrCat(static_cast<int64_t>(Number(m, "p95_ms"))), Text(m, "detail")});
    }
  }
  absl::StrAppend(&out, "\n", table.Render());
  return out;
}

std::string JobsTable(const Json& jobs, bool with_principal) {
  std::vector<Table::Column> columns = {
      {"JOB"}, {"STATUS"}, {"ATTEMPTS", true}, {"LANGUAGE"}, {"UPDATED"}};
  if (with_principal) columns.push_back({"PRINCIPAL", false, 24});
  columns.push_back({"TASK", false, 60});
  Table table(std::move(columns));
  // Times of today (UTC) show the time alone.
  std::string today = absl::FormatTime("%Y-%m-%d", absl::Now(), absl::UTCTimeZone());
  if (auto list = jobs.find("jobs"); list != jobs.end() && list->is_array()) {
    for (const Json& job : *list) {
      if (!job.is_object()) continue;
      std::string status = Text(job, "status");
      if (std::string reason = Text(job, "reason"); !reason.empty()) {
        status = absl::StrCat(status, " (", CutToColumns(reason, 40), ")");
      }
      std::vector<std::string> row = {
          Text(job, "job_id"), status, absl::StrCat(static_cast<int64_t>(Number(job, "attempts"))),
          Text(job, "language"), ShortTime(Text(job, "updated_at"), today)};
      if (with_principal) row.push_back(Text(job, "principal"));
      row.push_back(Text(job, "task"));
      table.Add(std::move(row));
    }
  }
  if (table.rows() == 0) return "no jobs\n";
  return table.Render();
}

}  // namespace anima::cli
