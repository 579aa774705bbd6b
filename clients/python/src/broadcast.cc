// Publisher and Subscriber of a BROADCAST channel for Python (see
// clients/python/shmlane/_shmlane.pyi for the API as Python sees it), over
// shmlane::client::Publisher/Subscriber (clients/broadcast.h).
//
// Zero-copy both ways: Publisher.reserve() is a writable memoryview into the
// ring until commit(); Subscriber.peek() a read-only memoryview of the frame
// in place until release(). Both views are revoked when their frame ends and
// then raise ValueError; while a slice or buffer taken from one is still
// alive, commit()/release()/close() refuse with BufferError, so no Python
// object can reach ring memory the library has handed back (ring_view.h).
//
// Fast paths run under the GIL; every wait releases it and waits in the
// library in slices of kSignalCheckEvery (Ctrl-C works).
#include "clients/broadcast.h"

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
#include "clients/python/src/common.h"
#include "clients/python/src/ring_view.h"

namespace shmlane::python {
namespace {

using client::BroadcastReadResult;
using client::WriteResult;

class PyPublisher {
 public:
  PyPublisher(const std::string& channel, const AttachKwargs& kw) {
    client::Publisher::Options options;
    FillAttachOptions(kw, &options);
    absl::StatusOr<client::Publisher> p;
    {
      py::gil_scoped_release nogil;
      p = client::Publisher::Attach(channel, options);
    }
    if (!p.ok()) RaiseStatus(p.status());
    publisher_.emplace(*std::move(p));
  }

  client::Publisher& get() {
    if (!publisher_) Raise("FailedPrecondition", "the publisher is closed");
    return *publisher_;
  }

  bool Write(py::handle data, std::optional<double> timeout) {
    BusyGuard busy(&busy_, "Publisher");
    client::Publisher& p = get();
    NoOpenReservation();
    Bytes bytes(data.ptr());
    WriteResult r = p.TryWrite(bytes.span());
    if (r == WriteResult::kFull) r = Blocking(p, bytes.span(), DeadlineFrom(timeout));
    return Check(p, r, bytes.span().size());
  }

  bool TryWrite(py::handle data) {
    BusyGuard busy(&busy_, "Publisher");
    client::Publisher& p = get();
    NoOpenReservation();
    Bytes bytes(data.ptr());
    const WriteResult r = p.TryWrite(bytes.span());
    if (r == WriteResult::kFull) return false;
    return Check(p, r, bytes.span().size());
  }

  // Each frame is reserved, copied and committed without publishing; one
  // publication makes the batch visible (and a full ring publishes what is
  // there before waiting, so subscribers can free room).
  size_t WriteMany(py::handle frames, std::optional<double> timeout) {
    BusyGuard busy(&busy_, "Publisher");
    client::Publisher& p = get();
    NoOpenReservation();
    const absl::Time deadline = DeadlineFrom(timeout);
    py::object seq = py::reinterpret_steal<py::object>(
        PySequence_Fast(frames.ptr(), "write_many() takes a sequence of bytes-like frames"));
    if (!seq) throw py::error_already_set();
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
    PyObject** items = PySequence_Fast_ITEMS(seq.ptr());
    std::vector<Bytes> held;
    held.reserve(n);
    for (Py_ssize_t i = 0; i < n; ++i) held.emplace_back(items[i]);
    size_t published = 0;
    for (Py_ssize_t i = 0; i < n; ++i) {
      const std::span<const std::byte> frame = held[i].span();
      client::Reservation r = p.Reserve(frame.size());
      if (r.result == WriteResult::kOk) {
        std::memcpy(r.data.data(), frame.data(), frame.size());
        p.Commit(frame.size(),
                 i + 1 == n ? client::PublishMode::kNow : client::PublishMode::kDefer);
        ++published;
        continue;
      }
      WriteResult w = r.result;
      if (w == WriteResult::kFull) w = Blocking(p, frame, deadline);
      published += Check(p, w, frame.size()) ? 1 : 0;
    }
    return published;
  }

  py::object Reserve(py::object self, size_t n) {
    BusyGuard busy(&busy_, "Publisher");
    client::Publisher& p = get();
    NoOpenReservation();
    client::Reservation r = p.Reserve(n);
    if (r.result == WriteResult::kFull) {
      Raise("Full", absl::StrCat("no room for ", n, " bytes in the ring of channel '", p.channel(),
                                 "' now (a BLOCK subscriber is behind): write() waits for room, "
                                 "reserve() does not"));
    }
    if (r.result != WriteResult::kOk) Check(p, r.result, n);
    reserved_bytes_ = n;
    return view_.Open(reinterpret_cast<char*>(r.data.data()), r.data.size(), false, self);
  }

