/*
 * libFuzzer harness for csrc/text_format.c.
 *
 * Input: [0] kind/style selector, [1] stride extra (bit 7: stride 0, one
 * value for every sample), [2] sample count, [3] name length, [4] bit 0: let
 * offsets decrease; then the name, one offset step
 * per sample, the values and the label blocks, all taken from the input
 * (zeros once it runs out). Every buffer is malloc'ed at its exact size so
 * ASan sees any read or write past it.
 *
 * Checked: ipvs_format_length and ipvs_format_samples agree (same error
 * code, or the measured length is exactly the bytes written into a buffer of
 * exactly that size); one byte less is refused (-1) without writing past
 * it; the bytes equal an independent rendering with snprintf (integers, or
 * Go's shortest 'g' float64 text for GO_FLOAT); unknown kinds and styles
 * are refused.
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

static int kind_width(int kind)
{
    switch (kind) {
    case IPVS_TF_U32: case IPVS_TF_I32: return 4;
    case IPVS_TF_U64: case IPVS_TF_I64: return 8;
    default: return 0;
    }
}

/* Value i as the library reads it (little-endian host); 0 when it is beyond
 * +-IPVS_TF_EXACT_LIMIT (*big = 1), or beyond int64 (*big = 2: the library
 * refuses that while reading, before it looks at offsets and style). */
static int64_t read_value(const uint8_t *p, int kind, int *big)
{
    uint32_t u32;
    uint64_t u64;
    int32_t i32;
    int64_t i64;

    *big = 0;
    switch (kind) {
    case IPVS_TF_U32: memcpy(&u32, p, 4); return u32;
    case IPVS_TF_I32: memcpy(&i32, p, 4); return i32;
    case IPVS_TF_U64:
        memcpy(&u64, p, 8);
        if (u64 > (uint64_t)INT64_MAX) { *big = 2; return 0; }
        if (u64 >= IPVS_TF_EXACT_LIMIT) { *big = 1; return 0; }
        return (int64_t)u64;
    default:
        memcpy(&i64, p, 8);
        if (i64 >= (int64_t)IPVS_TF_EXACT_LIMIT || i64 <= -(int64_t)IPVS_TF_EXACT_LIMIT) {
            *big = 1;
            return 0;
        }
        return i64;
    }
}

/* Go's strconv.FormatFloat(float64(v), 'g', -1, 64) for an integer v with
 * |v| < 2^53: plain below 1e6, else shortest digits with an exponent. */
static int go_float(char *out, size_t cap, int64_t v)
{
    char digits[24];
    uint64_t a = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    int nd, sig, len = 0;

    if (a < 1000000)
        return snprintf(out, cap, "%" PRId64, v);
    nd = snprintf(digits, sizeof digits, "%" PRIu64, a);
    sig = nd;
    while (sig > 1 && digits[sig - 1] == '0')
        sig--;
    if (v < 0)
        out[len++] = '-';
    out[len++] = digits[0];
    if (sig > 1) {
        out[len++] = '.';
        memcpy(out + len, digits + 1, (size_t)sig - 1);
        len += sig - 1;
    }
    len += snprintf(out + len, cap - (size_t)len, "e+%02d", nd - 1);
    return len;
}

/* The expected text, written the obvious way. -1/-2 as the library. */
static long reference(const char *name, size_t name_len, const char *blocks,
                      const uint32_t *off, const uint8_t *values, size_t stride, int kind,
                      int style, size_t n, char **text)
{
    size_t cap = 1, len = 0;
    char *out;
    int big;

    *text = NULL;
    /* an unknown kind or style first (even with no samples), then per
     * sample in the library's order: size of the value, offsets, exactness */
    if (!kind_width(kind) || (style != IPVS_TF_DECIMAL && style != IPVS_TF_GO_FLOAT))
        return -1;
    for (size_t i = 0; i < n; i++) {
        read_value(values + i * stride, kind, &big);
        if (big == 2)
            return -2;
        if (off[i + 1] < off[i])
            return -1;
        if (big)
            return -2;
        cap += 1 + name_len + (off[i + 1] - off[i]) + 32;
    }
    out = malloc(cap);
    CHECK(out != NULL);
    for (size_t i = 0; i < n; i++) {
        int64_t v = read_value(values + i * stride, kind, &big);
        size_t blen = off[i + 1] - off[i];

        out[len++] = '\n';
        memcpy(out + len, name, name_len);
        len += name_len;
        memcpy(out + len, blocks + off[i], blen);
        len += blen;
        if (style == IPVS_TF_GO_FLOAT)
            len += (size_t)go_float(out + len, cap - len, v);
        else
            len += (size_t)snprintf(out + len, cap - len, "%" PRId64, v);
    }
    *text = out;
    return (long)len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = { data, size };
    uint8_t sel = take(&in), extra = take(&in), count = take(&in), nlen = take(&in);
    int may_decrease = take(&in) & 1;
    int kind = (sel & 0x80) ? (int)(sel & 0x0f) : (int)(sel & 3);
    int style = (sel & 0x40) ? (int)((sel >> 4) & 3) : (int)((sel >> 2) & 1);
    int width = kind_width(kind) ? kind_width(kind) : 1;
    size_t stride = (extra & 0x80) ? 0 : (size_t)width + extra % 8;
    size_t n = count % 64, name_len = nlen % 48;
    size_t vlen = n ? (n - 1) * stride + (size_t)width : 0;
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

    want = reference(name, name_len, blocks, off, values, stride, kind, style, n, &ref);
    len = ipvs_format_length(name_len, off, values, stride, kind, style, n);
    CHECK(len == want);
    if (len >= 0) {
        out = malloc((size_t)len ? (size_t)len : 1);
        CHECK(out != NULL);
        got = ipvs_format_samples(name, name_len, blocks, off, values, stride, kind, style, n,
                                  out, (size_t)len);
        CHECK(got == len);
        CHECK(memcmp(out, ref, (size_t)len) == 0);
        free(out);
        if (len > 0) {
            out = malloc((size_t)len - 1 ? (size_t)len - 1 : 1);
            CHECK(out != NULL);
            got = ipvs_format_samples(name, name_len, blocks, off, values, stride, kind, style, n,
                                      out, (size_t)len - 1);
            CHECK(got == -1);
            free(out);
        }
    } else {
        /* With room for anything, writing fails the same way measuring did. */
        size_t cap = 1;

        for (size_t i = 0; i < n; i++)
            cap += 1 + name_len + 40 + 8 + 32;
        out = malloc(cap);
        CHECK(out != NULL);
        got = ipvs_format_samples(name, name_len, blocks, off, values, stride, kind, style, n,
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
