#include "clients/python/src/view.h"

namespace shmlane::python {
namespace {

PyTypeObject* frame_view_type = nullptr;

int GetBuffer(PyObject* self, Py_buffer* buffer, int flags) {
  auto* v = reinterpret_cast<FrameView*>(self);
  if (!v->valid) {
    PyErr_SetString(PyExc_BufferError,
                    "shmlane: this frame view was released (commit()/release() ends it)");
    buffer->obj = nullptr;
    return -1;
  }
  if (PyBuffer_FillInfo(buffer, self, v->data, v->size, v->readonly, flags) < 0) return -1;
  ++v->exports;
  return 0;
}

void ReleaseBuffer(PyObject* self, Py_buffer* /*buffer*/) {
  --reinterpret_cast<FrameView*>(self)->exports;
}

void Dealloc(PyObject* self) {
  auto* v = reinterpret_cast<FrameView*>(self);
  if (v->clear_on_free != nullptr && *v->clear_on_free == v) *v->clear_on_free = nullptr;
  Py_CLEAR(v->owner);
  PyTypeObject* type = Py_TYPE(self);
  type->tp_free(self);
  Py_DECREF(type);  // heap types are referenced by their instances
}

PyType_Slot frame_view_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(Dealloc)},
    {Py_tp_doc, const_cast<char*>("The exporter of a shmlane frame view (see memoryview).")},
    {Py_bf_getbuffer, reinterpret_cast<void*>(GetBuffer)},
    {Py_bf_releasebuffer, reinterpret_cast<void*>(ReleaseBuffer)},
    {0, nullptr},
};

PyType_Spec frame_view_spec = {
    "shmlane._shmlane.FrameView",
    sizeof(FrameView),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    frame_view_slots,
};

}  // namespace

bool InitFrameViewType(PyObject* module) {
  PyObject* type = PyType_FromSpec(&frame_view_spec);
  if (type == nullptr) return false;
  frame_view_type = reinterpret_cast<PyTypeObject*>(type);
  Py_INCREF(type);  // the module keeps one, we keep one for NewFrameView
  if (PyModule_AddObject(module, "FrameView", type) < 0) {
    Py_DECREF(type);
    return false;
  }
  return true;
}

FrameView* NewFrameView(char* data, Py_ssize_t size, bool readonly, PyObject* owner) {
  auto* v = PyObject_New(FrameView, frame_view_type);
  if (v == nullptr) return nullptr;
  v->data = data;
  v->size = size;
  v->readonly = readonly ? 1 : 0;
  v->valid = 1;
  v->exports = 0;
  Py_XINCREF(owner);
  v->owner = owner;
  v->clear_on_free = nullptr;
  return v;
}

PyObject* MemoryViewOf(FrameView* view) {
  return PyMemoryView_FromObject(reinterpret_cast<PyObject*>(view));
}

bool SharedBeyond(PyObject* memview, const FrameView* view) {
  if (memview == nullptr || !PyMemoryView_Check(memview)) return view->exports > 0;
  const auto* mv = reinterpret_cast<const PyMemoryViewObject*>(memview);
  if ((mv->flags & _Py_MEMORYVIEW_RELEASED) != 0) return view->exports > 0;
  // The memoryview's managed buffer holds one export of the exporter and
  // counts every memoryview registered on it (this one and its slices);
  // mv->exports counts buffers taken from this memoryview itself.
  return mv->exports > 0 || mv->mbuf->exports > 1 || view->exports > 1;
}

bool Revoke(PyObject* memview, FrameView* view) {
  if (memview != nullptr) {
    PyObject* r = PyObject_CallMethod(memview, "release", nullptr);
    if (r == nullptr) return false;
    Py_DECREF(r);
  }
  view->valid = 0;
  return true;
}

}  // namespace shmlane::python
