/*
 * test_import_csv - the CSV reader of `ringmail recipients import`
 * (campaign/import_csv.c): RFC 4180 fields (quotes, doubled quotes, quoted
 * line breaks), LF, CRLF and CR line ends and the line numbers they make,
 * the byte order mark, blank lines, text after a closing quote, an
 * unterminated quote and the rows read again after it, records that
 * cross the reader's 1 MiB window, values checked (NUL, invalid UTF-8 and
 * its offset) and escaped for COPY, iconv conversion and the byte an
 * encoding lacks, and the rejects file in the input's encoding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "campaign/import_int.h"

/* A temporary file holding data[0..n). */
static char *write_file(const char *data, size_t n)
{
    char *path = strdup("/tmp/test_import_csv.XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
    return path;
}

struct reader {
    char *path;
    struct import_csv r;
    char err[512];
};

static void open_reader(struct reader *t, const char *data, size_t n, char delim,
                        const char *encoding)
{
    t->path = write_file(data, n);
    assert_int_equal(import_csv_open(&t->r, t->path, delim, encoding, t->err, sizeof t->err), 0);
}

static void close_reader(struct reader *t)
{
    import_csv_close(&t->r);
    unlink(t->path);
    free(t->path);
}

/* The value of field i of the current record, unescaped (a static copy). */
static const char *field(struct reader *t, size_t i)
{
    static char out[4096];
    buf_t v = BUF_INIT;
    struct import_value_problem pb;
    assert_true(i < t->r.nfields);
    assert_int_equal(import_value(&t->r, &t->r.fields[i], 0, &v, &pb), 0);
    snprintf(out, sizeof out, "%.*s", (int)buf_len(&v), buf_data(&v));
    buf_free(&v);
    return out;
}

static void next(struct reader *t)
{
    assert_int_equal(import_csv_next(&t->r, t->err, sizeof t->err), 1);
}

static void test_fields_quotes_and_line_ends(void **state)
{
    (void)state;
    static const char data[] = "email,note\r\n"
                               "a@x,\"one, two\"\n"
                               "b@x,\"say \"\"hi\"\"\"\r"
                               "c@x,\"two\r\nlines\"\n"
                               "d@x,say \"hi\"\n"
                               "e@x,";
    struct reader t;
    open_reader(&t, data, sizeof data - 1, ',', NULL);
    next(&t);
    assert_int_equal(t.r.line, 1);
    assert_int_equal(t.r.nfields, 2);
    assert_string_equal(field(&t, 1), "note");
    next(&t);
    assert_int_equal(t.r.line, 2);
    assert_string_equal(field(&t, 1), "one, two");
    next(&t);
    assert_int_equal(t.r.line, 3); /* after a lone CR */
    assert_string_equal(field(&t, 1), "say \"hi\"");
    next(&t);
    assert_int_equal(t.r.line, 4);
    assert_string_equal(field(&t, 1), "two\r\nlines");
    next(&t);
    assert_int_equal(t.r.line, 6);                   /* the quoted line break counted */
    assert_string_equal(field(&t, 1), "say \"hi\""); /* a quote inside an unquoted field is data */
    next(&t);
    assert_int_equal(t.r.nfields, 2); /* the delimiter at the end of the file: an empty field */
    assert_string_equal(field(&t, 1), "");
    assert_int_equal(import_csv_next(&t.r, t.err, sizeof t.err), 0);
    close_reader(&t);
}

static void test_bom_blank_lines_and_delimiters(void **state)
{
    (void)state;
    static const char data[] = "\xEF\xBB\xBF"
                               "email;name\n\n"
                               "a@x;\"b;c\"\n"
                               "\n";
    struct reader t;
    open_reader(&t, data, sizeof data - 1, ';', NULL);
    next(&t);
    assert_string_equal(field(&t, 0), "email"); /* no byte order mark in the name */
    next(&t);
    assert_true(import_csv_blank(&t.r));
    next(&t);
    assert_false(import_csv_blank(&t.r));
    assert_int_equal(t.r.line, 3);
    assert_string_equal(field(&t, 1), "b;c");
    next(&t);
    assert_true(import_csv_blank(&t.r));
    assert_int_equal(import_csv_next(&t.r, t.err, sizeof t.err), 0);
    close_reader(&t);
}

static void test_after_quote_and_unterminated_resync(void **state)
{
    (void)state;
    static const char data[] = "email,name,city\n"
                               "a@x,\"Ann \"the\" Smith\",Paris\n"
                               "b@x,Bob,\"Rome\n"
                               "c@x,Cy,Oslo\n";
    struct reader t;
    open_reader(&t, data, sizeof data - 1, ',', NULL);
    next(&t);
    next(&t);
    assert_int_equal(t.r.problem, IMPORT_ROW_AFTER_QUOTE);
    assert_int_equal(t.r.problem_field, 1);
    assert_int_equal(t.r.nfields, 3); /* the record still ends at its line end */
    next(&t);
    assert_int_equal(t.r.line, 3);
    assert_int_equal(t.r.problem, IMPORT_ROW_UNTERMINATED);
    assert_int_equal(t.r.problem_field, 2);
    size_t end = import_csv_first_line_end(&t.r);
    assert_int_equal(end - t.r.start, strlen("b@x,Bob,\"Rome"));
    import_csv_resync(&t.r);
    next(&t);
    assert_int_equal(t.r.line, 4); /* the line after the stray quote, read again */
    assert_int_equal(t.r.problem, IMPORT_ROW_OK);
    assert_string_equal(field(&t, 2), "Oslo");
    assert_int_equal(import_csv_next(&t.r, t.err, sizeof t.err), 0);
    close_reader(&t);
}

/* Rows of growing length and a 3 MiB quoted field: records cross the
 * window's edge, and one is larger than the window. */
static void test_records_across_the_window(void **state)
{
    (void)state;
    buf_t data = BUF_INIT;
    buf_append_str(&data, "email,pad\n");
    int rows = 40000;
    for (int i = 0; i < rows; i++) {
        buf_appendf(&data, "u%d@x,\"%.*s\"\r\n", i, i % 97,
                    "................................."
                    "................................."
                    "...............................");
        if (i == rows / 2) {
            buf_append_str(&data, "big@x,\"");
            for (int k = 0; k < 3 * 1024 * 1024 / 64; k++) {
                buf_append_str(
                    &data, "0123456789abcdef0123456789abcdef0123456789abcdef012345678\n\"\"abc");
            }
            buf_append_str(&data, "\"\n");
        }
    }
    struct reader t;
    open_reader(&t, buf_data(&data), buf_len(&data), ',', NULL);
    next(&t);
    long line = 2;
    for (int i = 0; i < rows; i++) {
        char want[32];
        next(&t);
        assert_int_equal(t.r.line, line);
        assert_int_equal(t.r.problem, IMPORT_ROW_OK);
        snprintf(want, sizeof want, "u%d@x", i);
        assert_string_equal(field(&t, 0), want);
        assert_int_equal(t.r.fields[1].len, (size_t)(i % 97));
        line++;
        if (i == rows / 2) {
            next(&t);
            assert_string_equal(field(&t, 0), "big@x");
            assert_int_equal(t.r.lines, 3 * 1024 * 1024 / 64);
            line += 1 + t.r.lines;
        }
    }
    assert_int_equal(import_csv_next(&t.r, t.err, sizeof t.err), 0);
    assert_int_equal(t.r.bytes, buf_len(&data));
    close_reader(&t);
    buf_free(&data);
}

static void test_values_checked_and_escaped_for_copy(void **state)
{
    (void)state;
    static const char data[] = "a,b,c\n"
                               "\"x\ty\\z\nw\",\"q\"\"Jos\xE9\",n\x00l\n";
    struct reader t;
    open_reader(&t, data, sizeof data - 1, ',', NULL);
    next(&t);
    next(&t);
    buf_t out = BUF_INIT;
    struct import_value_problem pb;
    assert_int_equal(import_value(&t.r, &t.r.fields[0], 1, &out, &pb), 0);
    assert_int_equal(buf_len(&out), strlen("x\\ty\\\\z\\nw"));
    assert_memory_equal(buf_data(&out), "x\\ty\\\\z\\nw", buf_len(&out));
    buf_reset(&out);
    assert_int_equal(import_value(&t.r, &t.r.fields[1], 1, &out, &pb), -1);
    assert_int_equal(buf_len(&out), 0); /* out as it was */
    assert_int_equal(pb.kind, IMPORT_VALUE_UTF8);
    assert_int_equal(pb.byte, 0xE9);
    assert_int_equal(pb.offset, 5); /* in the value: q"Jos, the doubled quote counted once */
    char text[256];
    import_value_problem_text(&t.r, &pb, text, sizeof text);
    assert_string_equal(text, "invalid UTF-8 (byte 0xE9 at offset 5; try --encoding latin1)");
    assert_int_equal(import_value(&t.r, &t.r.fields[2], 1, &out, &pb), -1);
    assert_int_equal(pb.kind, IMPORT_VALUE_NUL);
    assert_int_equal(pb.offset, 1);
    buf_free(&out);
    close_reader(&t);
}

static void test_encodings_and_the_rejects_file(void **state)
{
    (void)state;
    /* windows-1252: 0xE9 is é, 0x80 is €, 0x81 is not a character */
    static const char data[] = "email,name\n"
                               "a@x,Ren\xE9 \x80\n"
                               "b@x,X\x81Y\n";
    struct reader t;
    open_reader(&t, data, sizeof data - 1, ',', "windows-1252");
    next(&t);
    char *rpath = write_file("", 0);
    struct import_rejects j;
    char err[256];
    assert_int_equal(import_rejects_open(&j, rpath, &t.r, err, sizeof err), 0);
    import_rejects_header(&j, &t.r);
    next(&t);
    assert_string_equal(field(&t, 1), "René €");
    next(&t);
    buf_t out = BUF_INIT;
    struct import_value_problem pb;
    assert_int_equal(import_value(&t.r, &t.r.fields[1], 1, &out, &pb), -1);
    assert_int_equal(pb.kind, IMPORT_VALUE_UNCONVERTED);
    assert_int_equal(pb.byte, 0x81);
    assert_int_equal(pb.offset, 1);
    char text[256];
    import_value_problem_text(&t.r, &pb, text, sizeof text);
    assert_string_equal(text, "byte 0x81 at offset 1 is not windows-1252");
    import_rejects_row(&j, t.r.line, "café \"x\"", t.r.w + t.r.start, t.r.end - t.r.start, 0);
    assert_int_equal(import_rejects_close(&j, err, sizeof err), 0);
    FILE *f = fopen(rpath, "rb");
    assert_non_null(f);
    char got[256];
    size_t n = fread(got, 1, sizeof got, f);
    fclose(f);
    /* in windows-1252 again, the byte it lacks as it was */
    static const char want[] = "line,reason,email,name\n"
                               "3,\"caf\xE9 \"\"x\"\"\",b@x,X\x81Y\n";
    assert_int_equal(n, sizeof want - 1);
    assert_memory_equal(got, want, n);
    unlink(rpath);
    free(rpath);
    buf_free(&out);
    close_reader(&t);
}

static void test_utf16_is_named(void **state)
{
    (void)state;
    static const char bom[] = "\xFF\xFE"
                              "e\0m\0";
    struct reader t;
    open_reader(&t, bom, sizeof bom - 1, ',', NULL);
    assert_int_equal(import_csv_next(&t.r, t.err, sizeof t.err), -1);
    assert_non_null(strstr(t.err, "UTF-16 byte order mark: use --encoding utf-16"));
    close_reader(&t);
    open_reader(&t, bom, sizeof bom - 1, ',', "utf-16");
    next(&t);
    assert_string_equal(field(&t, 0), "em");
    close_reader(&t);
    char err[256];
    struct import_csv r;
    assert_int_equal(import_csv_open(&r, "/nonexistent", ',', "klingon", err, sizeof err), -1);
    assert_non_null(strstr(err, "--encoding klingon: not an encoding iconv knows"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_quotes_and_line_ends),
        cmocka_unit_test(test_bom_blank_lines_and_delimiters),
        cmocka_unit_test(test_after_quote_and_unterminated_resync),
        cmocka_unit_test(test_records_across_the_window),
        cmocka_unit_test(test_values_checked_and_escaped_for_copy),
        cmocka_unit_test(test_encodings_and_the_rejects_file),
        cmocka_unit_test(test_utf16_is_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
