// RingView: the one memoryview an owner (Publisher.reserve(), Subscriber.peek())
// hands out over ring memory, revocable. Open() makes the view; Current()
// returns it again (or a new memoryview over the same exporter if the first
// was dropped); Revoke() ends it, or refuses with BufferError, before
// releasing anything, while a slice or buffer of it is alive (it would
// still point into the ring). The exporter (view.h) holds a reference to
// the Python owner, so the mapping outlives every view; the RingView
// borrows the exporter and the exporter clears that pointer when it goes.
//
// Thread safety: the GIL guards everything.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>

#include "clients/python/src/view.h"

namespace shmlane::python {

namespace py = pybind11;

class RingView {
 public:
  bool open() const { return open_; }

  // A new memoryview over [data, data + n), owned by `owner` (which owns
  // this RingView). REQUIRES: !open().
  py::object Open(char* data, size_t n, bool readonly, py::handle owner);

  // The open view. REQUIRES: open().
  py::object Current();

  // Ends the view (it raises ValueError from now on). Raises BufferError,
  // leaving it open and usable, while a slice or buffer taken from it is
  // alive; `then` names the calls to retry. No-op when not open.
  void Revoke(const char* then);

 private:
  bool open_ = false;
  char* data_ = nullptr;
  size_t size_ = 0;
  bool readonly_ = true;
  py::handle owner_;               // borrowed: it owns this RingView
  FrameView* exporter_ = nullptr;  // borrowed while it lives
  py::weakref memview_;
};

}  // namespace shmlane::python
