/* See text_format.h. */
#include "text_format.h"

#include <string.h>

/* Every loop below is written once as an always-inline body taking kind and
 * style, and instantiated per (kind, style) by a switch: the per-value
 * branches on kind and style then fold away (a generic loop cost 15-20 % of
 * the steady-state render). */
#define HOT static inline __attribute__((always_inline))

/* Value i as kind into *v (all kinds fit an int64 except u64 values >=
 * 2^63). Returns 0, or -2 for a u64 >= 2^63. Kind is checked by callers. */
HOT int read_value(const uint8_t *vp, int kind, int64_t *v)
{
    switch (kind) {
    case IPVS_TF_U32: {
        uint32_t x;
        memcpy(&x, vp, 4);
        *v = x;
        return 0;
    }
    case IPVS_TF_I32: {
        int32_t x;
        memcpy(&x, vp, 4);
        *v = x;
        return 0;
    }
    case IPVS_TF_U64: {
        uint64_t x;
        memcpy(&x, vp, 8);
        if (x > (uint64_t)INT64_MAX)
            return -2;
        *v = (int64_t)x;
        return 0;
    }
    default: /* IPVS_TF_I64 */
        memcpy(v, vp, 8);
        return 0;
    }
}

static const char DIGIT_PAIRS[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Decimal digits of u ending at end; returns the first. */
HOT char *decimal_digits(uint64_t u, char *end)
{
    char *p = end;
    while (u >= 100) {
        unsigned r = (unsigned)(u % 100) * 2;
        u /= 100;
        p -= 2;
        p[0] = DIGIT_PAIRS[r];
        p[1] = DIGIT_PAIRS[r + 1];
    }
    if (u >= 10) {
        p -= 2;
        p[0] = DIGIT_PAIRS[u * 2];
        p[1] = DIGIT_PAIRS[u * 2 + 1];
    } else {
        *--p = (char)('0' + u);
    }
    return p;
}

HOT size_t decimal_len(uint64_t u)
{
    size_t n = 1;
    uint64_t p = 10;
    while (n < 16 && u >= p) {          /* u < 2^53 < 10^16 */
        n++;
        p *= 10;
    }
    return n;
}

/* Go's shortest %g of u >= 10^6 (exact: u < 2^53): d.ddde+XX, the digits of
 * u without trailing zeros; into the end of buf, returns its first byte. */
static char *go_exponent_text(uint64_t u, char *end)
{
    char digits[20];
    char *d = decimal_digits(u, digits + sizeof digits);
    size_t nd = (size_t)(digits + sizeof digits - d);
    unsigned exp10 = (unsigned)(nd - 1);          /* 6 .. 15 */
    char *p = end;
    while (nd > 1 && d[nd - 1] == '0')
        nd--;
    *--p = (char)('0' + exp10 % 10);
    *--p = (char)('0' + exp10 / 10);
    *--p = '+';
    *--p = 'e';
    p -= nd > 1 ? nd + 1 : 1;
    p[0] = d[0];
    if (nd > 1) {
        p[1] = '.';
        memcpy(p + 2, d + 1, nd - 1);
    }
    return p;
}

/* The text of v in style into the end of buf (>= 32 bytes before end);
 * returns its first byte, or NULL when v is not within the exact limit. */
HOT char *value_text(int64_t v, int style, char *end)
{
    if (v >= (int64_t)IPVS_TF_EXACT_LIMIT || v <= -(int64_t)IPVS_TF_EXACT_LIMIT)
        return NULL;
    int neg = v < 0;
    uint64_t u = neg ? (uint64_t)-v : (uint64_t)v;
    /* Go's %g with shortest digits prints exponents < 6 without 'e' */
    char *p = (style == IPVS_TF_GO_FLOAT && u >= 1000000) ? go_exponent_text(u, end)
                                                          : decimal_digits(u, end);
    if (neg)
        *--p = '-';
    return p;
}

/* The length of value_text(v, style); -2 when v is not within the limit. */
HOT long value_length(int64_t v, int style)
{
    if (v >= (int64_t)IPVS_TF_EXACT_LIMIT || v <= -(int64_t)IPVS_TF_EXACT_LIMIT)
        return -2;
    int neg = v < 0;
    uint64_t u = neg ? (uint64_t)-v : (uint64_t)v;
    if (style == IPVS_TF_GO_FLOAT && u >= 1000000) {
        char buf[32];
        return (long)(buf + sizeof buf - go_exponent_text(u, buf + sizeof buf)) + neg;
    }
    return (long)decimal_len(u) + neg;
}

static int known(int kind, int style)
{
    return (kind == IPVS_TF_U32 || kind == IPVS_TF_U64 || kind == IPVS_TF_I32 ||
            kind == IPVS_TF_I64) && (style == IPVS_TF_DECIMAL || style == IPVS_TF_GO_FLOAT);
}

/* Instantiate body(KIND, STYLE) for every known pair; returns its value. */
#define DISPATCH(kind, style, body)                                                    \
    do {                                                                               \
        switch ((kind) * 2 + (style)) {                                                \
        case IPVS_TF_U32 * 2 + IPVS_TF_DECIMAL: return body(IPVS_TF_U32, IPVS_TF_DECIMAL);   \
        case IPVS_TF_U32 * 2 + IPVS_TF_GO_FLOAT: return body(IPVS_TF_U32, IPVS_TF_GO_FLOAT); \
        case IPVS_TF_U64 * 2 + IPVS_TF_DECIMAL: return body(IPVS_TF_U64, IPVS_TF_DECIMAL);   \
        case IPVS_TF_U64 * 2 + IPVS_TF_GO_FLOAT: return body(IPVS_TF_U64, IPVS_TF_GO_FLOAT); \
        case IPVS_TF_I32 * 2 + IPVS_TF_DECIMAL: return body(IPVS_TF_I32, IPVS_TF_DECIMAL);   \
        case IPVS_TF_I32 * 2 + IPVS_TF_GO_FLOAT: return body(IPVS_TF_I32, IPVS_TF_GO_FLOAT); \
        case IPVS_TF_I64 * 2 + IPVS_TF_DECIMAL: return body(IPVS_TF_I64, IPVS_TF_DECIMAL);   \
        case IPVS_TF_I64 * 2 + IPVS_TF_GO_FLOAT: return body(IPVS_TF_I64, IPVS_TF_GO_FLOAT); \
        default: return -1;                                                            \
        }                                                                              \
    } while (0)

HOT long length_loop(size_t name_len, const uint32_t *off, const uint8_t *values,
                     size_t stride, int kind, int style, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        if (read_value(values + i * stride, kind, &v) < 0)
            return -2;
        if (off[i + 1] < off[i])
            return -1;
        long t = value_length(v, style);
        if (t < 0)
            return t;
        total += 1 + name_len + (off[i + 1] - off[i]) + (size_t)t;
    }
    return (long)total;
}

