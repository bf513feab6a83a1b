/* nrt_tensor_read / nrt_tensor_write / nrt_tensor_copy bandwidth through the library's C API,
 * with the caller's buffer at a chosen distance from the tensor's bytes (src/transport/copy.rs;
 * docs/transports.md, "Copy distance": `rep movsb` copies run several times slower when the
 * destination lies 1-31 bytes past the source modulo 4 KiB on some CPUs, and a large malloc()
 * buffer starts 16 bytes into its page).
 *
 *   cc -O2 -I include -o tensor_copy bench/tensor_copy.c -L build/lib -lnrt -Wl,-rpath,$PWD/build/lib
 *   ./tensor_copy [rounds]                                     (default 200 copies per figure)
 *
 * For each size (64 KiB, 256 KiB, 1 MiB) and each offset of the caller's buffer in its page (0,
 * 16, 48): best-of-5 GB/s of `rounds` reads (tensor -> buffer), writes (buffer -> tensor) and
 * copies (tensor -> second tensor at that offset). The tensor's bytes start on a page. Every
 * byte of the last read, write and copy is checked. One JSON object on stdout; exit 1 with the
 * cause on stderr on any failure.
 */
#define _GNU_SOURCE
#include <nrt/nrt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SIZE (1u << 20)
#define PAGE 4096u

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void check(NRT_STATUS st, const char *what) {
    if (st != NRT_SUCCESS) {
        fprintf(stderr, "tensor_copy: %s failed with status %d\n", what, (int)st);
        exit(1);
    }
}

static uint8_t pattern(size_t i, unsigned salt) {
    return (uint8_t)(i * 131u + (i >> 9) + salt * 17u);
}

static void expect(const uint8_t *got, size_t len, unsigned salt, const char *what, size_t size, size_t off) {
    for (size_t i = 0; i < len; i++) {
        if (got[i] != pattern(i, salt)) {
            fprintf(stderr, "tensor_copy: %s of %zu bytes at offset %zu: wrong byte at %zu\n", what, size, off, i);
            exit(1);
        }
    }
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    if (rounds < 1) {
        fprintf(stderr, "usage: tensor_copy [rounds >= 1]\n");
        return 2;
    }
    nrt_tensor_t *t = NULL, *t2 = NULL;
    check(nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, MAX_SIZE, "tensor_copy", &t), "nrt_tensor_allocate");
    check(nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, MAX_SIZE + PAGE, "tensor_copy2", &t2), "nrt_tensor_allocate");
    uint8_t *mem = NULL;
    if (posix_memalign((void **)&mem, PAGE, MAX_SIZE + PAGE) != 0) {
        fprintf(stderr, "tensor_copy: posix_memalign failed\n");
        return 1;
    }
    const size_t sizes[] = {64u << 10, 256u << 10, MAX_SIZE};
    const size_t offs[] = {0, 16, 48};
    unsigned salt = 0;
    printf("{\"rounds\": %d, \"results\": [", rounds);
    const char *sep = "";
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        for (size_t oi = 0; oi < sizeof offs / sizeof *offs; oi++) {
            size_t size = sizes[si], off = offs[oi];
            uint8_t *buf = mem + off;
            double best[3] = {1e30, 1e30, 1e30};
            for (int rep = 0; rep < 5; rep++) {
                salt++;
                for (size_t i = 0; i < size; i++) buf[i] = pattern(i, salt);
                double t0 = now_s();
                for (int r = 0; r < rounds; r++) check(nrt_tensor_write(t, buf, 0, size), "nrt_tensor_write");
                double tw = now_s() - t0;
                memset(buf, 0, size);
                t0 = now_s();
                for (int r = 0; r < rounds; r++) check(nrt_tensor_read(t, buf, 0, size), "nrt_tensor_read");
                double tr = now_s() - t0;
                expect(buf, size, salt, "write then read", size, off);
                t0 = now_s();
                for (int r = 0; r < rounds; r++) check(nrt_tensor_copy(t, 0, t2, off, size), "nrt_tensor_copy");
                double tc = now_s() - t0;
                memset(buf, 0, size);
                check(nrt_tensor_read(t2, buf, off, size), "nrt_tensor_read");
                expect(buf, size, salt, "copy", size, off);
                if (tr < best[0]) best[0] = tr;
                if (tw < best[1]) best[1] = tw;
                if (tc < best[2]) best[2] = tc;
            }
            double bytes = (double)size * rounds;
            printf("%s{\"bytes\": %zu, \"offset\": %zu, \"read_gbytes_per_s\": %.3f, \"write_gbytes_per_s\": %.3f, "
                   "\"copy_gbytes_per_s\": %.3f}",
                   sep, size, off, bytes / best[0] / 1e9, bytes / best[1] / 1e9, bytes / best[2] / 1e9);
            sep = ", ";
        }
    }
    printf("]}\n");
    nrt_tensor_free(&t);
    nrt_tensor_free(&t2);
    free(mem);
    return 0;
}
