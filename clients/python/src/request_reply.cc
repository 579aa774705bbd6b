// Client and Server of a REQUEST_REPLY channel for Python. A call and a
// serve wait with the GIL released; the server takes the GIL back only to
// run the Python handler.
#include "clients/request_reply.h"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <span>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/python/src/common.h"

namespace shmlane::python {
namespace {

std::span<const std::byte> AsBytes(const py::buffer_info& info) {
  return {static_cast<const std::byte*>(info.ptr), static_cast<size_t>(info.size * info.itemsize)};
}

class PyClient {
 public:
  PyClient(const std::string& channel, const AttachKwargs& kw) {
    client::Client::Options options;
    FillAttachOptions(kw, &options);
    absl::StatusOr<client::Client> c;
    {
      py::gil_scoped_release nogil;
      c = client::Client::Attach(channel, options);
    }
    if (!c.ok()) RaiseStatus(c.status());
    client_.emplace(*std::move(c));
  }

  client::Client& get() {
    if (!client_) Raise("FailedPrecondition", "the client is closed");
    return *client_;
  }

  // The call cannot be cut into slices as reads are (a call given up is a
  // reply dropped), so Ctrl-C waits for `timeout`; give one.
  py::bytes Call(py::buffer request, std::optional<double> timeout) {
    BusyGuard busy(&busy_, "Client");
    client::Client& c = get();
    const absl::Time deadline = DeadlineFrom(timeout);
    py::buffer_info info = request.request();
    absl::Status s;
    {
      py::gil_scoped_release nogil;
      s = c.Call(AsBytes(info), &reply_, deadline);
    }
    if (!s.ok()) RaiseStatus(s);
    return py::bytes(reply_);
  }

  void Close() {
    BusyGuard busy(&busy_, "Client");
    if (client_) client_->Close();
    client_.reset();
  }

 private:
  std::optional<client::Client> client_;
  bool busy_ = false;
  std::string reply_;
};

class PyServer {
 public:
  PyServer(const std::string& channel, const AttachKwargs& kw, double reply_timeout,
           py::object on_peer_event) {
    client::Server::Options options;
    FillAttachOptions(kw, &options);
    if (!(reply_timeout >= 0)) Raise("InvalidArgument", "reply_timeout must be >= 0 seconds");
    options.reply_timeout = absl::Seconds(reply_timeout);
    options.on_peer_event = PeerEventCallback(std::move(on_peer_event));
    absl::StatusOr<client::Server> s;
    {
      py::gil_scoped_release nogil;
      s = client::Server::Attach(channel, std::move(options));
    }
    if (!s.ok()) RaiseStatus(s.status());
    server_.emplace(*std::move(s));
  }

  client::Server& get() {
    if (!server_) Raise("FailedPrecondition", "the server is closed");
    return *server_;
  }

  // Serves until `timeout`, stop(), or (once) a request when `once`.
  size_t Serve(py::function handler, std::optional<double> timeout, bool once) {
    BusyGuard busy(&busy_, "Server");
    client::Server& server = get();
    const absl::Time deadline = DeadlineFrom(timeout);
    std::optional<py::error_already_set> fatal;  // KeyboardInterrupt, SystemExit, ...
    auto handle = [&](const client::Server::Request& request, std::string* reply) {
      py::gil_scoped_acquire gil;
      if (fatal) return absl::CancelledError("the server is stopping");
      try {
        py::object result = handler(
            py::bytes(reinterpret_cast<const char*>(request.data.data()), request.data.size()));
        if (py::isinstance<py::str>(result)) {
          *reply = result.cast<std::string>();
        } else if (!result.is_none()) {
          py::buffer_info info = py::buffer(result).request();
          std::span<const std::byte> bytes = AsBytes(info);
          reply->assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        }
        return absl::OkStatus();
      } catch (py::error_already_set& e) {
        if (!e.matches(PyExc_Exception)) {
          fatal.emplace(std::move(e));
          server_->Stop();
          return absl::CancelledError("the server is stopping");
        }
        return StatusOfPythonError(e);
      } catch (py::cast_error& e) {
        return absl::InternalError(
            absl::StrCat("handler returned something that is not bytes-like or str: ", e.what()));
      }
    };
    size_t total = 0;
    for (;;) {
      absl::StatusOr<size_t> n;
      {
        py::gil_scoped_release nogil;
        n = server.ServeOnce(handle, Slice(deadline));
      }
      if (fatal) throw std::move(*fatal);
      if (!n.ok()) {
        if (absl::IsCancelled(n.status())) return total;  // stop()
        RaiseStatus(n.status());
      }
      total += *n;
      if ((once && *n > 0) || absl::Now() >= deadline) return total;
      CheckSignals();
    }
  }

