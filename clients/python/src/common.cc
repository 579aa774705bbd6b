#include "clients/python/src/common.h"

#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace shmlane::python {
namespace {

// shmlane._errors, imported once and kept for the life of the process.
py::module_& Errors() {
  static py::module_* errors = new py::module_(py::module_::import("shmlane._errors"));
  return *errors;
}

[[noreturn]] void RaiseObject(py::object error) {
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())), error.ptr());
  throw py::error_already_set();
}

}  // namespace

void Raise(const char* cls, const std::string& message) {
  RaiseObject(Errors().attr(cls)(message));
}

void RaiseStatus(const absl::Status& status) {
  RaiseObject(Errors().attr("error_for_code")(static_cast<int>(status.code()),
                                              std::string(status.message())));
}

absl::Status StatusOfPythonError(py::error_already_set& e) {
  py::object value = e.value();
  if (py::isinstance(value, Errors().attr("Error"))) {
    const int code = value.attr("code").cast<int>();
    const std::string message = py::str(value).cast<std::string>();
    if (code > 0 && code <= 16) return absl::Status(static_cast<absl::StatusCode>(code), message);
  }
  const std::string type = py::str(e.type().attr("__name__")).cast<std::string>();
  return absl::InternalError(
      absl::StrCat("handler raised ", type, ": ", py::str(value).cast<std::string>()));
}

absl::Time DeadlineFrom(std::optional<double> timeout_s) {
  if (!timeout_s.has_value()) return absl::InfiniteFuture();
  if (std::isnan(*timeout_s)) throw py::value_error("timeout is NaN: give seconds or None");
  if (*timeout_s <= 0) return absl::InfinitePast();
  if (std::isinf(*timeout_s)) return absl::InfiniteFuture();
  return absl::Now() + absl::Seconds(*timeout_s);
}

void CheckSignals() {
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

void FillAttachOptions(const AttachKwargs& kw, client::AttachOptions* options) {
  if (kw.runtime_dir) options->runtime_dir = *kw.runtime_dir;
  if (kw.client_name) options->client_name = *kw.client_name;
  if (!(kw.attach_timeout > 0) || std::isinf(kw.attach_timeout)) {
    Raise("InvalidArgument", "attach_timeout must be a positive number of seconds");
  }
  options->attach_timeout = absl::Seconds(kw.attach_timeout);
  if (!(kw.spin >= 0) || kw.spin > 1.0) {
    Raise("InvalidArgument", "spin must be between 0 and 1 second (default 50e-6)");
  }
  options->wait.spin = absl::Seconds(kw.spin);
  options->expected_daemon_uid = kw.expected_daemon_uid;
}

BusyGuard::BusyGuard(bool* busy, const char* what) : busy_(busy) {
  if (*busy_) {
    Raise("FailedPrecondition",
          absl::StrCat("this ", what,
                       " is in a call on another thread; use one object per thread (only "
                       "interrupt()/stop() may come from another thread)"));
  }
  *busy_ = true;
}

bool CheckWrite(dataplane::WriteResult result, bool full_is_error, size_t frame_bytes,
                size_t max_frame_bytes, const std::string& channel, const absl::Status& status) {
  using dataplane::WriteResult;
  switch (result) {
    case WriteResult::kOk:
      return true;
    case WriteResult::kDropped:
      return false;
    case WriteResult::kFull:
      if (!full_is_error) return false;
      Raise("Full", absl::StrCat("the ring of channel '", channel,
                                 "' is full (fail-fast backpressure): the consumer is behind"));
    case WriteResult::kTooLarge:
      Raise("InvalidArgument",
            absl::StrCat("a frame of ", frame_bytes, " bytes is larger than channel '", channel,
                         "' allows (max_frame_bytes ", max_frame_bytes, ")"));
    case WriteResult::kClosed:
      Raise("Closed", status.ok() ? absl::StrCat("the lane of channel '", channel,
                                                 "' is closed: attach again")
                                  : std::string(status.message()));
    case WriteResult::kBroken:
      Raise("DataLoss", std::string(status.message()));
    case WriteResult::kTimeout:
      Raise("DeadlineExceeded",
            absl::StrCat("no room in the ring of channel '", channel, "' before the timeout"));
  }
  Raise("Internal", "unknown write result");
}

namespace {
// Keeps a Python callable alive across copies made without the GIL (the
// library copies its options while attaching, with the GIL released):
// copying the shared_ptr touches no Python reference count, and the last
// owner takes the GIL to drop the callable.
struct GilDeleter {
  void operator()(py::object* fn) const {
    py::gil_scoped_acquire gil;
    delete fn;
  }
};
}  // namespace

client::PeerEventFn PeerEventCallback(py::object fn) {
  if (fn.is_none()) return {};
  std::shared_ptr<py::object> held(new py::object(std::move(fn)), GilDeleter());
  return [held](const client::PeerEvent& event) {
    py::gil_scoped_acquire gil;
    try {
      (*held)(ToPython(event));
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("shmlane on_peer_event callback");
    }
  };
}

}  // namespace shmlane::python
