// SPDX-License-Identifier: Apache-2.0
#include "libbpf_log.h"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

namespace scope_tracker {
namespace {

constexpr size_t kMaxCapture = 16 * 1024;

std::mutex g_mu;
std::string g_log;  // guarded by g_mu

int Print(enum libbpf_print_level level, const char* fmt, va_list ap) {
  if (level == LIBBPF_DEBUG) return 0;
  va_list copy;
  va_copy(copy, ap);
  int n = vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n <= 0) return 0;
  std::vector<char> buf(static_cast<size_t>(n) + 1);
  vsnprintf(buf.data(), buf.size(), fmt, ap);

  std::lock_guard<std::mutex> lock(g_mu);
  // Keep only the tail of oversized messages (the verifier log ends with the reason).
  const char* text = buf.data();
  size_t len = static_cast<size_t>(n);
  if (len > kMaxCapture) {
    text += len - kMaxCapture;
    len = kMaxCapture;
  }
  g_log.append(text, len);
  if (g_log.size() > kMaxCapture) g_log.erase(0, g_log.size() - kMaxCapture);
  return n;
}

}  // namespace

void InstallLibbpfLog() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(Print); });
}

void ClearLibbpfLog() {
  std::lock_guard<std::mutex> lock(g_mu);
  g_log.clear();
}

std::string LibbpfLog() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_log;
}

std::string LibbpfLogTail(size_t max_lines, size_t max_bytes) {
  std::string log = LibbpfLog();
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < log.size()) {
    size_t end = log.find('\n', start);
    if (end == std::string::npos) end = log.size();
    std::string line = log.substr(start, end - start);
    if (line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
    start = end + 1;
  }
  std::string out;
  size_t first = lines.size() > max_lines ? lines.size() - max_lines : 0;
  for (size_t i = first; i < lines.size(); i++) {
    out += lines[i];
    out += '\n';
  }
  if (out.size() > max_bytes) out = "..." + out.substr(out.size() - max_bytes);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string ErrnoText(int err) {
  char buf[256];
  if (libbpf_strerror(err, buf, sizeof(buf)) == 0) return buf;
  return std::strerror(err);
}

std::string WithLog(std::string message) {
  std::string tail = LibbpfLogTail();
  if (!tail.empty()) message += "\n" + tail;
  return message;
}

}  // namespace scope_tracker
