/* See text_format.h. */
#include "text_format.h"

#include <string.h>

/* Read value i as kind into *v (all kinds fit an int64 except u64 values
 * >= 2^63). Returns 0, -1 for an unknown kind, -2 for a u64 >= 2^63. */
static inline int read_value(const uint8_t *vp, int kind, int64_t *v)
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
    case IPVS_TF_I64:
        memcpy(v, vp, 8);
        return 0;
    default:
        return -1;
    }
}

/* The text of v in style into the end of buf[32]; returns its first byte,
 * or NULL when v is not exactly representable as a float64 integer (the
 * caller's -2) or the style is unknown. */
static char *value_text(int64_t v, int style, char *end)
{
    if (v >= (int64_t)IPVS_TF_EXACT_LIMIT || v <= -(int64_t)IPVS_TF_EXACT_LIMIT)
        return NULL;
    int neg = v < 0;
    uint64_t u = neg ? (uint64_t)-v : (uint64_t)v;
    char *p = end;

    if (style == IPVS_TF_DECIMAL || (style == IPVS_TF_GO_FLOAT && u < 1000000)) {
        /* Go's %g with shortest digits prints exponents < 6 without 'e' */
        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u);
    } else if (style == IPVS_TF_GO_FLOAT) {
        /* d.ddde+XX: the digits of u without trailing zeros (below 2^53
         * every integer is a float64, and no shorter decimal rounds to it) */
        char digits[20];
        char *d = digits + sizeof digits;
        do {
            *--d = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        size_t nd = (size_t)(digits + sizeof digits - d);
        unsigned exp10 = (unsigned)(nd - 1);          /* 6 .. 15 */
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
    } else {
        return NULL;
    }
    if (neg)
        *--p = '-';
    return p;
}

/* Checks shared by both loops: 0, or the error to return. */
static int check_sample(const uint8_t *values, size_t stride, int kind, int style,
                        const uint32_t *off, size_t i, char *buf, char **text)
{
    int64_t v;
    int r = read_value(values + i * stride, kind, &v);
    if (r < 0)
        return r;
    if (off[i + 1] < off[i])
        return -1;
    if (style != IPVS_TF_DECIMAL && style != IPVS_TF_GO_FLOAT)
        return -1;
    *text = value_text(v, style, buf + 32);
    return *text ? 0 : -2;
}

long ipvs_format_length(size_t name_len, const uint32_t *off,
                        const uint8_t *values, size_t stride, int kind, int style, size_t n)
{
    char buf[32];
    size_t total = 0;

    for (size_t i = 0; i < n; i++) {
        char *t;
        int r = check_sample(values, stride, kind, style, off, i, buf, &t);
        if (r < 0)
            return r;
        total += 1 + name_len + (off[i + 1] - off[i]) + (size_t)(buf + 32 - t);
    }
    return (long)total;
}

long ipvs_format_samples(const char *name, size_t name_len,
                         const char *blocks, const uint32_t *off,
                         const uint8_t *values, size_t stride, int kind, int style,
                         size_t n, char *out, size_t cap)
{
    char buf[32];
    char *o = out;
    char *const end = out + cap;

    for (size_t i = 0; i < n; i++) {
        char *t;
        int r = check_sample(values, stride, kind, style, off, i, buf, &t);
        if (r < 0)
            return r;
        size_t blen = off[i + 1] - off[i];
        size_t tlen = (size_t)(buf + 32 - t);
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

int ipvs_sum_groups(const uint8_t *values, size_t stride, int kind, size_t n,
                    const uint32_t *group, int64_t *sums, size_t ngroups)
{
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
