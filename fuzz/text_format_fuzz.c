/*
 * libFuzzer harness for csrc/text_format.c.
 *
 * Input: [0] width selector, [1] stride extra, [2] sample count, [3] name
 * length, [4] bit 0: let offsets decrease; then the name, one offset step
 * per sample, the values and the label blocks, all taken from the input
 * (zeros once it runs out). Every buffer is malloc'ed at its exact size so
 * ASan sees any read or write past it.
 *
 * Checked: ipvs_format_length and ipvs_format_samples agree (same error
 * code, or the measured length is exactly the bytes written into a buffer of
 * exactly that size); one byte less is refused (-1) without writing past
 * it; the bytes equal an independent rendering with snprintf; widths other
 * than 4 and 8 are refused.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text_format.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

struct input {
    const uint8_t *p;
    size_t left;
};

static uint8_t take(struct input *in)
{
    if (!in->left)
        return 0;
    in->left--;
    return *in->p++;
}

static void *take_bytes(struct input *in, size_t n)
{
    uint8_t *out = malloc(n ? n : 1);

    CHECK(out != NULL);
    for (size_t i = 0; i < n; i++)
        out[i] = take(in);
    return out;
}

/* The expected text, written the obvious way. -1/-2 as the library. */
static long reference(const char *name, size_t name_len, const char *blocks,
                      const uint32_t *off, const uint8_t *values, size_t stride, int width,
                      size_t n, char **text)
{
    size_t cap = 1, len = 0;
    char *out;

    *text = NULL;
    if (width != 4 && width != 8)
        return -1;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 0;

        memcpy(&v, values + i * stride, (size_t)width);    /* little endian host */
        if (v >= IPVS_TF_EXACT_LIMIT)
            return -2;
        if (off[i + 1] < off[i])
            return -1;
        cap += 1 + name_len + (off[i + 1] - off[i]) + 20;
    }
    out = malloc(cap);
    CHECK(out != NULL);
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 0;
        size_t blen = off[i + 1] - off[i];

        memcpy(&v, values + i * stride, (size_t)width);
        out[len++] = '\n';
        memcpy(out + len, name, name_len);
        len += name_len;
        memcpy(out + len, blocks + off[i], blen);
        len += blen;
        len += (size_t)snprintf(out + len, cap - len, "%" PRIu64, v);
    }
    *text = out;
    return (long)len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = { data, size };
    uint8_t wsel = take(&in), extra = take(&in), count = take(&in), nlen = take(&in);
    int may_decrease = take(&in) & 1;
    int width = (wsel & 0x80) ? (int)(wsel & 0x0f) : ((wsel & 1) ? 8 : 4);
    size_t stride = (size_t)(width > 0 ? width : 1) + extra % 8;
    size_t n = count % 64, name_len = nlen % 48;
    size_t vlen = n ? (n - 1) * stride + (size_t)(width > 0 ? width : 1) : 0;
    size_t blocks_len;
    uint32_t *off = malloc((n + 1) * sizeof(uint32_t));
    char *name, *blocks, *ref, *out;
    uint8_t *values;
    long want, len, got;

    CHECK(off != NULL);
    name = take_bytes(&in, name_len);
    off[0] = take(&in) % 8;
    for (size_t i = 0; i < n; i++) {
        uint8_t step = take(&in);

        if (may_decrease && (step & 0x80) && off[i] >= (step & 0x0f))
            off[i + 1] = off[i] - (step & 0x0f);
        else
            off[i + 1] = off[i] + step % 40;
    }
    values = take_bytes(&in, vlen);
    blocks_len = 0;
    for (size_t i = 0; i <= n; i++)
        if (off[i] > blocks_len)
            blocks_len = off[i];
    blocks = take_bytes(&in, blocks_len);

    want = reference(name, name_len, blocks, off, values, stride, width, n, &ref);
    len = ipvs_format_length(name_len, off, values, stride, width, n);
    CHECK(len == want);
    if (len >= 0) {
        out = malloc((size_t)len ? (size_t)len : 1);
        CHECK(out != NULL);
        got = ipvs_format_samples(name, name_len, blocks, off, values, stride, width, n,
                                  out, (size_t)len);
        CHECK(got == len);
        CHECK(memcmp(out, ref, (size_t)len) == 0);
        free(out);
        if (len > 0) {
            out = malloc((size_t)len - 1 ? (size_t)len - 1 : 1);
            CHECK(out != NULL);
            got = ipvs_format_samples(name, name_len, blocks, off, values, stride, width, n,
                                      out, (size_t)len - 1);
            CHECK(got == -1);
            free(out);
        }
    } else {
        /* With room for anything, writing fails the same way measuring did. */
        size_t cap = 1;

        for (size_t i = 0; i < n; i++)
            cap += 1 + name_len + 40 + 8 + 20;
        out = malloc(cap);
        CHECK(out != NULL);
        got = ipvs_format_samples(name, name_len, blocks, off, values, stride, width, n,
                                  out, cap);
        CHECK(got == len);
        free(out);
    }
    free(ref);
    free(blocks);
    free(values);
    free(name);
    free(off);
    return 0;
}
