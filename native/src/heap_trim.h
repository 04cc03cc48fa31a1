#pragma once
#include <malloc.h>

namespace scope_tracker {

// Every BPF object load parses the kernel's BTF (several MiB of vmlinux types) and frees it when
// the load is done. The plugin runs with a high malloc trim threshold (plugin/runtime/glibc-tunables, for
// speed at churn), so glibc would keep that memory for good: give it back to the kernel after each
// load, whether it succeeded or not.
inline void ReturnFreedHeap() { malloc_trim(0); }

}  // namespace scope_tracker
