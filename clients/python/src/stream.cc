// Producer and Consumer of a STREAM channel for Python (see
// clients/python/shmlane/_shmlane.pyi for the API as Python sees it).
//
// Fast paths run under the GIL (a non-blocking write or a read of a frame
// already copied ahead); anything that may block releases the GIL and waits
// in the library in slices of kSignalCheckEvery, so other threads run and
// Ctrl-C works.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/consumer.h"
#include "clients/producer.h"
#include "clients/python/src/common.h"
#include "clients/python/src/ring_view.h"

namespace shmlane::python {
namespace {

using client::WriteResult;

class PyProducer {
 public:
  PyProducer(const std::string& channel, const AttachKwargs& kw) {
    client::Producer::Options options;
    FillAttachOptions(kw, &options);
    absl::StatusOr<client::Producer> p;
    {
      py::gil_scoped_release nogil;
      p = client::Producer::Attach(channel, options);
    }
    if (!p.ok()) RaiseStatus(p.status());
    producer_.emplace(*std::move(p));
  }

  client::Producer& get() {
    if (!producer_) Raise("FailedPrecondition", "the producer is closed");
    return *producer_;
  }

  bool Write(py::handle data, std::optional<double> timeout) {
    BusyGuard busy(&busy_, "Producer");
    client::Producer& p = get();
    NoOpenReservation();
    Bytes bytes(data.ptr());
    WriteResult r = p.TryWrite(bytes.span());
    if (r == WriteResult::kFull) r = Blocking(p, bytes.span(), DeadlineFrom(timeout));
    return CheckWrite(r, true, bytes.span().size(), p.max_frame_bytes(), p.channel(), p.status());
  }

  bool TryWrite(py::handle data) {
    BusyGuard busy(&busy_, "Producer");
    client::Producer& p = get();
    NoOpenReservation();
    Bytes bytes(data.ptr());
    const WriteResult r = p.TryWrite(bytes.span());
    return CheckWrite(r, false, bytes.span().size(), p.max_frame_bytes(), p.channel(), p.status());
  }

  size_t WriteMany(py::handle frames, std::optional<double> timeout) {
    BusyGuard busy(&busy_, "Producer");
    client::Producer& p = get();
    NoOpenReservation();
    const absl::Time deadline = DeadlineFrom(timeout);
    py::object seq = py::reinterpret_steal<py::object>(
        PySequence_Fast(frames.ptr(), "write_many() takes a sequence of bytes-like frames"));
    if (!seq) throw py::error_already_set();
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
    PyObject** items = PySequence_Fast_ITEMS(seq.ptr());
    std::vector<Bytes> held;
    held.reserve(n);
    spans_.clear();
    for (Py_ssize_t i = 0; i < n; ++i) {
      held.emplace_back(items[i]);
      spans_.push_back(held.back().span());
    }
    size_t done = 0, published = 0;
    while (done < spans_.size()) {
      WriteResult r = WriteResult::kOk;
      const size_t k = p.TryWriteBatch(std::span(spans_).subspan(done), &r);
      done += k;
      published += k;
      if (done == spans_.size()) break;
      if (r == WriteResult::kOk && k > 0) continue;  // stopped early with room: go on
      if (r == WriteResult::kOk || r == WriteResult::kFull) r = Blocking(p, spans_[done], deadline);
      const bool ok =
          CheckWrite(r, true, spans_[done].size(), p.max_frame_bytes(), p.channel(), p.status());
      published += ok ? 1 : 0;
      ++done;
    }
    return published;
  }

  py::object Reserve(py::object self, size_t n) {
    BusyGuard busy(&busy_, "Producer");
    client::Producer& p = get();
    NoOpenReservation();
    client::Reservation r = p.Reserve(n);
    if (r.result != WriteResult::kOk) {
      if (r.result == WriteResult::kFull) {
        Raise("Full", absl::StrCat("no room for ", n, " bytes in the ring of channel '",
                                   p.channel(), "' now: write() blocks for room, reserve() not"));
      }
      CheckWrite(r.result, true, n, p.max_frame_bytes(), p.channel(), p.status());
    }
    reserved_bytes_ = n;
    return view_.Open(reinterpret_cast<char*>(r.data.data()), r.data.size(), false, self);
  }

  void Commit(std::optional<size_t> used, bool publish) {
    BusyGuard busy(&busy_, "Producer");
    client::Producer& p = get();
    if (!view_.open()) Raise("FailedPrecondition", "nothing is reserved: call reserve(n) first");
    const size_t n = used.value_or(reserved_bytes_);
    if (n > reserved_bytes_) {
      Raise("InvalidArgument",
            absl::StrCat("commit(", n, ") is more than the ", reserved_bytes_, " bytes reserved"));
    }
    view_.Revoke("commit()/close()");  // refuses while a slice of the view is alive
    p.Commit(n, publish ? client::PublishMode::kNow : client::PublishMode::kDefer);
  }

