// Helpers every binding of the shmlane Python extension shares: raising the
// package's exceptions (shmlane._errors) from absl::Status and write results,
// turning float-second timeouts into deadlines, the attach options every
// constructor takes as keywords, the bytes of a bytes-like argument, and the
// guard that refuses a second thread while one is inside a call of a
// one-thread-at-a-time object.
//
// Thread safety: every function here needs the GIL, except Slice().
#pragma once

#include <pybind11/pybind11.h>

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "clients/attach_options.h"
#include "dataplane/lane.h"

namespace shmlane::python {

namespace py = pybind11;

// Raises shmlane.<cls>(message). REQUIRES: the GIL.
[[noreturn]] void Raise(const char* cls, const std::string& message);
// Raises the shmlane.Error subclass for status.code(). REQUIRES: !status.ok(), the GIL.
[[noreturn]] void RaiseStatus(const absl::Status& status);
// The status of a Python exception a handler raised: a shmlane.Error keeps
// its code and message, anything else is INTERNAL "Type: message".
absl::Status StatusOfPythonError(py::error_already_set& e);

// None: forever; a number of seconds (<= 0: do not wait). NaN is refused.
absl::Time DeadlineFrom(std::optional<double> timeout_s);

// Blocking waits run in slices of at most this length, so that the thread
// gets the GIL back now and then to run Python's signal handlers (Ctrl-C
// ends a read that waits forever). Not a poll: each slice blocks in the
// library until a frame or the slice's end.
inline constexpr absl::Duration kSignalCheckEvery = absl::Milliseconds(200);
inline absl::Time Slice(absl::Time deadline) {
  return std::min(deadline, absl::Now() + kSignalCheckEvery);
}
// Runs pending signal handlers; throws what they raised. REQUIRES: the GIL.
void CheckSignals();

// The keyword options of every constructor, as AttachOptions.
struct AttachKwargs {
  std::optional<std::string> runtime_dir;
  std::optional<std::string> client_name;
  double attach_timeout = 5.0;
  double spin = 50e-6;
  std::optional<uint32_t> expected_daemon_uid;
};
void FillAttachOptions(const AttachKwargs& kw, client::AttachOptions* options);

// Marks an object busy for the length of a call, under the GIL: a second
// thread calling into it meanwhile gets FailedPrecondition instead of
// racing inside a library object that is one-thread-at-a-time.
class BusyGuard {
 public:
  BusyGuard(bool* busy, const char* what);
  ~BusyGuard() { *busy_ = false; }
  BusyGuard(const BusyGuard&) = delete;
  BusyGuard& operator=(const BusyGuard&) = delete;

 private:
  bool* busy_;
};

// Raises the exception for a write outcome other than kOk/kDropped (and
// kFull when `full_is_error`). Returns true for kOk, false for kDropped/kFull.
// `status` is the producer's status() (why a lane closed or broke).
bool CheckWrite(dataplane::WriteResult result, bool full_is_error, size_t frame_bytes,
                size_t max_frame_bytes, const std::string& channel, const absl::Status& status);

// The bytes of a bytes-like object for one call: bytes directly, anything
// else through the buffer protocol (held until destruction).
class Bytes {
 public:
  explicit Bytes(PyObject* obj) {
    if (PyBytes_Check(obj)) {
      data_ = {reinterpret_cast<const std::byte*>(PyBytes_AS_STRING(obj)),
               static_cast<size_t>(PyBytes_GET_SIZE(obj))};
      return;
    }
    if (PyObject_GetBuffer(obj, &buffer_, PyBUF_SIMPLE) != 0) throw py::error_already_set();
    held_ = true;
    data_ = {static_cast<const std::byte*>(buffer_.buf), static_cast<size_t>(buffer_.len)};
  }
  Bytes(Bytes&& other) noexcept
      : data_(other.data_), buffer_(other.buffer_), held_(std::exchange(other.held_, false)) {}
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  Bytes& operator=(Bytes&&) = delete;
  ~Bytes() {
    if (held_) PyBuffer_Release(&buffer_);
  }
  std::span<const std::byte> span() const { return data_; }

 private:
  std::span<const std::byte> data_;
  Py_buffer buffer_{};
  bool held_ = false;
};

// Registers Peer, PeerEvent and Frame (module.cc) and the bindings of each file.
void BindStream(py::module_& m);
void BindRequestReply(py::module_& m);
void BindBroadcast(py::module_& m);

// A peer event for Python, built from client::PeerEvent. REQUIRES: the GIL.
py::object ToPython(const client::PeerEvent& event);
// Wraps a Python callable as a PeerEventFn that takes the GIL to call it;
// what it raises is reported as unraisable (the library call goes on).
client::PeerEventFn PeerEventCallback(py::object fn);

}  // namespace shmlane::python
