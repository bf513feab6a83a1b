/* Runs a program where the kernel refuses process_vm_readv, as a container's seccomp policy or
 * Yama's ptrace_scope can: no_vm_readv PROGRAM [ARGS...]
 *
 * Installs a seccomp filter that fails process_vm_readv with EPERM (every other system call is
 * allowed), checks that it does, then executes PROGRAM, which inherits the filter, as do its
 * children. make test runs shared-memory transfers under it: the library must still use shared
 * memory, staging what the peer cannot read. Exit 2 on bad usage, 3 when the filter cannot be
 * installed or does not work (the run proves nothing then), else PROGRAM's own status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#else
#error "no_vm_readv: add this architecture's AUDIT_ARCH"
#endif

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: no_vm_readv PROGRAM [ARGS...]\n");
        return 2;
    }
    struct sock_filter code[] = {
        /* Another architecture's system call numbers mean other calls: refuse them all. */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_vm_readv, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = (unsigned short)(sizeof code / sizeof code[0]), .filter = code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        fprintf(stderr, "no_vm_readv: cannot install the seccomp filter: %s\n", strerror(errno));
        return 3;
    }
    char src[8] = "probe", dst[8] = {0};
    struct iovec l = {dst, sizeof dst}, r = {src, sizeof src};
    errno = 0;
    if (process_vm_readv(getpid(), &l, 1, &r, 1, 0) != -1 || errno != EPERM) {
        fprintf(stderr, "no_vm_readv: process_vm_readv still works under the filter\n");
        return 3;
    }
    execvp(argv[1], argv + 1);
    fprintf(stderr, "no_vm_readv: cannot run %s: %s\n", argv[1], strerror(errno));
    return 3;
}