  void Publish() {
    BusyGuard busy(&busy_, "Producer");
    get().Publish();
  }

  void Close() {
    BusyGuard busy(&busy_, "Producer");
    if (!producer_) return;
    view_.Revoke("commit()/close()");  // refuses while a slice of the view is alive
    producer_->Close();
    producer_.reset();
  }

 private:
  WriteResult Blocking(client::Producer& p, std::span<const std::byte> frame, absl::Time deadline) {
    for (;;) {
      WriteResult r;
      {
        py::gil_scoped_release nogil;
        r = p.Write(frame, Slice(deadline));
      }
      if (r != WriteResult::kTimeout || absl::Now() >= deadline) return r;
      CheckSignals();
    }
  }
  void NoOpenReservation() {
    if (view_.open()) Raise("FailedPrecondition", "a reservation is open: commit() it first");
  }

  std::optional<client::Producer> producer_;
  bool busy_ = false;
  size_t reserved_bytes_ = 0;
  RingView view_;  // the open reservation's memoryview
  std::vector<std::span<const std::byte>> spans_;
};

// A frame with where it came from (Consumer.read_frame()).
struct PyFrame {
  py::bytes data;
  client::Peer peer;
  uint64_t position = 0;
};

class PyConsumer {
 public:
  PyConsumer(const std::string& channel, const AttachKwargs& kw, py::object on_peer_event) {
    client::Consumer::Options options;
    FillAttachOptions(kw, &options);
    options.on_peer_event = PeerEventCallback(std::move(on_peer_event));
    absl::StatusOr<client::Consumer> c;
    {
      py::gil_scoped_release nogil;
      c = client::Consumer::Attach(channel, std::move(options));
    }
    if (!c.ok()) RaiseStatus(c.status());
    consumer_.emplace(*std::move(c));
  }

  client::Consumer& get() {
    if (!consumer_) Raise("FailedPrecondition", "the consumer is closed");
    return *consumer_;
  }

  py::bytes Read(std::optional<double> timeout) {
    BusyGuard busy(&busy_, "Consumer");
    NoPeek();
    ReadInto(&frame_, DeadlineFrom(timeout), /*raise_timeout=*/true);
    return py::bytes(frame_.data);
  }

  PyFrame ReadFrame(std::optional<double> timeout) {
    BusyGuard busy(&busy_, "Consumer");
    NoPeek();
    ReadInto(&frame_, DeadlineFrom(timeout), true);
    return PyFrame{py::bytes(frame_.data), frame_.peer, frame_.position};
  }

  py::list Drain(size_t max_frames, std::optional<double> timeout) {
    BusyGuard busy(&busy_, "Consumer");
    NoPeek();
    py::list out;
    if (max_frames == 0) return out;
    if (!ReadInto(&frame_, DeadlineFrom(timeout), /*raise_timeout=*/false)) return out;
    out.append(py::bytes(frame_.data));
    while (out.size() < max_frames && ReadInto(&frame_, absl::InfinitePast(), false)) {
      out.append(py::bytes(frame_.data));
    }
    return out;
  }

  // Zero-copy: a read-only memoryview over the frame where the library keeps
  // it (the lane's ring; or the Consumer's copy when an earlier read()
  // fetched it ahead), revoked at release()/close().
  py::object Peek(py::object self, std::optional<double> timeout) {
    BusyGuard busy(&busy_, "Consumer");
    if (view_.open()) return view_.Current();
    client::Consumer& c = get();
    const absl::Time deadline = DeadlineFrom(timeout);
    // A frame already there (or copied ahead) without giving up the GIL.
    absl::StatusOr<client::FrameView> v = c.Peek(absl::InfinitePast());
    while (absl::IsDeadlineExceeded(v.status()) && absl::Now() < deadline) {
      {
        py::gil_scoped_release nogil;
        v = c.Peek(Slice(deadline));
      }
      if (absl::IsDeadlineExceeded(v.status())) CheckSignals();
    }
    if (!v.ok()) RaiseStatus(v.status());
    peeked_ = *v;
    return view_.Open(const_cast<char*>(reinterpret_cast<const char*>(v->data.data())),
                      v->data.size(), /*readonly=*/true, self);
  }

  void Release() {
    BusyGuard busy(&busy_, "Consumer");
    client::Consumer& c = get();
    if (!view_.open()) Raise("FailedPrecondition", "nothing is peeked: call peek() first");
    view_.Revoke("release()/close()");  // refuses while a slice is alive, frame still held
    c.Release();
  }

  const client::Peer& PeekedPeer() { return *Peeked().peer; }
  uint64_t PeekedPosition() { return Peeked().position; }