  void Commit(std::optional<size_t> used, bool publish) {
    BusyGuard busy(&busy_, "Publisher");
    client::Publisher& p = get();
    if (!view_.open()) Raise("FailedPrecondition", "nothing is reserved: call reserve(n) first");
    const size_t n = used.value_or(reserved_bytes_);
    if (n > reserved_bytes_) {
      Raise("InvalidArgument",
            absl::StrCat("commit(", n, ") is more than the ", reserved_bytes_, " bytes reserved"));
    }
    view_.Revoke("commit()/close()");
    p.Commit(n, publish ? client::PublishMode::kNow : client::PublishMode::kDefer);
  }

  size_t Subscribers() {
    BusyGuard busy(&busy_, "Publisher");
    client::Publisher& p = get();
    if (absl::Status s = p.Poll(); !s.ok()) RaiseStatus(s);
    return p.subscribers();
  }

  void Close() {
    BusyGuard busy(&busy_, "Publisher");
    if (!publisher_) return;
    // An open reservation goes out as an empty frame (the library's Close).
    view_.Revoke("commit()/close()");
    publisher_->Close();
    publisher_.reset();
  }

 private:
  WriteResult Blocking(client::Publisher& p, std::span<const std::byte> frame,
                       absl::Time deadline) {
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
  bool Check(client::Publisher& p, WriteResult r, size_t bytes) {
    if (r == WriteResult::kTimeout) {
      Raise("DeadlineExceeded", absl::StrCat("no room in the ring of channel '", p.channel(),
                                             "' before the timeout: a BLOCK subscriber is behind"));
    }
    if (r == WriteResult::kClosed) {
      const absl::Status s = p.status();
      Raise("Closed", s.ok() ? absl::StrCat("the ring of channel '", p.channel(),
                                            "' was closed by the daemon: attach again")
                             : std::string(s.message()));
    }
    return CheckWrite(r, true, bytes, p.max_frame_bytes(), p.channel(), p.status());
  }
  void NoOpenReservation() {
    if (view_.open()) Raise("FailedPrecondition", "a reservation is open: commit() it first");
  }

  std::optional<client::Publisher> publisher_;
  bool busy_ = false;
  size_t reserved_bytes_ = 0;
  RingView view_;
};

// A copied frame with its place in the channel (Subscriber.read_frame()).
struct PyBroadcastFrame {
  py::bytes data;
  uint64_t seq = 0;
  uint64_t missed = 0;
};

class PySubscriber {
 public:
  PySubscriber(const std::string& channel, std::optional<uint32_t> history,
               const AttachKwargs& kw) {
    client::Subscriber::Options options;
    FillAttachOptions(kw, &options);
    client::ReaderStart start;
    if (history.has_value()) {
      start.mode = *history == 0 ? client::ReaderStart::Mode::kLiveTail
                                 : client::ReaderStart::Mode::kHistory;
      start.history_frames = *history;
    }
    absl::StatusOr<client::Subscriber> s;
    {
      py::gil_scoped_release nogil;
      s = client::Subscriber::Attach(channel, start, options);
    }
    if (!s.ok()) RaiseStatus(s.status());
    subscriber_.emplace(*std::move(s));
  }

  client::Subscriber& get() {
    if (!subscriber_) Raise("FailedPrecondition", "the subscriber is closed");
    return *subscriber_;
  }

  py::bytes Read(std::optional<double> timeout) {
    BusyGuard busy(&busy_, "Subscriber");
    NoPeek();
    PyBroadcastFrame f;
    CopyNext(&f, DeadlineFrom(timeout), /*raise_timeout=*/true);
    return f.data;
  }

  PyBroadcastFrame ReadFrame(std::optional<double> timeout) {
    BusyGuard busy(&busy_, "Subscriber");
    NoPeek();
    PyBroadcastFrame f;
    CopyNext(&f, DeadlineFrom(timeout), true);
    return f;
  }

  py::list Drain(size_t max_frames, std::optional<double> timeout) {
    BusyGuard busy(&busy_, "Subscriber");
    NoPeek();
    py::list out;
    if (max_frames == 0) return out;
    PyBroadcastFrame f;
    if (!CopyNext(&f, DeadlineFrom(timeout), /*raise_timeout=*/false)) return out;
    out.append(f.data);
    // After the first frame: what is there now; an end (closed, detached)
    // is raised by the next call instead of losing the frames gathered.
    while (out.size() < max_frames && CopyNext(&f, absl::InfinitePast(), false, false)) {
      out.append(f.data);
    }
    return out;
  }

