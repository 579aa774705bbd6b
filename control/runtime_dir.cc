#include "control/runtime_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace shmlane::control {
namespace {

std::string Err() { return std::strerror(errno); }

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

absl::StatusOr<dataplane::UniqueFd> OpenRuntimeDir(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("runtime directory \"", path, "\" must be an absolute path"));
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      return absl::FailedPreconditionError(absl::StrCat("cannot stat ", path, ": ", Err()));
    }
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create runtime directory ", path, ": ", Err()));
    }
    // mkdir obeys the umask; make the mode exactly 0755.
    if (::chmod(path.c_str(), 0755) != 0) {
      return absl::FailedPreconditionError(absl::StrCat("cannot chmod ", path, ": ", Err()));
    }
  }
  dataplane::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ELOOP || errno == ENOTDIR) {
      // lstat again to tell a symlink from a plain file.
      if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "runtime directory ", path,
            " is a symlink; refusing to start (point --runtime-dir at a real directory)"));
      }
      return absl::FailedPreconditionError(
          absl::StrCat("runtime directory ", path, " is not a directory"));
    }
    return absl::FailedPreconditionError(absl::StrCat("cannot open ", path, ": ", Err()));
  }
  // Check what we opened, not the path: no race with a swap after the check.
  if (::fstat(fd.get(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot stat ", path, ": ", Err()));
  }
  if (st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "runtime directory ", path, " is owned by uid ", st.st_uid, ", not by this daemon (uid ",
        ::geteuid(), "); refusing to start: chown it or choose another --runtime-dir"));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
    return absl::FailedPreconditionError(absl::StrCat(
        "runtime directory ", path, " has mode ", mode,
        " (group- or world-writable), so another user could replace its sockets; refusing to "
        "start: run `chmod 0755 ",
        path, "`"));
  }
  return fd;
}

absl::StatusOr<dataplane::UniqueFd> LockRuntimeDir(const std::string& dir) {
  const std::string path = dir + "/shmlaned.lock";
  dataplane::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot open ", path, ": ", Err()));
  }
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat("cannot lock ", path, ": ", Err()));
    }
    char buf[32] = {};
    const ssize_t n = ::pread(fd.get(), buf, sizeof(buf) - 1, 0);
    std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "unknown";
    pid = std::string(absl::StripAsciiWhitespace(pid));
    return absl::FailedPreconditionError(
        absl::StrCat("another shmlaned (pid ", pid, ") holds ", path,
                     "; stop it first or use another --runtime-dir"));
  }
  ::fchmod(fd.get(), 0600);
  const std::string pid = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd.get(), 0) != 0 ||
      ::pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return absl::FailedPreconditionError(absl::StrCat("cannot write ", path, ": ", Err()));
  }
  return fd;
}

absl::Status RemoveStaleSocket(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat("cannot stat ", path, ": ", Err()));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " exists and is not a socket; remove it by hand"));
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::FailedPreconditionError(absl::StrCat("cannot remove stale ", path, ": ", Err()));
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes) {
  // An unpredictable name created with O_EXCL (mkostemp, mode 0600): nobody
  // can plant a file or link under the name we are about to write.
  std::string tmp = absl::StrCat(path, ".tmp.XXXXXX");
  dataplane::UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd.valid()) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", Err()));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string err = Err();
      ::unlink(tmp.c_str());
      return absl::InternalError(absl::StrCat("cannot write ", tmp, ": ", err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) {
    const std::string err = Err();
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot fsync ", tmp, ": ", err));
  }
  fd.Reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = Err();
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", err));
  }
  dataplane::UniqueFd dir(::open(DirName(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.valid()) ::fsync(dir.get());
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadPrivateFile(const std::string& path, size_t max_bytes) {
  dataplane::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    if (errno == ELOOP) {
      return absl::FailedPreconditionError(
          absl::StrCat(path,
                       " is a symbolic link; the daemon reads its state only from a file "
                       "it owns: replace the link with the file"));
    }
    return absl::FailedPreconditionError(absl::StrCat("cannot open ", path, ": ", Err()));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
  }
  if (st.st_uid != ::geteuid() || (st.st_mode & 022) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is owned by uid ", st.st_uid, " with mode ",
                     absl::StrFormat("%04o", st.st_mode & 07777),
                     "; the daemon trusts a state file only if its own uid (", ::geteuid(),
                     ") owns it and nobody else can write it: chown/chmod it or move it away"));
  }
  fd.Reset();
  return ReadSmallFile(path, max_bytes);
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  dataplane::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    return absl::FailedPreconditionError(absl::StrCat("cannot open ", path, ": ", Err()));
  }
  std::string out;
  char buf[65536];
  while (true) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::FailedPreconditionError(absl::StrCat("cannot read ", path, ": ", Err()));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " is larger than ", max_bytes, " bytes"));
    }
  }
  return out;
}

}  // namespace shmlane::control
