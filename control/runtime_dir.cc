#include "control/runtime_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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

// Reads `fd` to its end, at most `max_bytes`.
absl::StatusOr<std::string> ReadAll(int fd, const std::string& path, size_t max_bytes) {
  std::string out;
  char buf[65536];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
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

absl::StatusOr<dataplane::UniqueFd> LockRuntimeDir(int dir_fd, const std::string& dir) {
  const std::string path = dir + "/shmlaned.lock";
  dataplane::UniqueFd fd(
      ::openat(dir_fd, "shmlaned.lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
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

absl::Status RemoveStaleSocket(int dir_fd, const std::string& name, const std::string& shown) {
  struct stat st {};
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat("cannot stat ", shown, ": ", Err()));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(shown, " exists and is not a socket; remove it by hand"));
  }
  if (::unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
    return absl::FailedPreconditionError(absl::StrCat("cannot remove stale ", shown, ": ", Err()));
  }
  return absl::OkStatus();
}

absl::StatusOr<FileInDir> LocateFile(int runtime_dir_fd, const std::string& runtime_dir,
                                     const std::string& path) {
  FileInDir out;
  out.path = path;
  const size_t slash = path.rfind('/');
  out.name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (out.name.empty() || out.name == "." || out.name == "..") {
    return absl::InvalidArgumentError(absl::StrCat("\"", path, "\" does not name a file"));
  }
  const std::string dir = DirName(path);
  if (dir == runtime_dir) {
    out.dir_fd = runtime_dir_fd;
    return out;
  }
  out.owned_dir.Reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!out.owned_dir.valid()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open the directory of ", path, ": ", Err()));
  }
  out.dir_fd = out.owned_dir.get();
  return out;
}

absl::Status WriteFileAtomically(const FileInDir& file, const std::string& bytes) {
  // An unpredictable name created with O_EXCL (mode 0600): nobody can plant
  // a file or link under the name we are about to write.
  std::string tmp;
  dataplane::UniqueFd fd;
  for (int attempt = 0; attempt < 16 && !fd.valid(); ++attempt) {
    uint64_t random = 0;
    if (::getrandom(&random, sizeof(random), 0) != static_cast<ssize_t>(sizeof(random))) {
      return absl::InternalError(absl::StrCat("getrandom: ", Err()));
    }
    tmp = absl::StrCat(file.name, ".tmp.", absl::Hex(random, absl::kZeroPad16));
    fd.Reset(::openat(file.dir_fd, tmp.c_str(),
                      O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd.valid() && errno != EEXIST) break;
  }
  const std::string shown_tmp = absl::StrCat(DirName(file.path), "/", tmp);
  if (!fd.valid()) {
    return absl::InternalError(absl::StrCat("cannot create ", shown_tmp, ": ", Err()));
  }
  auto fail = [&](absl::string_view what) {
    const std::string err = Err();
    ::unlinkat(file.dir_fd, tmp.c_str(), 0);
    return absl::InternalError(absl::StrCat(what, " ", shown_tmp, ": ", err));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("cannot write");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return fail("cannot fsync");
  fd.Reset();
  if (::renameat(file.dir_fd, tmp.c_str(), file.dir_fd, file.name.c_str()) != 0) {
    return fail(absl::StrCat("cannot rename to ", file.path, ":"));
  }
  ::fsync(file.dir_fd);
  return absl::OkStatus();
}

absl::Status BindUnixSocketAt(int socket_fd, int dir_fd, const std::string& name, uint32_t mode,
                              int gid, const std::string& shown) {
  // bind(2) has no *at() form. /proc/self/fd/N is the directory we checked,
  // wherever it is now, and keeps sun_path short whatever --runtime-dir is.
  const std::string via = absl::StrCat("/proc/self/fd/", dir_fd, "/", name);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (via.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket name ", name, " is too long"));
  }
  std::memcpy(addr.sun_path, via.c_str(), via.size() + 1);
  if (::bind(socket_fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot bind ", shown, " through ", via, ": ", Err(),
          " (shmlaned needs /proc mounted to bind inside its checked runtime directory)"));
    }
    return absl::UnavailableError(absl::StrCat("cannot bind ", shown, ": ", Err()));
  }
  // Nobody else can write the directory, so the entry is the one we bound.
  if ((gid >= 0 && ::fchownat(dir_fd, name.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(gid),
                              AT_SYMLINK_NOFOLLOW) != 0) ||
      ::fchmodat(dir_fd, name.c_str(), mode, 0) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot set the owner group and mode of ", shown, ": ", Err()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadPrivateFile(const FileInDir& file, size_t max_bytes) {
  const std::string& path = file.path;
  dataplane::UniqueFd fd(
      ::openat(file.dir_fd, file.name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
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
  return ReadAll(fd.get(), path, max_bytes);
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  dataplane::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    return absl::FailedPreconditionError(absl::StrCat("cannot open ", path, ": ", Err()));
  }
  return ReadAll(fd.get(), path, max_bytes);
}

}  // namespace shmlane::control
