// The shmlane._shmlane extension module: Peer, PeerEvent, Frame and the
// module-level helpers; Producer/Consumer are in stream.cc, Client/Server in
// request_reply.cc, Publisher/Subscriber in broadcast.cc. The Python package
// (clients/python/shmlane) re-exports everything with the exceptions of
// shmlane._errors.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "clients/attach_options.h"
#include "clients/python/src/common.h"
#include "clients/python/src/view.h"

namespace shmlane::python {

py::object ToPython(const client::PeerEvent& event) {
  const bool attached = event.kind == client::PeerEvent::Kind::kAttached;
  py::object cls = py::module_::import("shmlane._shmlane").attr("PeerEvent");
  return cls(attached ? "attached" : "detached", event.peer, static_cast<int>(event.status.code()),
             std::string(event.status.message()));
}

namespace {

// What Python sees of a peer event: plain values.
struct PeerEventValue {
  std::string kind;
  client::Peer peer;
  int code;
  std::string message;
};

}  // namespace
}  // namespace shmlane::python

PYBIND11_MODULE(_shmlane, m) {
  namespace py = pybind11;
  using shmlane::client::Peer;
  using shmlane::python::PeerEventValue;
  m.doc() = "Native part of the shmlane package: use `import shmlane` instead.";
  m.attr("__version__") = SHMLANE_PY_VERSION;
  if (!shmlane::python::InitFrameViewType(m.ptr())) throw py::error_already_set();

  py::class_<Peer>(m, "Peer", "The other end of a lane, as the daemon described it.")
      .def_readonly("lane_id", &Peer::lane_id, "The lane (unique within the daemon's lifetime).")
      .def_readonly("attachment_id", &Peer::attachment_id, "The peer's attachment.")
      .def_readonly("name", &Peer::name, "The peer's client name: chosen by the peer, not proof.")
      .def_property_readonly(
          "uid",
          [](const Peer& p) -> py::object {
            return p.has_credentials ? py::int_(p.uid) : py::object(py::none());
          },
          "The peer's uid (SO_PEERCRED, via the daemon), or None when unknown.")
      .def_property_readonly(
          "gid",
          [](const Peer& p) -> py::object {
            return p.has_credentials ? py::int_(p.gid) : py::object(py::none());
          },
          "The peer's gid, or None when unknown.")
      .def_property_readonly(
          "pid",
          [](const Peer& p) -> py::object {
            return p.has_credentials ? py::int_(p.pid) : py::object(py::none());
          },
          "The peer's pid, or None when unknown.")
      .def("__repr__", [](const Peer& p) {
        return "Peer(lane_id=" + std::to_string(p.lane_id) +
               ", attachment_id=" + std::to_string(p.attachment_id) + ", name='" + p.name + "')";
      });

  py::class_<PeerEventValue>(m, "PeerEvent",
                             "A producer or client came (kind 'attached') or went ('detached').")
      .def(py::init([](std::string kind, Peer peer, int code, std::string message) {
        return PeerEventValue{std::move(kind), std::move(peer), code, std::move(message)};
      }))
      .def_readonly("kind", &PeerEventValue::kind, "'attached' or 'detached'.")
      .def_readonly("peer", &PeerEventValue::peer)
      .def_readonly("code", &PeerEventValue::code,
                    "0 for a clean detach; otherwise the status code of why it ended.")
      .def_readonly("message", &PeerEventValue::message, "Why it ended, for a human.")
      .def("__repr__", [](const PeerEventValue& e) {
        return "PeerEvent(kind='" + e.kind + "', peer='" + e.peer.name +
               "', code=" + std::to_string(e.code) + ")";
      });

  shmlane::python::BindStream(m);
  shmlane::python::BindRequestReply(m);
  shmlane::python::BindBroadcast(m);

  m.def(
      "resolve_runtime_dir",
      [](const std::string& dir) { return shmlane::client::ResolveRuntimeDir(dir); },
      py::arg("runtime_dir") = "",
      "The runtime directory: `runtime_dir`, else $SHMLANE_RUNTIME_DIR, else "
      "$XDG_RUNTIME_DIR/shmlane, else /run/shmlane.");
}