long ipvs_format_length(size_t name_len, const uint32_t *off,
                        const uint8_t *values, size_t stride, int kind, int style, size_t n)
{
    if (!known(kind, style))
        return -1;
#define LENGTH(K, S) length_loop(name_len, off, values, stride, K, S, n)
    DISPATCH(kind, style, LENGTH);
#undef LENGTH
}

HOT long samples_loop(const char *name, size_t name_len, const char *blocks,
                      const uint32_t *off, const uint8_t *values, size_t stride,
                      int kind, int style, size_t n, char *out, size_t cap)
{
    char buf[32];
    char *o = out;
    char *const end = out + cap;

    for (size_t i = 0; i < n; i++) {
        int64_t v;
        if (read_value(values + i * stride, kind, &v) < 0)
            return -2;
        if (off[i + 1] < off[i])
            return -1;
        char *t = value_text(v, style, buf + sizeof buf);
        if (!t)
            return -2;
        size_t blen = off[i + 1] - off[i];
        size_t tlen = (size_t)(buf + sizeof buf - t);
        if ((size_t)(end - o) < 1 + name_len + blen + tlen)
            return -1;
        *o++ = '\n';
        memcpy(o, name, name_len);
        o += name_len;
        memcpy(o, blocks + off[i], blen);
        o += blen;
        memcpy(o, t, tlen);
        o += tlen;
    }
    return (long)(o - out);
}

long ipvs_format_samples(const char *name, size_t name_len,
                         const char *blocks, const uint32_t *off,
                         const uint8_t *values, size_t stride, int kind, int style,
                         size_t n, char *out, size_t cap)
{
    if (!known(kind, style))
        return -1;
#define SAMPLES(K, S) samples_loop(name, name_len, blocks, off, values, stride, K, S, n, out, cap)
    DISPATCH(kind, style, SAMPLES);
#undef SAMPLES
}

int ipvs_sum_groups(const uint8_t *values, size_t stride, int kind, size_t n,
                    const uint32_t *group, int64_t *sums, size_t ngroups)
{
    if (!known(kind, IPVS_TF_DECIMAL))
        return -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t g = group[i];
        int64_t v;
        if (g == IPVS_TF_NO_GROUP)
            continue;
        if (g >= ngroups)
            return -1;
        int r = read_value(values + i * stride, kind, &v);
        if (r < 0)
            return r;
        if (__builtin_add_overflow(sums[g], v, &sums[g]))
            return -2;
    }
    return 0;
}
