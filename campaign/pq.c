/*
 * pq - libpq in its own link namespace. See pq.h.
 */
#include "campaign/pq.h"

#include <dlfcn.h>
#include <stdio.h>

struct pq_api pq;
static int pq_loaded;

#ifdef RINGMAIL_PQ_DIRECT

int pq_load(char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
#define PQ_BIND(name) pq.name = name;
    PQ_API(PQ_BIND)
#undef PQ_BIND
    pq_loaded = 1;
    return 0;
}

#else

int pq_load(char *err, size_t errlen)
{
    if (pq_loaded) {
        return 0;
    }
    void *h = dlmopen(LM_ID_NEWLM, "libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(err, errlen, "cannot load libpq.so.5 (package libpq5): %s", dlerror());
        return -1;
    }
#define PQ_BIND(name)                                                                              \
    pq.name = (__typeof__(pq.name))dlsym(h, #name);                                                \
    if (!pq.name) {                                                                                \
        snprintf(err, errlen, "libpq.so.5 has no %s", #name);                                      \
        return -1;                                                                                 \
    }
    PQ_API(PQ_BIND)
#undef PQ_BIND
    pq_loaded = 1;
    return 0; /* the handle stays open for the life of the process */
}

#endif