  py::object Peek(py::object self, std::optional<double> timeout) {
    BusyGuard busy(&busy_, "Subscriber");
    if (view_.open()) return view_.Current();
    client::BroadcastPeek p;
    if (!PeekNext(&p, DeadlineFrom(timeout), /*raise_timeout=*/true, true)) return py::none();
    peeked_seq_ = p.seq;
    peeked_missed_ = carried_missed_ + p.missed;
    carried_missed_ = 0;
    return view_.Open(const_cast<char*>(reinterpret_cast<const char*>(p.data.data())),
                      p.data.size(), /*readonly=*/true, self);
  }

  bool Release() {
    BusyGuard busy(&busy_, "Subscriber");
    client::Subscriber& s = get();
    if (!view_.open()) Raise("FailedPrecondition", "nothing is peeked: call peek() first");
    view_.Revoke("release()/close()");
    if (s.Release() == client::ReleaseResult::kOk) return true;
    // Overwritten while held (drop-oldest): the library counts it missed;
    // what was reported with it is reported again with the next frame.
    carried_missed_ += peeked_missed_;
    return false;
  }

  uint64_t PeekedSeq() {
    if (!view_.open()) Raise("FailedPrecondition", "nothing is peeked: call peek() first");
    return peeked_seq_;
  }
  uint64_t PeekedMissed() {
    if (!view_.open()) Raise("FailedPrecondition", "nothing is peeked: call peek() first");
    return peeked_missed_;
  }

  void Close() {
    BusyGuard busy(&busy_, "Subscriber");
    if (!subscriber_) return;
    if (view_.open()) {
      view_.Revoke("release()/close()");  // refuses while a slice is alive
      (void)subscriber_->Release();
    }
    subscriber_->Close();
    subscriber_.reset();
  }

 private:
  void NoPeek() {
    if (view_.open()) Raise("FailedPrecondition", "a peeked frame is held: release() it first");
  }

  // The next frame in place. False at the deadline unless raise_timeout;
  // an end of the stream raises unless !raise_end (then false).
  bool PeekNext(client::BroadcastPeek* out, absl::Time deadline, bool raise_timeout,
                bool raise_end) {
    client::Subscriber& s = get();
    for (;;) {
      *out = s.Peek();
      if (out->result == BroadcastReadResult::kOk) return true;
      if (out->result != BroadcastReadResult::kEmpty) {
        if (!raise_end) return false;
        RaiseEnd(s, out->result);
      }
      if (absl::Now() >= deadline) {
        if (!raise_timeout) return false;
        Raise("DeadlineExceeded",
              absl::StrCat("no frame on channel '", s.channel(), "' before the timeout"));
      }
      BroadcastReadResult w;
      {
        py::gil_scoped_release nogil;
        w = s.WaitReadable(Slice(deadline));
      }
      if (w == BroadcastReadResult::kTimeout) CheckSignals();
      // Any other outcome: the next Peek says what it is.
    }
  }

  // Copies the next intact frame: peek, copy, release; a frame overwritten
  // while it was copied is dropped and counted with the next one.
  bool CopyNext(PyBroadcastFrame* f, absl::Time deadline, bool raise_timeout,
                bool raise_end = true) {
    client::Subscriber& s = get();
    for (;;) {
      client::BroadcastPeek p;
      if (!PeekNext(&p, deadline, raise_timeout, raise_end)) return false;
      py::bytes data(reinterpret_cast<const char*>(p.data.data()), p.data.size());
      const uint64_t missed = carried_missed_ + p.missed;
      if (s.Release() != client::ReleaseResult::kOk) {
        carried_missed_ = missed;
        continue;
      }
      carried_missed_ = 0;
      *f = PyBroadcastFrame{std::move(data), p.seq, missed};
      return true;
    }
  }

  [[noreturn]] void RaiseEnd(client::Subscriber& s, BroadcastReadResult r) {
    const absl::Status status = s.status();
    switch (r) {
      case BroadcastReadResult::kClosed:
        Raise("Closed", absl::StrCat("the publisher of channel '", s.channel(),
                                     "' closed and every frame it committed was read",
                                     status.ok() ? "" : absl::StrCat(" (", status.message(), ")"),
                                     ": attach again for the next publisher"));
      case BroadcastReadResult::kDetached:
        Raise("Closed",
              absl::StrCat("this subscriber of channel '", s.channel(),
                           "' was detached (the daemon released its slot, or it fell a whole "
                           "ring behind under the disconnect policy)",
                           status.ok() ? "" : absl::StrCat(": ", status.message()),
                           "; attach again"));
      case BroadcastReadResult::kBroken:
        Raise("DataLoss", std::string(status.message()));
      default:
        Raise("Internal", absl::StrCat("unexpected broadcast read result ", ToString(r)));
    }
  }

