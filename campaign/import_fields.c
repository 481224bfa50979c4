/*
 * import_fields - the campaign's merge fields against what an import
 * provides. See import_int.h.
 *
 * A field the templates use without a default renders empty for a
 * recipient who has no such variable. When the CSV has no column of that
 * name (or an --sql import leaves every recipient without it), every
 * recipient gets the empty string: that is said at import, naming the
 * field and the templates it is in, rather than found in the sent mail.
 * {{email}} is the address; the unsubscribe token comes from [feedback].
 */
#include <stdlib.h>
#include <string.h>

#include "campaign/db.h"
#include "campaign/import_int.h"
#include "campaign/render.h"

struct fields_collect {
    struct import_tfields *out;
};

static void fields_add(void *user, const char *where, const char *name, int has_default)
{
    struct fields_collect *c = user;
    if (has_default || strcmp(name, "email") == 0 || strcmp(name, RENDER_TOKEN_VAR) == 0) {
        return;
    }
    struct import_tfields *t = c->out;
    struct import_tfield *f = NULL;
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->v[i].name, name) == 0) {
            f = &t->v[i];
            break;
        }
    }
    if (!f) {
        t->v = realloc(t->v, (t->n + 1) * sizeof *t->v);
        if (!t->v) {
            abort();
        }
        f = &t->v[t->n++];
        f->name = strdup(name);
        if (!f->name) {
            abort();
        }
        f->where[0] = '\0';
    }
    /* each place once: "subject, html" */
    size_t wl = strlen(where), len = strlen(f->where);
    for (const char *s = f->where; *s;) {
        size_t k = strcspn(s, ",");
        if (k == wl && strncmp(s, where, wl) == 0) {
            return;
        }
        s += k;
        s += strspn(s, ", ");
    }
    snprintf(f->where + len, sizeof f->where - len, "%s%s", len ? ", " : "", where);
}

int import_fields_load(PGresult *campaign, int row, int col, struct import_tfields *out, char *err,
                       size_t errlen)
{
    memset(out, 0, sizeof *out);
    const char *v[5];
    for (int i = 0; i < 5; i++) {
        v[i] =
            pq.PQgetisnull(campaign, row, col + i) ? NULL : pq.PQgetvalue(campaign, row, col + i);
    }
    struct render_spec spec = {
        .from_addr = v[0],
        .subject = v[1],
        .text = v[2],
        .html = v[3],
        .list_unsubscribe = v[4],
    };
    struct render_template *t = render_compile(&spec, err, errlen);
    if (!t) {
        return -1;
    }
    struct fields_collect c = {out};
    render_fields(t, fields_add, &c);
    render_free(t);
    return 0;
}

void import_fields_free(struct import_tfields *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].name);
    }
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

void import_fields_warn_csv(const struct import_tfields *t, char *const *names, size_t n,
                            const char *address_col, struct import_progress *p)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct import_tfield *f = &t->v[i];
        int found = 0;
        for (size_t k = 0; k < n && !found; k++) {
            found = names[k] && strcmp(names[k], f->name) == 0;
        }
        if (found) {
            continue;
        }
        import_progress_clear(p);
        if (address_col && strcmp(address_col, f->name) == 0) {
            fprintf(stderr,
                    "ringmail recipients import: warning: the templates use {{%s}} (%s) but the "
                    "CSV's column %s holds the addresses, not a merge variable: it renders empty "
                    "for every recipient (the address is {{email}})\n",
                    f->name, f->where, f->name);
        } else {
            fprintf(stderr,
                    "ringmail recipients import: warning: the templates use {{%s}} (%s) but the "
                    "CSV has no column %s: it renders empty for every recipient\n",
                    f->name, f->where, f->name);
        }
    }
}

void import_fields_warn_sql(PGconn *c, const char *campaign, const struct import_tfields *t,
                            int vars)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct import_tfield *f = &t->v[i];
        int missing = 1;
        if (vars) {
            const char *params[2] = {campaign, f->name};
            PGresult *r = pq.PQexecParams(c,
                                          "SELECT EXISTS (SELECT 1 FROM ringmail.recipient"
                                          " WHERE campaign_id = $1::bigint AND vars ? $2)",
                                          2, NULL, params, NULL, NULL, 0);
            if (!r || pq.PQresultStatus(r) != PGRES_TUPLES_OK) {
                pq.PQclear(r);
                return; /* a warning only: the import itself went through */
            }
            missing = strcmp(pq.PQgetvalue(r, 0, 0), "t") != 0;
            pq.PQclear(r);
        }
        if (missing) {
            fprintf(stderr,
                    "ringmail recipients import: warning: the templates use {{%s}} (%s) but %s: "
                    "it renders empty for every recipient\n",
                    f->name, f->where,
                    vars ? "no recipient of the campaign has it among its merge variables (the "
                           "query's second column)"
                         : "the query returns no merge variables (a second column)");
        }
    }
}
