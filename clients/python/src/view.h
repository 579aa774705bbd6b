// FrameView: the buffer exporter behind every memoryview the extension hands
// out (reserve() and peek() of Producer, Consumer, Publisher, Subscriber),
// all over shared memory. A memoryview over it can be revoked: the owner
// calls memoryview.release() on the view it returned and then Invalidate(),
// after which the view raises ValueError on use and no new
// buffer can be taken from the exporter. exports() counts the buffers still
// taken from it (slices of the view keep one), so that the owner can refuse
// to commit or close while a slice could still reach shared memory.
//
// An exporter holds a reference to its owner (the Python Producer,
// Consumer, ...), so the mapping outlives every buffer taken from it.
//
// Thread safety: the GIL guards everything.
#pragma once

#include <Python.h>

#include <cstddef>

namespace shmlane::python {

struct FrameView {
  PyObject_HEAD char* data;  // the bytes the buffer shows (shared memory)
  Py_ssize_t size;
  int readonly;
  int valid;           // 0: getbuffer refuses (released)
  Py_ssize_t exports;  // buffers taken and not yet released
  PyObject* owner;     // strong reference or nullptr
  // Set to nullptr when this exporter is freed (the owner's borrowed
  // pointer to it); lives in the owner, which outlives the exporter.
  FrameView** clear_on_free;
};

// Registers the type (once, at module import). False with a Python error set.
bool InitFrameViewType(PyObject* module);

// A new exporter over [data, data+size) (new reference), or nullptr with an
// error set. `owner` (may be null) is kept alive while the exporter lives.
FrameView* NewFrameView(char* data, Py_ssize_t size, bool readonly, PyObject* owner);

// memoryview(view): a new reference or nullptr with an error set.
PyObject* MemoryViewOf(FrameView* view);

// True while something besides `memview` (which may be null) can reach the
// exporter's memory: a slice of it, a buffer re-exported from it
// (numpy.frombuffer), or another memoryview of the exporter. Revoking then
// would leave that object pointing into the ring, so owners refuse (before
// releasing anything, so the view stays usable). Looks inside
// PyMemoryViewObject (CPython's non-limited API).
bool SharedBeyond(PyObject* memview, const FrameView* view);

// Calls `memoryview.release()` on `memview` (which may be null) and marks
// `view` invalid. Returns false with BufferError set when a buffer taken
// from the memoryview itself is still held (the view stays usable then).
bool Revoke(PyObject* memview, FrameView* view);

}  // namespace shmlane::python
