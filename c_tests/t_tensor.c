/* Every tensor function over every placement: allocate, size, va, read/write, memset, copy
 * (overlapping too), slices, empty + attach_buffer, free, and bad handles/ranges. */
#include "common.h"

int main(void) {
    test_begin("t_tensor");
    const nrt_tensor_placement_t pl[] = {NRT_TENSOR_PLACEMENT_DEVICE, NRT_TENSOR_PLACEMENT_HOST, NRT_TENSOR_PLACEMENT_VIRTUAL};
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    for (int p = 0; p < 3; p++) {
        const size_t n = 100003;
        nrt_tensor_t *a = NULL, *b = NULL;
        EXPECT(nrt_tensor_allocate(pl[p], 0, n, "a", &a), NRT_SUCCESS);
        EXPECT(nrt_tensor_allocate(pl[p], 3, n, NULL, &b), NRT_SUCCESS);
        if (!a || !b) continue;
        CHECK(nrt_tensor_get_size(a) == n, "size");
        uint8_t *va = nrt_tensor_get_va(a);
        CHECK(va != NULL, "va");
        size_t zero = 1;
        for (size_t i = 0; i < n; i++) zero &= va[i] == 0;
        CHECK(zero, "fresh tensor is zero-filled");
        uint8_t *buf = malloc(n), *back = malloc(n);
        fill(buf, n, (uint64_t)p);
        EXPECT(nrt_tensor_write(a, buf, 0, n), NRT_SUCCESS);
        CHECK(first_bad(va, n, (uint64_t)p) == SIZE_MAX, "write lands at va");
        memset(back, 0, n);
        EXPECT(nrt_tensor_read(a, back, 0, n), NRT_SUCCESS);
        CHECK(memcmp(back, buf, n) == 0, "read back");
        EXPECT(nrt_tensor_read(a, back, 10, 5), NRT_SUCCESS);
        CHECK(memcmp(back, buf + 10, 5) == 0, "partial read");
        /* memset */
        EXPECT(nrt_tensor_memset(a, 7, 0x1FF, 13), NRT_SUCCESS); /* value converted to unsigned char */
        verify_const(va + 7, 13, 0xFF, "memset range");
        CHECK(memcmp(va, buf, 7) == 0 && memcmp(va + 20, buf + 20, n - 20) == 0, "memset stays in range");
        EXPECT(nrt_tensor_memset(a, 0, 0, n), NRT_SUCCESS); /* the whole tensor */
        verify_const(va, n, 0, "memset of the whole tensor");
        EXPECT(nrt_tensor_memset(a, n, 9, 0), NRT_SUCCESS); /* empty range at the end */
        EXPECT(nrt_tensor_memset(a, n - 1, 1, 2), NRT_INVALID);
        EXPECT(nrt_tensor_memset(a, UINT64_MAX, 1, 2), NRT_INVALID);
        /* copy between tensors and within one (overlapping) */
        EXPECT(nrt_tensor_write(a, buf, 0, n), NRT_SUCCESS);
        EXPECT(nrt_tensor_copy(a, 100, b, 1, 5000), NRT_SUCCESS);
        CHECK(memcmp((uint8_t *)nrt_tensor_get_va(b) + 1, buf + 100, 5000) == 0, "copy");
        CHECK(((uint8_t *)nrt_tensor_get_va(b))[0] == 0 && ((uint8_t *)nrt_tensor_get_va(b))[5001] == 0, "copy stays in range");
        EXPECT(nrt_tensor_copy(a, 0, a, 10, 1000), NRT_SUCCESS);
        CHECK(memcmp(va + 10, buf, 1000) == 0, "overlapping copy (forward) behaves as memmove");
        EXPECT(nrt_tensor_write(a, buf, 0, n), NRT_SUCCESS);
        EXPECT(nrt_tensor_copy(a, 10, a, 0, 1000), NRT_SUCCESS);
        CHECK(memcmp(va, buf + 10, 1000) == 0, "overlapping copy (backward) behaves as memmove");
        EXPECT(nrt_tensor_write(a, buf, 0, n), NRT_SUCCESS);
        EXPECT(nrt_tensor_copy(a, 0, b, 0, 0), NRT_SUCCESS); /* zero bytes */
        EXPECT(nrt_tensor_copy(NULL, 0, b, 0, 1), NRT_INVALID_HANDLE);
        EXPECT(nrt_tensor_copy(a, 0, NULL, 0, 1), NRT_INVALID_HANDLE);
        EXPECT(nrt_tensor_copy(a, SIZE_MAX, b, 0, 2), NRT_INVALID);
        EXPECT(nrt_tensor_copy(a, n - 10, b, 0, 11), NRT_INVALID);
        EXPECT(nrt_tensor_copy(a, 0, b, n - 10, 11), NRT_INVALID);
        /* slices share memory, survive the parent */
        nrt_tensor_t *s = NULL;
        EXPECT(nrt_tensor_allocate_slice(b, 1000, 2000, "s", &s), NRT_SUCCESS);
        CHECK(nrt_tensor_get_size(s) == 2000, "slice size");
        CHECK((uint8_t *)nrt_tensor_get_va(s) == (uint8_t *)nrt_tensor_get_va(b) + 1000, "slice va");
        EXPECT(nrt_tensor_memset(s, 0, 0x42, 2000), NRT_SUCCESS);
        CHECK(((uint8_t *)nrt_tensor_get_va(b))[1000] == 0x42 && ((uint8_t *)nrt_tensor_get_va(b))[2999] == 0x42, "slice writes reach the parent");
        /* a slice of a slice */
        nrt_tensor_t *s2 = NULL;
        EXPECT(nrt_tensor_allocate_slice(s, 10, 20, "s2", &s2), NRT_SUCCESS);
        CHECK((uint8_t *)nrt_tensor_get_va(s2) == (uint8_t *)nrt_tensor_get_va(b) + 1010 && nrt_tensor_get_size(s2) == 20, "slice of a slice");
        EXPECT(nrt_tensor_write(s2, buf, 0, 20), NRT_SUCCESS);
        CHECK(memcmp((uint8_t *)nrt_tensor_get_va(b) + 1010, buf, 20) == 0, "writes through a slice of a slice reach the parent");
        EXPECT(nrt_tensor_allocate_slice(s, 1990, 11, "x", &s2), NRT_INVALID);
        nrt_tensor_free(&s2);
        EXPECT(nrt_tensor_memset(s, 0, 0x42, 2000), NRT_SUCCESS);
        nrt_tensor_t *bad = NULL;
        EXPECT(nrt_tensor_allocate_slice(b, n - 5, 6, "x", &bad), NRT_INVALID);
        EXPECT(nrt_tensor_allocate_slice(b, n, 1, "x", &bad), NRT_INVALID);
        EXPECT(nrt_tensor_allocate_slice(b, 1, SIZE_MAX, "x", &bad), NRT_INVALID);
        EXPECT(nrt_tensor_allocate_slice(NULL, 0, 1, "x", &bad), NRT_INVALID_HANDLE);
        CHECK(bad == NULL, "refused slices leave *slice NULL");
        EXPECT(nrt_tensor_allocate_slice(b, SIZE_MAX, 2, "x", &bad), NRT_INVALID);
        EXPECT(nrt_tensor_allocate_slice(b, 0, 1, "x", NULL), NRT_INVALID);
        nrt_tensor_free(&b);
        CHECK(b == NULL, "free NULLs the pointer");
        EXPECT(nrt_tensor_read(s, back, 0, 2000), NRT_SUCCESS); /* slice outlives its parent */
        CHECK(back[0] == 0x42 && back[1999] == 0x42, "slice bytes after the parent is freed");
        nrt_tensor_free(&s);
        /* out-of-range and NULL buffers */
        EXPECT(nrt_tensor_read(a, back, n, 1), NRT_INVALID);
        EXPECT(nrt_tensor_read(a, back, 1, SIZE_MAX), NRT_INVALID);
        EXPECT(nrt_tensor_write(a, buf, n - 1, 2), NRT_INVALID);
        EXPECT(nrt_tensor_read(a, NULL, 0, 1), NRT_INVALID);
        EXPECT(nrt_tensor_write(a, NULL, 0, 1), NRT_INVALID);
        EXPECT(nrt_tensor_read(a, back, n, 0), NRT_SUCCESS); /* empty range at the end */
        nrt_tensor_t *stale = a;
        nrt_tensor_free(&a);
        EXPECT(nrt_tensor_read(stale, back, 0, 1), NRT_INVALID_HANDLE);
        EXPECT(nrt_tensor_write(stale, buf, 0, 1), NRT_INVALID_HANDLE);
        EXPECT(nrt_tensor_memset(stale, 0, 0, 1), NRT_INVALID_HANDLE);
        EXPECT(nrt_tensor_copy(stale, 0, stale, 0, 1), NRT_INVALID_HANDLE);
        EXPECT(nrt_tensor_allocate_slice(stale, 0, 1, "x", &bad), NRT_INVALID_HANDLE);
        EXPECT(nrt_tensor_attach_buffer(stale, buf, 10), NRT_INVALID_HANDLE);
        CHECK(nrt_tensor_get_size(stale) == 0, "size of a stale tensor is 0");
        CHECK(nrt_tensor_get_va(stale) == NULL, "va of a stale tensor is NULL");
        nrt_tensor_free(&stale); /* stale: ignored, pointer NULLed */
        CHECK(stale == NULL, "free of a stale handle NULLs the pointer");
        free(buf);
        free(back);
    }
    /* empty + attach_buffer */
    nrt_tensor_t *e = NULL;
    EXPECT(nrt_tensor_allocate_empty("e", &e), NRT_SUCCESS);
    CHECK(nrt_tensor_get_size(e) == 0 && nrt_tensor_get_va(e) == NULL, "empty tensor");
    uint8_t mine[256];
    memset(mine, 0, sizeof mine);
    EXPECT(nrt_tensor_attach_buffer(e, mine, sizeof mine), NRT_SUCCESS);
    CHECK(nrt_tensor_get_va(e) == mine && nrt_tensor_get_size(e) == sizeof mine, "attached");
    uint8_t v[4] = {1, 2, 3, 4};
    EXPECT(nrt_tensor_write(e, v, 100, 4), NRT_SUCCESS);
    CHECK(mine[100] == 1 && mine[103] == 4, "writes reach the caller's buffer");
    fill(mine, sizeof mine, 77);
    uint8_t rb[256];
    EXPECT(nrt_tensor_read(e, rb, 0, sizeof rb), NRT_SUCCESS);
    verify(rb, sizeof rb, 77, "reads of an attached tensor come from the caller's buffer");
    EXPECT(nrt_tensor_read(e, rb, 200, 57), NRT_INVALID); /* bounded by the attached size */
    /* attach to an allocated tensor: it becomes a view of the buffer instead */
    nrt_tensor_t *h = NULL;
    uint8_t other[100];
    fill(other, sizeof other, 78);
    EXPECT(nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, 4096, "h", &h), NRT_SUCCESS);
    EXPECT(nrt_tensor_attach_buffer(h, other, sizeof other), NRT_SUCCESS);
    CHECK(nrt_tensor_get_va(h) == other && nrt_tensor_get_size(h) == sizeof other, "attach replaces an allocated tensor's memory");
    EXPECT(nrt_tensor_read(h, rb, 0, sizeof other), NRT_SUCCESS);
    verify(rb, sizeof other, 78, "read after attach to an allocated tensor");
    EXPECT(nrt_tensor_memset(h, 0, 0xEE, sizeof other), NRT_SUCCESS);
    verify_const(other, sizeof other, 0xEE, "memset through an attached tensor");
    nrt_tensor_free(&h);
    verify_const(other, sizeof other, 0xEE, "the caller's buffer after freeing the tensor");
    EXPECT(nrt_tensor_attach_buffer(e, NULL, 10), NRT_INVALID);
    EXPECT(nrt_tensor_attach_buffer(NULL, mine, 10), NRT_INVALID_HANDLE);
    nrt_tensor_free(&e);
    /* bad arguments */
    nrt_tensor_t *x = NULL;
    EXPECT(nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, 10, "x", NULL), NRT_INVALID);
    EXPECT(nrt_tensor_allocate((nrt_tensor_placement_t)7, 0, 10, "x", &x), NRT_INVALID);
    EXPECT(nrt_tensor_allocate_empty("x", NULL), NRT_INVALID);
    EXPECT(nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, 0, "zero", &x), NRT_SUCCESS);
    CHECK(x && nrt_tensor_get_size(x) == 0, "a zero-size tensor");
    nrt_tensor_free(&x);
    nrt_tensor_free(NULL);
    nrt_tensor_free(&x); /* x is NULL: no-op */
    EXPECT(nrt_tensor_read((nrt_tensor_t *)(uintptr_t)0xdeadbeef, v, 0, 1), NRT_INVALID_HANDLE);
    EXPECT(nrt_tensor_write(NULL, v, 0, 1), NRT_INVALID_HANDLE);
    CHECK(nrt_tensor_get_size(NULL) == 0 && nrt_tensor_get_va(NULL) == NULL, "NULL tensor");
    EXPECT(nrt_close(), NRT_SUCCESS);
    return test_end();
}
