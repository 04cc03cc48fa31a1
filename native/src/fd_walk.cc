// SPDX-License-Identifier: Apache-2.0
#include "fd_walk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace scope_tracker {
namespace {

Napi::Error ErrnoError(Napi::Env env, int err, const char* what, const std::string& path) {
  Napi::Error e = Napi::Error::New(env, std::string(what) + " " + path + ": " + strerror(err));
  // Node's fs errors carry the errno name as `code` (ENOENT, EACCES, ...); so do ours.
  const char* name = strerrorname_np(err);
  e.Set("code", Napi::String::New(env, name != nullptr ? name : "EUNKNOWN"));
  e.Set("errno", Napi::Number::New(env, -err));
  return e;
}

// "socket:[12345]" -> 12345; 0 for any other link text.
double SocketInode(const char* link, ssize_t n) {
  static constexpr char kPrefix[] = "socket:[";
  constexpr ssize_t kPrefixLen = sizeof kPrefix - 1;
  if (n < kPrefixLen + 2 || n > kPrefixLen + 21 || link[n - 1] != ']' || std::memcmp(link, kPrefix, kPrefixLen) != 0) return 0;
  double inode = 0;
  for (ssize_t i = kPrefixLen; i < n - 1; i++) {
    unsigned d = static_cast<unsigned char>(link[i]) - '0';
    if (d > 9) return 0;
    inode = inode * 10 + d;
  }
  return inode;
}

}  // namespace

Napi::Value SocketInodes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    throw Napi::TypeError::New(env, "socketInodes(fdDir): fdDir must be a string");
  }
  const std::string dir = info[0].As<Napi::String>().Utf8Value();
  // Directory positions are cookies (hashes on ext4, 63 bits): a BigInt carries them exactly.
  int64_t from = 0;
  if (info.Length() > 1 && info[1].IsBigInt()) {
    bool lossless = false;
    from = info[1].As<Napi::BigInt>().Int64Value(&lossless);
    if (!lossless) from = -1;
  } else if (info.Length() > 1 && !info[1].IsUndefined()) {
    from = -1;
  }
  const double max_entries = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 2147483647.0;
  if (from < 0 || !(max_entries >= 1)) {
    throw Napi::RangeError::New(env, "socketInodes(fdDir, from, maxEntries): from must be a BigInt >= 0n and maxEntries >= 1");
  }
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) throw ErrnoError(env, errno, "open", dir);
  DIR* d = fdopendir(dfd);
  if (d == nullptr) {
    int err = errno;
    close(dfd);
    throw ErrnoError(env, err, "fdopendir", dir);
  }
  if (from > 0) seekdir(d, static_cast<long>(from));
  std::vector<double> inodes;
  char link[64];
  int failed = 0;
  std::string failedName;
  int64_t next = -1;
  double read = 0;
  for (;;) {
    // The position of the entry about to be read: where the next call starts if this one stops here.
    const long here = telldir(d);
    errno = 0;
    dirent* e = readdir(d);
    if (e == nullptr) break;
    if (e->d_name[0] == '.') continue;
    if (read++ >= max_entries) {
      next = here;
      break;
    }
    ssize_t n = readlinkat(dfd, e->d_name, link, sizeof link);
    if (n < 0) {
      // ENOENT: that fd was closed meanwhile. Anything else (EACCES) fails every other fd alike.
      if (errno == ENOENT) continue;
      failed = errno;
      failedName = e->d_name;
      break;
    }
    // Socket links are short; a longer text is a path, truncated here, and never a socket.
    if (n == static_cast<ssize_t>(sizeof link)) continue;
    double inode = SocketInode(link, n);
    if (inode != 0) inodes.push_back(inode);
  }
  if (failed == 0 && next < 0 && errno != 0) {
    failed = errno;
    failedName = "";
  }
  closedir(d);
  if (failed != 0) throw ErrnoError(env, failed, failedName.empty() ? "readdir" : "readlinkat", failedName.empty() ? dir : dir + "/" + failedName);
  Napi::Float64Array array = Napi::Float64Array::New(env, inodes.size());
  if (!inodes.empty()) std::memcpy(array.Data(), inodes.data(), inodes.size() * sizeof(double));
  Napi::Object out = Napi::Object::New(env);
  out.Set("inodes", array);
  if (next >= 0) out.Set("next", Napi::BigInt::New(env, next));
  return out;
}

}  // namespace scope_tracker
