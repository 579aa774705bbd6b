// Runtime directory: the daemon's sockets, lock file and (by default) state
// file live in one directory that belongs to the daemon's user and that
// nobody else can write to. Opening it checks exactly that, and takes the
// flock that keeps a second daemon away.
//
// Thread safety: functions are for the daemon's start-up thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/unique_fd.h"

namespace shmlane::control {

// Creates `path` (one level, mode 0755) if missing; then fails with
// FailedPrecondition if it is a symlink, not a directory, owned by another
// uid, or group/world-writable. Returns an O_DIRECTORY fd of it.
absl::StatusOr<dataplane::UniqueFd> OpenRuntimeDir(const std::string& path);

// Everything after OpenRuntimeDir goes through its fd with the *at() calls
// (or, for bind(2), which has none, through /proc/self/fd/DIRFD/NAME), so a
// directory renamed or swapped for a symlink after the checks cannot send
// the daemon's files elsewhere. `shown` is the path used in messages only.

// How LockRuntimeDir treats a lock that another process holds.
struct LockOptions {
  // Zero: refuse at once. Otherwise wait up to this long for the holder to
  // release it (with `replace`: after signalling it).
  absl::Duration wait = absl::ZeroDuration();
  // Send the holder SIGTERM first, but only if it is a shmlaned process of
  // this uid that has this very lock file open (checked through /proc and
  // signalled through a pidfd, so a pid reused by an unrelated process is
  // never signalled). Then wait for it to exit, not only for the lock: the
  // old daemon holds the lock until its process ends, after its last state
  // write and the removal of its sockets, and its TCP listeners are closed
  // by then too.
  bool replace = false;
  // Progress lines ("replacing shmlaned pid N ..."); null: none.
  std::function<void(const std::string&)> note;
};

// Takes an exclusive flock on DIR/shmlaned.lock (0600) and writes our pid in
// it. FailedPrecondition "another shmlaned (pid N) holds DIR/shmlaned.lock"
// if a live daemon holds it (past `options.wait`); with `options.replace`,
// also if the holder is not a shmlaned of ours that may be signalled. Keep
// the fd open for the daemon's lifetime: the lock goes with the process.
absl::StatusOr<dataplane::UniqueFd> LockRuntimeDir(int dir_fd, const std::string& dir,
                                                   const LockOptions& options = {});

// Removes a stale socket `name` in `dir_fd` left by a dead daemon (only while
// holding the lock). Refuses to remove anything that is not a socket.
absl::Status RemoveStaleSocket(int dir_fd, const std::string& name, const std::string& shown);

// A file named relative to an open directory: the runtime directory's
// checked fd when the file lives there, else its own parent directory,
// opened once by path (a --state-file elsewhere keeps the checks of
// ReadPrivateFile on the file itself).
struct FileInDir {
  dataplane::UniqueFd owned_dir;  // valid when dir_fd is not the runtime dir's
  int dir_fd = -1;
  std::string name;  // one path component
  std::string path;  // for messages
};
absl::StatusOr<FileInDir> LocateFile(int runtime_dir_fd, const std::string& runtime_dir,
                                     const std::string& path);

// Writes `bytes` to `file` atomically: a temp file with an unpredictable name
// created O_EXCL (0600) in the same directory, fsync, renameat, fsync the
// directory.
absl::Status WriteFileAtomically(const FileInDir& file, const std::string& bytes);

// Binds the Unix socket `socket_fd` to `name` inside `dir_fd` through
// /proc/self/fd/DIRFD/NAME; then chowns it to `gid` (-1: keep) and chmods it
// to `mode` with fchownat/fchmodat on `dir_fd`.
absl::Status BindUnixSocketAt(int socket_fd, int dir_fd, const std::string& name, uint32_t mode,
                              int gid, const std::string& shown);

// Reads a whole file; NotFound if it does not exist. At most `max_bytes`.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes);

// ReadSmallFile for files the daemon trusts (the state file): refused unless
// a regular file (not a symlink) owned by the daemon's uid and not writable
// by group or others. Reads the very file it checked (no second open).
absl::StatusOr<std::string> ReadPrivateFile(const FileInDir& file, size_t max_bytes);

}  // namespace shmlane::control
