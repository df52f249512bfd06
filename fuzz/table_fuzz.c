/*
 * libFuzzer harness for ipvs_parse_table (/proc/net/ip_vs text).
 *
 * Input: 1 byte errlen (size of the error buffer, 0 = NULL, malloc'ed
 * exactly so that ASan sees a write past it), then the text, copied to a
 * buffer of exactly its length (a read past it is seen).
 *
 * Parsed twice, into a fresh result with a 512-byte error buffer and into a
 * result still holding the previous input's records with the tiny buffer.
 * Checked: the return value is the service count or -EBADMSG/-ENOMEM; both
 * parses agree; an error says something, and the tiny message is a prefix of
 * the big one; the records are consistent (services' destination ranges
 * tile the destinations in order, each destination names its service, the
 * scheduler name is NUL-terminated, nothing the text lacks is set).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipvs_core.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)
#define BIG_ERRLEN 512

static ipvs_result *reused;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char big[BIG_ERRLEN], *tiny, *text;
    size_t errlen, n, next = 0;
    ipvs_result *fresh;
    int rc, rc2;

    if (size < 1)
        return 0;
    errlen = data[0];
    n = size - 1;
    text = n ? memcpy(malloc(n), data + 1, n) : NULL;
    fresh = ipvs_result_new();
    if (!reused)
        reused = ipvs_result_new();
    CHECK(fresh && reused);
    tiny = errlen ? malloc(errlen) : NULL;

    memset(big, 'x', sizeof(big));
    rc = ipvs_parse_table(text, n, fresh, big, sizeof(big));
    CHECK(rc >= 0 || rc == -EBADMSG || rc == -ENOMEM);
    if (rc < 0) {
        CHECK(memchr(big, 0, sizeof(big)) != NULL && big[0] != 0);
    } else {
        CHECK((size_t)rc == fresh->nsvcs);
    }

    if (tiny)
        memset(tiny, 'x', errlen);
    rc2 = ipvs_parse_table(text, n, reused, tiny, errlen);
    CHECK(rc2 == rc);
    if (rc >= 0) {
        CHECK(reused->nsvcs == fresh->nsvcs && reused->ndests == fresh->ndests);
        if (fresh->nsvcs)
            CHECK(memcmp(reused->svcs, fresh->svcs, fresh->nsvcs * sizeof(*fresh->svcs)) == 0);
        if (fresh->ndests)
            CHECK(memcmp(reused->dests, fresh->dests,
                         fresh->ndests * sizeof(*fresh->dests)) == 0);
    } else if (tiny) {
        size_t m = strnlen(tiny, errlen);

        CHECK(m < errlen && strncmp(tiny, big, m) == 0);
    }

    for (size_t i = 0; rc >= 0 && i < fresh->nsvcs; i++) {
        const struct ipvs_svc_rec *s = &fresh->svcs[i];

        CHECK(s->first_dest == next);
        next += s->ndests;
        CHECK(s->sched_name[0] != 0 && s->sched_name[sizeof(s->sched_name) - 1] == 0);
        CHECK(s->attrs == 0 && s->pe_name[0] == 0);
        for (size_t k = 0; k < 10; k++)
            CHECK(s->stats[k] == 0);
        if (s->fwmark)
            CHECK(s->protocol == 0 && s->port == 0 && s->af == 2 /* AF_INET */);
        for (size_t j = s->first_dest; j < s->first_dest + s->ndests; j++)
            CHECK(fresh->dests[j].svc_index == i && fresh->dests[j].attrs == 0);
    }
    CHECK(rc < 0 || next == fresh->ndests);

    free(tiny);
    free(text);
    ipvs_result_free(fresh);
    return 0;
}