  void Close() {
    BusyGuard busy(&busy_, "Consumer");
    if (!consumer_) return;
    // Refuses while a slice is alive: closing unmaps the ring it points into.
    // A peeked frame is not released: on a durable channel the next
    // consumer gets it again.
    view_.Revoke("release()/close()");
    consumer_->Close();
    consumer_.reset();
  }

  void Interrupt() {
    if (consumer_) consumer_->Interrupt();
  }

 private:
  void NoPeek() {
    if (view_.open()) Raise("FailedPrecondition", "a peeked frame is held: release() it first");
  }
  // The peeked frame; its peer lives in the library until Release().
  const client::FrameView& Peeked() {
    if (!view_.open()) Raise("FailedPrecondition", "nothing is peeked: call peek() first");
    return peeked_;
  }
  // The next frame into *frame. False at the deadline unless raise_timeout.
  bool ReadInto(client::Frame* frame, absl::Time deadline, bool raise_timeout) {
    client::Consumer& c = get();
    // Frames copied ahead by the last wait are there without blocking.
    absl::Status s = c.Read(frame, absl::InfinitePast());
    while (absl::IsDeadlineExceeded(s) && absl::Now() < deadline) {
      {
        py::gil_scoped_release nogil;
        s = c.Read(frame, Slice(deadline));
      }
      if (absl::IsDeadlineExceeded(s)) CheckSignals();
    }
    if (s.ok()) return true;
    if (absl::IsDeadlineExceeded(s) && !raise_timeout) return false;
    RaiseStatus(s);
  }

