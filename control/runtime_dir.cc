#include "control/runtime_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

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

namespace {

// How often a wait for the lock looks again when nothing wakes it: the holder
// named in the lock file is not a process we can watch (another pid
// namespace, a stale number) or has exited and someone else holds the lock.
constexpr absl::Duration kLockRecheck = absl::Milliseconds(100);

// pidfd_open(2) and pidfd_send_signal(2) (Linux 5.3; glibc 2.36 has no
// wrappers in the headers we build with).
int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int PidfdSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// True if we got the lock, false if someone else holds it.
absl::StatusOr<bool> TryLock(int fd, const std::string& path) {
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return false;
    return absl::FailedPreconditionError(absl::StrCat("cannot lock ", path, ": ", Err()));
  }
  return true;
}

// The lock file's text as the holder wrote it ("unknown" when empty).
std::string HolderText(int fd) {
  char buf[32] = {};
  const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  std::string text = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  text = std::string(absl::StripAsciiWhitespace(text));
  return text.empty() ? "unknown" : text;
}

// The pid in the lock file, or 0 if it holds none.
pid_t HolderPid(int fd) {
  int pid = 0;
  if (!absl::SimpleAtoi(HolderText(fd), &pid) || pid <= 0) return 0;
  return pid;
}

// Waits until `pidfd` says its process has exited, or `deadline`; true if
// it exited.
bool AwaitExit(int pidfd, absl::Time deadline) {
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    pollfd p{pidfd, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

// A program's name as /proc/PID/exe gives it, without the " (deleted)" the
// kernel appends once the binary was replaced on disk (an upgrade).
std::string ProgramName(const std::string& exe) {
  std::string name(absl::StripSuffix(exe, " (deleted)"));
  const size_t slash = name.rfind('/');
  return slash == std::string::npos ? name : name.substr(slash + 1);
}

absl::StatusOr<std::string> ReadExe(const std::string& proc) {
  char buf[4096];
  const ssize_t n = ::readlink(absl::StrCat(proc, "/exe").c_str(), buf, sizeof(buf) - 1);
  if (n < 0) return absl::FailedPreconditionError(Err());
  return std::string(buf, static_cast<size_t>(n));
}

// Before --replace signals `pid` (already opened as `pidfd`): it must be a
// shmlaned (by program name: ours, or one named shmlaned, as after an
// upgrade that replaced the binary) running as our effective uid, and it
// must have our lock file open: a shmlaned of another runtime directory
// whose pid an unrelated lock holder wrote is not ours to stop.
absl::Status CheckIsOurDaemon(pid_t pid, int pidfd, int lock_fd, const std::string& path) {
  const std::string proc = absl::StrCat("/proc/", pid);
  const std::string who = absl::StrCat("pid ", pid, " (named in ", path, ")");
  const std::string refuse =
      "; --replace refuses to signal it: stop whatever holds the lock by hand, or use another "
      "--runtime-dir";
  absl::StatusOr<std::string> status = ReadSmallFile(absl::StrCat(proc, "/status"), 1 << 16);
  if (!status.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read ", proc, "/status: ", status.status().message(), refuse));
  }
  const size_t at = status->find("\nUid:");
  std::vector<absl::string_view> uids;
  if (at != std::string::npos) {
    const size_t eol = status->find('\n', at + 1);
    uids = absl::StrSplit(absl::string_view(*status).substr(at + 5, eol - at - 5),
                          absl::ByAnyChar(" \t"), absl::SkipEmpty());
  }
  uint32_t euid = 0;
  if (uids.size() < 2 || !absl::SimpleAtoi(uids[1], &euid)) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot tell which uid ", who, " runs as", refuse));
  }
  if (euid != ::geteuid()) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, " runs as uid ", euid, ", not as this daemon's uid ", ::geteuid(), refuse));
  }
  absl::StatusOr<std::string> exe = ReadExe(proc);
  if (!exe.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot tell which program ", who, " is (readlink ", proc,
                     "/exe: ", exe.status().message(), ")", refuse));
  }
  absl::StatusOr<std::string> self = ReadExe("/proc/self");
  const std::string name = ProgramName(*exe);
  if (name != "shmlaned" && (!self.ok() || name != ProgramName(*self))) {
    return absl::FailedPreconditionError(
        absl::StrCat(who, " is ", *exe, ", not a shmlaned", refuse));
  }
  struct stat lock_st {};
  if (::fstat(lock_fd, &lock_st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot stat ", path, ": ", Err()));
  }
  const std::string fd_dir = absl::StrCat(proc, "/fd");
  DIR* fds = ::opendir(fd_dir.c_str());
  if (fds == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("cannot list ", fd_dir, ": ", Err(), refuse));
  }
  bool holds = false;
  while (dirent* e = ::readdir(fds)) {
    if (e->d_name[0] == '.') continue;
    struct stat st {};
    // stat follows the fd's magic link to the open file itself.
    if (::stat(absl::StrCat(fd_dir, "/", e->d_name).c_str(), &st) == 0 &&
        st.st_dev == lock_st.st_dev && st.st_ino == lock_st.st_ino) {
      holds = true;
      break;
    }
  }
  ::closedir(fds);
  if (!holds) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, " is a shmlaned but does not have ", path,
        " open (it serves another runtime directory, and something else holds this lock)", refuse));
  }
  // /proc/PID was read after the pidfd was opened: if the process the pidfd
  // names is still alive, the pid cannot have been reused in between, so
  // what we checked is what we will signal.
  if (PidfdSignal(pidfd, 0) != 0) {
    return absl::UnavailableError(absl::StrCat(who, " exited while it was being checked"));
  }
  return absl::OkStatus();
}

