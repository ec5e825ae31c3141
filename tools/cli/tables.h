#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace anima::cli {

// Terminal columns of UTF-8 text: code points (Anima sends no wide characters).
size_t Columns(const std::string& s);
// The first `columns` code points of `s`, never cutting one in half.
std::string CutToColumns(const std::string& s, size_t columns);

// A plain-text table: a header row, then one row per Add, columns padded to their widest cell
// (numbers right-aligned), two spaces apart, trailing blanks trimmed. Cells are printed as given:
// callers pass text through Printable() first when it came from a server.
class Table {
 public:
  struct Column {
    std::string header;
    bool right = false;      // right-aligned (numbers)
    size_t max_columns = 0;  // cut cells to this many columns (with "…"); 0: no limit
  };
  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}
  void Add(std::vector<std::string> cells);
  std::string Render() const;
  size_t rows() const { return rows_.size(); }

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// `anima-cli state`: a consciousness_state frame as a summary (harmony, status, load) and a table
// of its modules (name, kind, status, in flight, requests/s, error rate, p95, detail).
std::string StateTable(const nlohmann::json& state);

// `anima-cli jobs`: a self_coding_jobs frame as a table, newest first as sent; the principal
// column only when `with_principal` (an admin's list of every principal's jobs).
std::string JobsTable(const nlohmann::json& jobs, bool with_principal);

}  // namespace anima::cli
