// TextFormatErrors: collects protobuf's text-format parser errors as
// "FILE:LINE:COLUMN: message" (the first one), for the messages of
// --config and --declare files.
//
// Thread safety: one parse at a time.
#pragma once

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/io/tokenizer.h"

namespace shmlane::control {

class TextFormatErrors final : public google::protobuf::io::ErrorCollector {
 public:
  explicit TextFormatErrors(absl::string_view path) : path_(path) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (first_.empty()) first_ = absl::StrCat(path_, ":", line + 1, ":", column + 1, ": ", message);
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  // The first error, or empty.
  const std::string& first() const { return first_; }

 private:
  std::string path_;
  std::string first_;
};

}  // namespace shmlane::control