  void Stop() {
    if (server_) server_->Stop();
  }

  void Close() {
    BusyGuard busy(&busy_, "Server");
    if (server_) server_->Close();
    server_.reset();
  }

 private:
  std::optional<client::Server> server_;
  bool busy_ = false;
};

}  // namespace

void BindRequestReply(py::module_& m) {
  py::class_<PyClient>(m, "Client", R"doc(
A client of a REQUEST_REPLY channel: call() sends a request and waits for
its reply. One call in flight; use one Client per thread.)doc")
      .def(py::init([](const std::string& channel, std::optional<std::string> runtime_dir,
                       std::optional<std::string> client_name, double attach_timeout, double spin,
                       std::optional<uint32_t> expected_daemon_uid) {
             return new PyClient(channel, AttachKwargs{runtime_dir, client_name, attach_timeout,
                                                       spin, expected_daemon_uid});
           }),
           py::arg("channel"), py::kw_only(), py::arg("runtime_dir") = py::none(),
           py::arg("client_name") = py::none(), py::arg("attach_timeout") = 5.0,
           py::arg("spin") = 50e-6, py::arg("expected_daemon_uid") = py::none(),
           "Attaches to `channel` as a client.")
      .def("call", &PyClient::Call, py::arg("request"), py::arg("timeout") = py::none(),
           "Sends `request` (bytes-like) and returns the reply's bytes. Raises "
           "DeadlineExceeded after `timeout` seconds (None: forever, and Ctrl-C waits), "
           "Unavailable when the server is gone, or the error the server's handler raised.")
      .def("close", &PyClient::Close, "Detaches. Idempotent.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyClient& c, py::args) { c.Close(); })
      .def_property_readonly("channel", [](PyClient& c) { return c.get().channel(); })
      .def_property_readonly("server", [](PyClient& c) { return c.get().server(); })
      .def_property_readonly("max_request_bytes",
                             [](PyClient& c) { return c.get().max_request_bytes(); });

  py::class_<PyServer>(m, "Server", R"doc(
The server of a REQUEST_REPLY channel: serve(handler) answers every client.
handler(request: bytes) returns the reply (bytes-like or str); raising a
shmlane.Error sends its code and message to the caller, any other Exception
INTERNAL. One thread at a time, except stop().)doc")
      .def(py::init([](const std::string& channel, std::optional<std::string> runtime_dir,
                       std::optional<std::string> client_name, double attach_timeout, double spin,
                       std::optional<uint32_t> expected_daemon_uid, double reply_timeout,
                       py::object on_peer_event) {
             return new PyServer(
                 channel,
                 AttachKwargs{runtime_dir, client_name, attach_timeout, spin, expected_daemon_uid},
                 reply_timeout, std::move(on_peer_event));
           }),
           py::arg("channel"), py::kw_only(), py::arg("runtime_dir") = py::none(),
           py::arg("client_name") = py::none(), py::arg("attach_timeout") = 5.0,
           py::arg("spin") = 50e-6, py::arg("expected_daemon_uid") = py::none(),
           py::arg("reply_timeout") = 1.0, py::arg("on_peer_event") = py::none(),
           "Attaches to `channel` as its server.")
      .def(
          "serve",
          [](PyServer& s, py::function handler, std::optional<double> timeout) {
            return s.Serve(std::move(handler), timeout, false);
          },
          py::arg("handler"), py::arg("timeout") = py::none(),
          "Handles requests until `timeout` seconds (None: forever) or stop(); returns how many.")
      .def(
          "serve_once",
          [](PyServer& s, py::function handler, std::optional<double> timeout) {
            return s.Serve(std::move(handler), timeout, true);
          },
          py::arg("handler"), py::arg("timeout") = py::none(),
          "Handles the requests that come first (at least one) or returns 0 at `timeout`.")
      .def("stop", &PyServer::Stop, "Makes serve() return soon. Any thread.")
      .def("close", &PyServer::Close, "Detaches: clients' calls fail with Unavailable.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyServer& s, py::args) { s.Close(); })
      .def_property_readonly("channel", [](PyServer& s) { return s.get().channel(); })
      .def_property_readonly("clients", [](PyServer& s) { return s.get().clients(); })
      .def_property_readonly("dropped_replies",
                             [](PyServer& s) { return s.get().dropped_replies(); });
}

}  // namespace shmlane::python
