// Runtime directory: the daemon's sockets, lock file and (by default) state
// file live in one directory that belongs to the daemon's user and that
// nobody else can write to. Opening it checks exactly that, and takes the
// flock that keeps a second daemon away.
//
// Thread safety: functions are for the daemon's start-up thread.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dataplane/unique_fd.h"

namespace shmlane::control {

// Creates `path` (one level, mode 0755) if missing; then fails with
// FailedPrecondition if it is a symlink, not a directory, owned by another
// uid, or group/world-writable. Returns an O_DIRECTORY fd of it.
absl::StatusOr<dataplane::UniqueFd> OpenRuntimeDir(const std::string& path);

// Takes an exclusive flock on DIR/shmlaned.lock (0600) and writes our pid in
// it. FailedPrecondition "another shmlaned (pid N) holds DIR/shmlaned.lock"
// if a live daemon holds it. Keep the fd open for the daemon's lifetime.
absl::StatusOr<dataplane::UniqueFd> LockRuntimeDir(const std::string& dir);

// Removes a stale socket left by a dead daemon (only while holding the lock).
// Refuses to remove anything that is not a socket.
absl::Status RemoveStaleSocket(const std::string& path);

// Writes `bytes` to `path` atomically: temp file (0600) in the same
// directory, fsync, rename, fsync the directory.
absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes);

// Reads a whole file; NotFound if it does not exist. At most `max_bytes`.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes);

// ReadSmallFile for files the daemon trusts (the state file): refused unless
// a regular file (not a symlink) owned by the daemon's uid and not writable
// by group or others.
absl::StatusOr<std::string> ReadPrivateFile(const std::string& path, size_t max_bytes);

}  // namespace shmlane::control