  std::optional<client::Consumer> consumer_;
  bool busy_ = false;
  client::Frame frame_;  // read()/drain() buffer, capacity reused
  RingView view_;        // the peeked frame's memoryview
  client::FrameView peeked_;
};

}  // namespace

void BindStream(py::module_& m) {
  py::class_<PyFrame>(m, "Frame", "A copied frame and the producer it came from.")
      .def_readonly("data", &PyFrame::data, "The frame's bytes.")
      .def_readonly("peer", &PyFrame::peer, "The producer that wrote it.")
      .def_readonly("position", &PyFrame::position,
                    "Its position in the producer's lane: (peer.lane_id, position) names the "
                    "frame across consumer restarts of a durable channel.");

  py::class_<PyProducer>(m, "Producer", R"doc(
The writing end of a STREAM channel.

Attaching hands this process one lane into the channel's consumer; frames
wait in the ring until the consumer reads them. The channel's backpressure
policy (block, fail, drop) decides what write() does on a full ring.
One thread at a time.)doc")
      .def(py::init([](const std::string& channel, std::optional<std::string> runtime_dir,
                       std::optional<std::string> client_name, double attach_timeout, double spin,
                       std::optional<uint32_t> expected_daemon_uid) {
             return new PyProducer(channel, AttachKwargs{runtime_dir, client_name, attach_timeout,
                                                         spin, expected_daemon_uid});
           }),
           py::arg("channel"), py::kw_only(), py::arg("runtime_dir") = py::none(),
           py::arg("client_name") = py::none(), py::arg("attach_timeout") = 5.0,
           py::arg("spin") = 50e-6, py::arg("expected_daemon_uid") = py::none(),
           "Attaches to `channel` as a producer (raises Unavailable, PermissionDenied, NotFound, "
           "ResourceExhausted, ...).")
      .def("write", &PyProducer::Write, py::arg("data"), py::arg("timeout") = py::none(),
           "Copies and publishes one frame. True: published; False: dropped (drop policy). "
           "Blocks for room up to `timeout` seconds (None: forever) with the GIL released.")
      .def("try_write", &PyProducer::TryWrite, py::arg("data"),
           "Copies and publishes one frame without blocking; False when the ring is full.")
      .def("write_many", &PyProducer::WriteMany, py::arg("frames"), py::arg("timeout") = py::none(),
           "Writes every frame of the sequence, as many per publication as fit; returns how "
           "many were published (fewer only under the drop policy).")
      .def(
          "reserve",
          [](py::object self, size_t n) { return self.cast<PyProducer&>().Reserve(self, n); },
          py::arg("n"),
          "Zero-copy: a writable memoryview of `n` bytes in the ring; fill it, then commit(). "
          "Raises Full when there is no room now.")
      .def("commit", &PyProducer::Commit, py::arg("used") = py::none(), py::arg("publish") = true,
           "Publishes the reserved frame (its first `used` bytes); the view stops working. "
           "publish=False defers visibility to the next publish() or commit().")
      .def("publish", &PyProducer::Publish, "Makes every committed frame visible.")
      .def("close", &PyProducer::Close,
           "Closes the lane cleanly: the consumer reads what was committed. Idempotent.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyProducer& p, py::args) { p.Close(); })
      .def_property_readonly("channel", [](PyProducer& p) { return p.get().channel(); })
      .def_property_readonly("attachment_id", [](PyProducer& p) { return p.get().attachment_id(); })
      .def_property_readonly("max_frame_bytes",
                             [](PyProducer& p) { return p.get().max_frame_bytes(); })
      .def_property_readonly(
          "peer", [](PyProducer& p) { return p.get().peer(); }, "The consumer on the other end.")
      .def_property_readonly(
          "peer_closed", [](PyProducer& p) { return p.get().PeerClosed(); },
          "True once the consumer or the daemon closed the lane.")
      .def_property_readonly(
          "status",
          [](PyProducer& p) -> py::object {
            const absl::Status s = p.get().status();
            if (s.ok()) return py::none();
            return py::str(s.ToString());
          },
          "None while writes can succeed; else why they fail.");

  py::class_<PyConsumer>(m, "Consumer", R"doc(
The reading end of a STREAM channel: reads every producer's lane (fan-in).

Producers that attach later are picked up inside the reading calls.
One thread at a time, except interrupt().)doc")
      .def(py::init([](const std::string& channel, std::optional<std::string> runtime_dir,
                       std::optional<std::string> client_name, double attach_timeout, double spin,
                       std::optional<uint32_t> expected_daemon_uid, py::object on_peer_event) {
             return new PyConsumer(
                 channel,
                 AttachKwargs{runtime_dir, client_name, attach_timeout, spin, expected_daemon_uid},
                 std::move(on_peer_event));
           }),
           py::arg("channel"), py::kw_only(), py::arg("runtime_dir") = py::none(),
           py::arg("client_name") = py::none(), py::arg("attach_timeout") = 5.0,
           py::arg("spin") = 50e-6, py::arg("expected_daemon_uid") = py::none(),
           py::arg("on_peer_event") = py::none(),
           "Attaches to `channel` as its consumer. on_peer_event(PeerEvent) is called from inside "
           "the reading calls when producers come and go.")
      .def("read", &PyConsumer::Read, py::arg("timeout") = py::none(),
           "The next frame from any producer, copied. Raises DeadlineExceeded after `timeout` "
           "seconds (None: forever), Cancelled after interrupt(), Unavailable when no producer "
           "is left and none can come.")
      .def("read_frame", &PyConsumer::ReadFrame, py::arg("timeout") = py::none(),
           "As read(), with the producer: a Frame(data, peer).")
      .def("drain", &PyConsumer::Drain, py::arg("max") = 1024, py::arg("timeout") = 0.0,
           "Up to `max` frames as a list of bytes: waits up to `timeout` seconds for the first, "
           "then takes what is there without blocking. [] when nothing came.")
      .def(
          "peek",
          [](py::object self, std::optional<double> timeout) {
            return self.cast<PyConsumer&>().Peek(self, timeout);
          },
          py::arg("timeout") = py::none(),
          "Zero-copy: the next frame in place as a read-only memoryview, valid until "
          "release(); using it after release() or close() raises ValueError. peek() again "
          "returns the same frame. Waits with the GIL released; raises as read().")
      .def("release", &PyConsumer::Release,
           "Consumes the peeked frame (on a durable channel the next consumer will not get it "
           "again); its view stops working. Raises BufferError, keeping the frame, while a "
           "slice or buffer of the view is alive.")
      .def_property_readonly("peeked_peer", &PyConsumer::PeekedPeer,
                             "The producer of the peeked frame.")
      .def_property_readonly("peeked_position", &PyConsumer::PeekedPosition,
                             "The lane position of the peeked frame (see Frame.position).")
      .def_property_readonly(
          "position", [](PyConsumer& c) { return c.get().position(); },
          "The lane position of the frame the last read, read_frame, drain or peek returned.")
      .def_property_readonly(
          "durable", [](PyConsumer& c) { return c.get().durable(); },
          "The channel is durable: frames not yet released go to the next consumer. Released "
          "means release() after peek(); for read(), read_frame() and drain(), the next call.")
      .def("interrupt", &PyConsumer::Interrupt,
           "Makes the blocked (or the next) read return Cancelled, once. Any thread.")
      .def("close", &PyConsumer::Close,
           "Detaches; producers blocked on this consumer see Closed (on a durable channel "
           "they keep writing for the next consumer, which gets a frame peeked and not "
           "released again). Ends a peeked view; raises BufferError while a slice of it is "
           "alive. Idempotent.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyConsumer& c, py::args) { c.Close(); })
      .def_property_readonly(
          "peers", [](PyConsumer& c) { return c.get().peers(); }, "The producers attached now.")
      .def_property_readonly("channel", [](PyConsumer& c) { return c.get().channel(); })
      .def_property_readonly("attachment_id",
                             [](PyConsumer& c) { return c.get().attachment_id(); });
}

}  // namespace shmlane::python