  std::optional<client::Subscriber> subscriber_;
  bool busy_ = false;
  RingView view_;
  uint64_t peeked_seq_ = 0;
  uint64_t peeked_missed_ = 0;
  uint64_t carried_missed_ = 0;  // missed before a frame lost while held or copied
};

py::object StatusOrNone(const absl::Status& s) {
  if (s.ok()) return py::none();
  return py::str(s.ToString());
}

}  // namespace

void BindBroadcast(py::module_& m) {
  py::class_<PyBroadcastFrame>(m, "BroadcastFrame",
                               "A copied frame of a BROADCAST channel and its place in it.")
      .def_readonly("data", &PyBroadcastFrame::data, "The frame's bytes.")
      .def_readonly("seq", &PyBroadcastFrame::seq,
                    "Its sequence number (the publisher's count, from 0).")
      .def_readonly("missed", &PyBroadcastFrame::missed,
                    "Frames this subscriber lost just before it (lapped under drop-oldest): "
                    "seq == previous seq + 1 + missed.")
      .def("__repr__", [](const PyBroadcastFrame& f) {
        return "BroadcastFrame(seq=" + std::to_string(f.seq) +
               ", missed=" + std::to_string(f.missed) + ", len=" + std::to_string(py::len(f.data)) +
               ")";
      });

  py::class_<PyPublisher>(m, "Publisher", R"doc(
The writing end of a BROADCAST channel: one ring, written once, that every
subscriber reads in place.

The channel's slow-subscriber policy decides what a subscriber that falls
behind costs: under block, write() waits for it; under drop-oldest it is
lapped and told how many frames it missed; under disconnect it is detached.
One publisher per channel. One thread at a time.)doc")
      .def(py::init([](const std::string& channel, std::optional<std::string> runtime_dir,
                       std::optional<std::string> client_name, double attach_timeout, double spin,
                       std::optional<uint32_t> expected_daemon_uid) {
             return new PyPublisher(channel, AttachKwargs{runtime_dir, client_name, attach_timeout,
                                                          spin, expected_daemon_uid});
           }),
           py::arg("channel"), py::kw_only(), py::arg("runtime_dir") = py::none(),
           py::arg("client_name") = py::none(), py::arg("attach_timeout") = 5.0,
           py::arg("spin") = 50e-6, py::arg("expected_daemon_uid") = py::none(),
           "Attaches to `channel` as its publisher (raises Unavailable, PermissionDenied, "
           "NotFound, FailedPrecondition when it has one, InvalidArgument when it is not "
           "BROADCAST, ...).")
      .def("write", &PyPublisher::Write, py::arg("data"), py::arg("timeout") = py::none(),
           "Copies and publishes one frame; True. Under the block policy waits up to `timeout` "
           "seconds (None: forever) for the slowest subscriber, with the GIL released; raises "
           "DeadlineExceeded.")
      .def("try_write", &PyPublisher::TryWrite, py::arg("data"),
           "Copies and publishes one frame without blocking; False when a block-policy "
           "subscriber leaves no room.")
      .def("write_many", &PyPublisher::WriteMany, py::arg("frames"),
           py::arg("timeout") = py::none(),
           "Writes every frame of the sequence with one publication for the batch (waiting as "
           "write() when the ring is full); returns how many were published.")
      .def(
          "reserve",
          [](py::object self, size_t n) { return self.cast<PyPublisher&>().Reserve(self, n); },
          py::arg("n"),
          "Zero-copy: a writable memoryview of `n` bytes in the ring; fill it, then commit(). "
          "Raises Full when a block-policy subscriber leaves no room now.")
      .def("commit", &PyPublisher::Commit, py::arg("used") = py::none(), py::arg("publish") = true,
           "Publishes the reserved frame (its first `used` bytes); the view stops working "
           "(ValueError). publish=False leaves it invisible until the next commit() or write().")
      .def_property_readonly("subscribers", &PyPublisher::Subscribers,
                             "Subscribers linked now (reads the daemon's news first).")
      .def("close", &PyPublisher::Close,
           "Closes the ring: subscribers read what was committed, then see Closed. Idempotent.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyPublisher& p, py::args) { p.Close(); })
      .def_property_readonly("channel", [](PyPublisher& p) { return p.get().channel(); })
      .def_property_readonly("attachment_id",
                             [](PyPublisher& p) { return p.get().attachment_id(); })
      .def_property_readonly("max_frame_bytes",
                             [](PyPublisher& p) { return p.get().max_frame_bytes(); })
      .def_property_readonly(
          "frames_published", [](PyPublisher& p) { return p.get().frames_published(); },
          "Frames committed so far.")
      .def_property_readonly(
          "status", [](PyPublisher& p) { return StatusOrNone(p.get().status()); },
          "None while writes can succeed; else why they fail.");

  py::class_<PySubscriber>(m, "Subscriber", R"doc(
A reading end of a BROADCAST channel: reads every frame the publisher
writes, in order, in place from a read-only mapping.

Subscribers may attach before the publisher. When the publisher goes, the
subscriber reads what was committed, then gets Closed. One thread at a time.)doc")
      .def(py::init([](const std::string& channel, std::optional<uint32_t> history,
                       std::optional<std::string> runtime_dir,
                       std::optional<std::string> client_name, double attach_timeout, double spin,
                       std::optional<uint32_t> expected_daemon_uid) {
             return new PySubscriber(
                 channel, history,
                 AttachKwargs{runtime_dir, client_name, attach_timeout, spin, expected_daemon_uid});
           }),
           py::arg("channel"), py::kw_only(), py::arg("history") = py::none(),
           py::arg("runtime_dir") = py::none(), py::arg("client_name") = py::none(),
           py::arg("attach_timeout") = 5.0, py::arg("spin") = 50e-6,
           py::arg("expected_daemon_uid") = py::none(),
           "Attaches to `channel` as a subscriber. history: None for the channel's "
           "history_frames, 0 for the live tail, N for up to N frames still in the ring. "
           "Raises as Publisher(), and ResourceExhausted at max_subscribers.")
      .def("read", &PySubscriber::Read, py::arg("timeout") = py::none(),
           "The next frame, copied. Raises DeadlineExceeded after `timeout` seconds (None: "
           "forever), Closed once the publisher is gone and every frame was read.")
      .def("read_frame", &PySubscriber::ReadFrame, py::arg("timeout") = py::none(),
           "As read(), with its sequence number and missed count: a BroadcastFrame.")
      .def("drain", &PySubscriber::Drain, py::arg("max") = 1024, py::arg("timeout") = 0.0,
           "Up to `max` frames as a list of bytes: waits up to `timeout` seconds for the first, "
           "then takes what is there without blocking. [] when nothing came.")
      .def(
          "peek",
          [](py::object self, std::optional<double> timeout) {
            return self.cast<PySubscriber&>().Peek(self, timeout);
          },
          py::arg("timeout") = py::none(),
          "Zero-copy: the next frame in place as a read-only memoryview, valid until "
          "release(); using it after release() raises ValueError. Raises as read().")
      .def("release", &PySubscriber::Release,
           "Ends the peeked frame; its view stops working. True if it was intact until now; "
           "False if the publisher overwrote it meanwhile (drop-oldest): discard what was "
           "read from it (it counts as missed).")
      .def_property_readonly("peeked_seq", &PySubscriber::PeekedSeq,
                             "The sequence number of the peeked frame.")
      .def_property_readonly("peeked_missed", &PySubscriber::PeekedMissed,
                             "Frames lost just before the peeked one.")
      .def("close", &PySubscriber::Close,
           "Detaches: a block-policy publisher stops waiting for this subscriber. Idempotent.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PySubscriber& s, py::args) { s.Close(); })
      .def_property_readonly(
          "missed_frames", [](PySubscriber& s) { return s.get().missed_frames(); },
          "Frames lost so far (lapped under drop-oldest, or overwritten while held).")
      .def_property_readonly(
          "frames_read", [](PySubscriber& s) { return s.get().frames_read(); },
          "Frames read intact so far.")
      .def_property_readonly("channel", [](PySubscriber& s) { return s.get().channel(); })
      .def_property_readonly("attachment_id",
                             [](PySubscriber& s) { return s.get().attachment_id(); })
      .def_property_readonly(
          "slot", [](PySubscriber& s) { return s.get().slot(); },
          "This subscriber's slot in the ring.")
      .def_property_readonly("max_frame_bytes",
                             [](PySubscriber& s) { return s.get().max_frame_bytes(); })
      .def_property_readonly(
          "status", [](PySubscriber& s) { return StatusOrNone(s.get().status()); },
          "None while reads can succeed; else why they end.");
}

}  // namespace shmlane::python
