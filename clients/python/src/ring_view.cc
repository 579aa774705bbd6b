#include "clients/python/src/ring_view.h"

#include "absl/strings/str_cat.h"

namespace shmlane::python {

py::object RingView::Open(char* data, size_t n, bool readonly, py::handle owner) {
  data_ = data;
  size_ = n;
  readonly_ = readonly;
  owner_ = owner;
  open_ = true;
  return Current();
}

py::object RingView::Current() {
  if (memview_) {
    py::object alive = memview_();
    if (!alive.is_none()) return alive;
  }
  if (exporter_ == nullptr) {
    FrameView* view = NewFrameView(data_, static_cast<Py_ssize_t>(size_), readonly_, owner_.ptr());
    if (view == nullptr) throw py::error_already_set();
    // Borrowed: the memoryview owns the exporter, the exporter owns the
    // Python owner (so no cycle), and the exporter clears exporter_ when it goes.
    view->clear_on_free = &exporter_;
    exporter_ = view;
    py::object memview = py::reinterpret_steal<py::object>(MemoryViewOf(view));
    Py_DECREF(reinterpret_cast<PyObject*>(view));  // the memoryview holds it now
    if (!memview) throw py::error_already_set();
    memview_ = py::weakref(memview);
    return memview;
  }
  // The first memoryview was dropped but a slice keeps the exporter alive.
  py::object memview = py::reinterpret_steal<py::object>(MemoryViewOf(exporter_));
  if (!memview) throw py::error_already_set();
  memview_ = py::weakref(memview);
  return memview;
}

void RingView::Revoke(const char* then) {
  if (!open_) return;
  if (exporter_ != nullptr) {
    py::object memview = memview_ ? memview_() : py::object(py::none());
    PyObject* mv = memview.is_none() ? nullptr : memview.ptr();
    if (SharedBeyond(mv, exporter_)) {
      // Refused before anything is released: the view stays usable, and the
      // caller may drop the slice and retry.
      throw py::buffer_error(
          absl::StrCat("a slice or buffer of the memoryview is still alive: delete it, then ", then,
                       " (it would point into the ring)"));
    }
    if (!python::Revoke(mv, exporter_)) throw py::error_already_set();
    if (exporter_ != nullptr && exporter_->exports > 0) {
      exporter_->valid = 1;  // a buffer SharedBeyond could not see: still open, as above
      throw py::buffer_error(
          absl::StrCat("a buffer of the memoryview is still alive: delete it, then ", then,
                       " (it would point into the ring)"));
    }
    if (exporter_ != nullptr) {
      exporter_->valid = 0;
      exporter_->clear_on_free = nullptr;
    }
  }
  exporter_ = nullptr;
  memview_ = py::weakref();
  owner_ = py::handle();
  open_ = false;
}

}  // namespace shmlane::python