// Waits for the lock (signalling nobody) until `deadline`.
absl::Status WaitForLock(int fd, const std::string& path, absl::Time deadline,
                         absl::Duration wait) {
  pid_t watched_pid = 0;
  dataplane::UniqueFd watched;  // a pidfd of the holder named in the file
  while (true) {
    absl::StatusOr<bool> got = TryLock(fd, path);
    if (!got.ok()) return got.status();
    if (*got) return absl::OkStatus();
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::FailedPreconditionError(
          absl::StrCat("another shmlaned (pid ", HolderText(fd), ") still holds ", path,
                       " after --lock-wait ", absl::FormatDuration(wait),
                       "; stop it first, wait longer, or start with --replace to stop it"));
    }
    // The lock goes when its holder exits: watch that process when the file
    // names one we can see, and look again every kLockRecheck regardless.
    if (const pid_t pid = HolderPid(fd); pid != watched_pid) {
      watched_pid = pid;
      watched.Reset(pid > 0 ? PidfdOpen(pid) : -1);
    }
    pollfd p{watched.valid() ? watched.get() : -1, POLLIN, 0};
    const int n = ::poll(
        &p, 1, static_cast<int>(absl::ToInt64Milliseconds(std::min(left, kLockRecheck))) + 1);
    // Exited, yet the lock is still held (by another process): stop
    // watching it, or the poll would return at once from now on.
    if (n > 0) watched.Reset();
  }
}

// --replace: checks and signals the holder, then waits for its exit.
absl::Status ReplaceHolder(int fd, const std::string& path, absl::Time deadline,
                           const LockOptions& options) {
  const pid_t pid = HolderPid(fd);
  if (pid == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is locked but names no process (\"", HolderText(fd),
                     "\"); --replace refuses to guess whom to signal: find the holder (fuser ",
                     path, ") and stop it by hand"));
  }
  dataplane::UniqueFd pidfd(PidfdOpen(pid));
  if (!pidfd.valid()) {
    const int err = errno;
    // Exited just now, releasing the lock? Otherwise the lock holder is not
    // the process the file names (another pid namespace, say).
    absl::StatusOr<bool> got = TryLock(fd, path);
    if (got.ok() && *got) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "pid ", pid, " named in ", path, " holds the lock but cannot be watched here (",
        err == ESRCH ? "no such process: a daemon in another pid namespace?"
                     : std::string("pidfd_open: ") + std::strerror(err),
        "); --replace refuses to signal it: stop it by hand, or use --lock-wait"));
  }
  if (absl::Status s = CheckIsOurDaemon(pid, pidfd.get(), fd, path); !s.ok()) {
    absl::StatusOr<bool> got = TryLock(fd, path);
    if (got.ok() && *got) return absl::OkStatus();  // it exited meanwhile
    return s;
  }
  if (PidfdSignal(pidfd.get(), SIGTERM) != 0 && errno != ESRCH) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot send SIGTERM to shmlaned pid ", pid, ": ", Err()));
  }
  const std::string timeout = absl::FormatDuration(options.wait);
  const absl::Time signalled = absl::Now();
  if (options.note) {
    options.note(absl::StrCat("replacing shmlaned pid ", pid, ": sent it SIGTERM, waiting up to ",
                              timeout, " for it to save its state and exit"));
  }
  // Its exit, not only the lock: the old daemon releases the lock when its
  // process ends, and by then its TCP listeners (metrics, --listen) are
  // closed too, so this daemon can bind the same ports.
  if (!AwaitExit(pidfd.get(), deadline)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shmlaned pid ", pid, " still holds ", path, " ", timeout,
        " after --replace sent it SIGTERM (it is still stopping, or stuck); nothing was started. "
        "It will still stop when it can: wait for it and start again, or raise "
        "--replace-timeout"));
  }
  if (options.note) {
    options.note(absl::StrCat("shmlaned pid ", pid, " exited ",
                              absl::FormatDuration(absl::Now() - signalled),
                              " after SIGTERM; taking over ", path));
  }
  absl::StatusOr<bool> got = TryLock(fd, path);
  if (!got.ok()) return got.status();
  if (!*got) {
    return absl::FailedPreconditionError(
        absl::StrCat("shmlaned pid ", pid, " exited, but another process (pid ", HolderText(fd),
                     ") took ", path, " first; stop it first or use another --runtime-dir"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<dataplane::UniqueFd> LockRuntimeDir(int dir_fd, const std::string& dir,
                                                   const LockOptions& options) {
  const std::string path = dir + "/shmlaned.lock";
  dataplane::UniqueFd fd(
      ::openat(dir_fd, "shmlaned.lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot open ", path, ": ", Err()));
  }
  absl::StatusOr<bool> got = TryLock(fd.get(), path);
  if (!got.ok()) return got.status();
  if (!*got) {
    const absl::Time deadline = absl::Now() + options.wait;
    absl::Status waited;
    if (options.replace) {
      waited = ReplaceHolder(fd.get(), path, deadline, options);
    } else if (options.wait > absl::ZeroDuration()) {
      waited = WaitForLock(fd.get(), path, deadline, options.wait);
    } else {
      waited = absl::FailedPreconditionError(
          absl::StrCat("another shmlaned (pid ", HolderText(fd.get()), ") holds ", path,
                       "; stop it first, start with --replace to take over from it, or use another "
                       "--runtime-dir"));
    }
    if (!waited.ok()) return waited;
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
