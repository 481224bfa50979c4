/*
 * pq - libpq's function table. See pq.h.
 */
#include "campaign/pq.h"

struct pq_api pq;

int pq_load(char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
#define PQ_BIND(name) pq.name = name;
    PQ_API(PQ_BIND)
#undef PQ_BIND
    return 0;
}
