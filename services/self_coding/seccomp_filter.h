#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace anima::selfcoding {

// The seccomp filter sandboxed code runs under, as the classic BPF program bubblewrap's
// `--seccomp FD` loads. Everything is allowed except what would reach the kernel's larger attack
// surface or let code escape its namespaces, which fails with EPERM: unshare, setns, clone with
// a namespace flag, mount, umount2, pivot_root, ptrace, process_vm_readv/writev, keyctl,
// add_key, request_key, bpf, perf_event_open, userfaultfd, kexec_load, init_module,
// finit_module, delete_module, open_by_handle_at. clone3 fails with ENOSYS instead (its flags
// live in memory a filter cannot read), so glibc falls back to clone, which is checked.
// System calls of another architecture (i386 on x86-64) kill the process.
// With `deny_network`, socket() of the IPv4, IPv6 and packet families fails with EPERM too (Unix
// sockets stay): for code that shares a network namespace with its runner (a pod, a compose
// container), where nothing else keeps it from the runner's neighbours.
absl::StatusOr<std::string> SandboxSeccompProgram(bool deny_network = false);

}  // namespace anima::selfcoding
