/*
 * test_render - campaign messages: golden text-only, HTML-only, multipart
 * and Chinese messages (fixed Date and Message-ID), merge fields and their
 * defaults, HTML escaping, the transfer encoding chosen by content (7bit,
 * quoted-printable, base64), RFC 2047 headers folded under 78 columns,
 * header injection refused, template and spec errors at compile time
 * (with their position), merge values percent-encoded inside URLs, and the
 * fields a recipient had no value for named in the scratch.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/base64.h>

#include "campaign/render.h"

#define FIXED_DATE 1700000000 /* Tue, 14 Nov 2023 22:13:20 +0000 */

/* A spec with the fixed clock and Message-ID the golden messages use. */
static struct render_spec base_spec(void)
{
    struct render_spec s = {0};
    s.from_addr = "news@acme.example";
    s.from_name = "Acme News";
    s.subject = "Hello {{first_name|there}}";
    s.fixed_date = FIXED_DATE;
    s.fixed_message_id = "<t1@acme.example>";
    return s;
}

/* Render for rcpt with the variables of a JSON object text; returns
 * render_message's result, the message (or nothing) in out. */
static int render_json(const struct render_spec *spec, const char *rcpt, const char *json,
                       buf_t *out, char *err, size_t errlen)
{
    struct render_template *t = render_compile(spec, err, errlen);
    assert_non_null(t);
    json_error_t jerr;
    json_t *obj = json_loads(json ? json : "{}", 0, &jerr);
    assert_non_null(obj);
    struct render_vars vars;
    render_vars_json(&vars, obj);
    int rc = render_message(t, rcpt, &vars, NULL, out, err, errlen);
    json_decref(obj);
    render_free(t);
    return rc;
}

/* The buffer as a C string (a NUL after its bytes, not counted). */
static const char *cstr(buf_t *b)
{
    buf_reserve(b, 1)[0] = '\0';
    return buf_data(b);
}

static void assert_message(const buf_t *b, const char *want)
{
    if (buf_len(b) != strlen(want) || memcmp(buf_data(b), want, buf_len(b)) != 0) {
        print_error("got:\n%.*s\nwant:\n%s\n", (int)buf_len(b), buf_data(b), want);
        fail();
    }
}

/* Every line ends in CRLF, none is over max octets (without CRLF). */
static void assert_lines(const buf_t *b, size_t max)
{
    const char *p = buf_data(b), *end = p + buf_len(b);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        assert_non_null(nl);
        assert_true(nl > p && nl[-1] == '\r');
        assert_true((size_t)(nl - 1 - p) <= max);
        assert_null(memchr(p, '\r', (size_t)(nl - 1 - p)));
        p = nl + 1;
    }
}

/* The body after the first empty line (of the message or of a part after marker). */
static const char *body_after(buf_t *b, const char *marker)
{
    const char *p = strstr(cstr(b), marker);
    assert_non_null(p);
    p = strstr(p, "\r\n\r\n");
    assert_non_null(p);
    return p + 4;
}

/* Decode one header's RFC 2047 B words (whitespace between them dropped). */
static void decode_words(const char *value, buf_t *out)
{
    const char *p = value;
    while ((p = strstr(p, "=?UTF-8?B?"))) {
        p += 10;
        const char *e = strstr(p, "?=");
        assert_non_null(e);
        uint8_t bin[64];
        size_t n;
        assert_true(EVP_DecodeBase64(bin, &n, sizeof bin, (const uint8_t *)p, (size_t)(e - p)));
        buf_append(out, bin, n);
        p = e + 2;
    }
}

/* The value of the (unfolded) header field name, into out. */
static void header_value(buf_t *msg, const char *name, buf_t *out)
{
    char key[64];
    snprintf(key, sizeof key, "\r\n%s:", name);
    const char *p = strstr(cstr(msg), key);
    assert_non_null(p);
    p += strlen(key);
    for (;;) {
        const char *e = strstr(p, "\r\n");
        buf_append(out, p, (size_t)(e - p));
        p = e + 2;
        if (*p != ' ' && *p != '\t') {
            break;
        }
    }
}

/* ---------------------------------------------------------------- golden messages */

static void test_golden_text_only(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.to_name = "{{first_name}} {{last_name}}";
    spec.text = "Hi {{first_name|there}},\nyour code is {{code}}.\n";
    spec.list_unsubscribe = "https://acme.example/u?id={{id}}";
    spec.feedback_id = "c42:acme:news:esp";
    buf_t out = BUF_INIT;
    char err[256];
    assert_int_equal(render_json(&spec, "ann@example.org",
                                 "{\"first_name\":\"Ann\",\"last_name\":\"Lee\",\"code\":"
                                 "\"X-1\",\"id\":42}",
                                 &out, err, sizeof err),
                     0);
    assert_message(&out, "From: Acme News <news@acme.example>\r\n"
                         "To: Ann Lee <ann@example.org>\r\n"
                         "Subject: Hello Ann\r\n"
                         "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                         "Message-ID: <t1@acme.example>\r\n"
                         "MIME-Version: 1.0\r\n"
                         "List-Unsubscribe: <https://acme.example/u?id=42>\r\n"
                         "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                         "Feedback-ID: c42:acme:news:esp\r\n"
                         "Content-Type: text/plain; charset=utf-8\r\n"
                         "Content-Transfer-Encoding: 7bit\r\n"
                         "\r\n"
                         "Hi Ann,\r\n"
                         "your code is X-1.\r\n");
    buf_free(&out);
}

/* http:// only to a loopback host, as [feedback] unsubscribe_url allows
 * to test with: still One-Click */
static void test_loopback_http_one_click(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.text = "x";
    spec.list_unsubscribe = "http://127.0.0.1:8080/u/{{id}}";
    buf_t out = BUF_INIT;
    char err[256];
    assert_int_equal(render_json(&spec, "ann@example.org", "{\"id\":42}", &out, err, sizeof err),
                     0);
    buf_append(&out, "", 1);
    assert_non_null(strstr(buf_data(&out),
                           "List-Unsubscribe: <http://127.0.0.1:8080/u/42>\r\n"
                           "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
    buf_free(&out);
}

static void test_golden_html_only_escapes_values(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.html = "<p>Hi <b>{{first_name|there}}</b>\n&amp; welcome</p>";
    spec.list_unsubscribe = "mailto:unsub@acme.example?subject={{id}}";
    buf_t out = BUF_INIT;
    char err[256];
    assert_int_equal(render_json(&spec, "tom@example.org",
                                 "{\"first_name\":\"Tom & \\\"Jerry\\\" <i>'x'</i>\",\"id\":7}",
                                 &out, err, sizeof err),
                     0);
    /* mailto: gets no One-Click Post (RFC 8058 wants https); the subject is raw. */
    assert_message(&out,
                   "From: Acme News <news@acme.example>\r\n"
                   "To: tom@example.org\r\n"
                   "Subject: Hello Tom & \"Jerry\" <i>'x'</i>\r\n"
                   "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                   "Message-ID: <t1@acme.example>\r\n"
                   "MIME-Version: 1.0\r\n"
                   "List-Unsubscribe: <mailto:unsub@acme.example?subject=7>\r\n"
                   "Content-Type: text/html; charset=utf-8\r\n"
                   "Content-Transfer-Encoding: 7bit\r\n"
                   "\r\n"
                   "<p>Hi <b>Tom &amp; &quot;Jerry&quot; &lt;i&gt;&#39;x&#39;&lt;/i&gt;</b>\r\n"
                   "&amp; welcome</p>\r\n");
    buf_free(&out);
}

static void test_golden_multipart(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.reply_to = "help@acme.example";
    const char *extra[] = {"X-Campaign: spring", NULL};
    spec.extra_headers = extra;
    spec.text = "Hi {{first_name|there}}\r\n";
    spec.html = "<p>Hi {{first_name|there}}</p>\n";
    buf_t out = BUF_INIT;
    char err[256];
    assert_int_equal(
        render_json(&spec, "bo@example.org", "{\"first_name\":\"\"}", &out, err, sizeof err), 0);
    assert_message(&out, "From: Acme News <news@acme.example>\r\n"
                         "Reply-To: help@acme.example\r\n"
                         "To: bo@example.org\r\n"
                         "Subject: Hello there\r\n"
                         "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                         "Message-ID: <t1@acme.example>\r\n"
                         "MIME-Version: 1.0\r\n"
                         "X-Campaign: spring\r\n"
                         "Content-Type: multipart/alternative; boundary=\"=_ringmail-alt\"\r\n"
                         "\r\n"
                         "--=_ringmail-alt\r\n"
                         "Content-Type: text/plain; charset=utf-8\r\n"
                         "Content-Transfer-Encoding: 7bit\r\n"
                         "\r\n"
                         "Hi there\r\n"
                         "--=_ringmail-alt\r\n"
                         "Content-Type: text/html; charset=utf-8\r\n"
                         "Content-Transfer-Encoding: 7bit\r\n"
                         "\r\n"
                         "<p>Hi there</p>\r\n"
                         "--=_ringmail-alt--\r\n");
    buf_free(&out);
}

static void test_golden_chinese_subject_names_and_body(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.from_name = "阿克米 新闻";
    spec.to_name = "{{name}}";
    spec.subject = "{{name}}，您好：本周精选商品全场八折，会员再享专属优惠券，详情请查看邮件正文";
    spec.text = "{{name}}，您好！\n感谢您订阅我们的新闻。本周精选商品全场八折。\n";
    spec.html = "<html><body><p>Dear {{name}},</p><p>Thanks for subscribing to our "
                "newsletter.</p></body></html>\n";
    spec.fixed_message_id = "<zh@acme.example>";
    buf_t out = BUF_INIT;
    char err[256];
    assert_int_equal(
        render_json(&spec, "zhang.wei@example.cn", "{\"name\":\"张伟\"}", &out, err, sizeof err),
        0);
    /* Checked independently: python3's email package decodes this to the
     * same subject, names and bodies (tests/e2e/test_dkim.sh does it too). */
    assert_message(
        &out, "From: =?UTF-8?B?6Zi/5YWL57GzIOaWsOmXuw==?= <news@acme.example>\r\n"
              "To: =?UTF-8?B?5byg5Lyf?= <zhang.wei@example.cn>\r\n"
              "Subject: =?UTF-8?B?5byg5Lyf77yM5oKo5aW977ya5pys5ZGo57K+6YCJ5ZWG5ZOB5YWo5Zy6?=\r\n"
              " =?UTF-8?B?5YWr5oqY77yM5Lya5ZGY5YaN5Lqr5LiT5bGe5LyY5oOg5Yi477yM6K+m5oOF?=\r\n"
              " =?UTF-8?B?6K+35p+l55yL6YKu5Lu25q2j5paH?=\r\n"
              "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
              "Message-ID: <zh@acme.example>\r\n"
              "MIME-Version: 1.0\r\n"
              "Content-Type: multipart/alternative; boundary=\"=_ringmail-alt\"\r\n"
              "\r\n"
              "--=_ringmail-alt\r\n"
              "Content-Type: text/plain; charset=utf-8\r\n"
              "Content-Transfer-Encoding: base64\r\n"
              "\r\n"
              "5byg5Lyf77yM5oKo5aW977yBDQrmhJ/osKLmgqjorqLpmIXmiJHku6znmoTmlrDpl7vjgILmnKzl\r\n"
              "kajnsr7pgInllYblk4HlhajlnLrlhavmipjjgIINCg==\r\n"
              "--=_ringmail-alt\r\n"
              "Content-Type: text/html; charset=utf-8\r\n"
              "Content-Transfer-Encoding: quoted-printable\r\n"
              "\r\n"
              "<html><body><p>Dear =E5=BC=A0=E4=BC=9F,</p><p>Thanks for subscribing to our=\r\n"
              " newsletter.</p></body></html>\r\n"
              "--=_ringmail-alt--\r\n");
    assert_lines(&out, 78);
    buf_t v = BUF_INIT, d = BUF_INIT;
    header_value(&out, "Subject", &v);
    decode_words(cstr(&v), &d);
    assert_int_equal(buf_len(&d), strlen("张伟") + strlen(spec.subject) - strlen("{{name}}"));
    assert_memory_equal(buf_data(&d), "张伟，您好：本周精选", strlen("张伟，您好：本周精选"));
    buf_free(&v);
    buf_free(&d);
    buf_free(&out);
}

/* ---------------------------------------------------------------- merge fields */

static void test_defaults_and_field_syntax(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.subject = "s";
    spec.text = "[{{first_name|there}}][{{ first_name | Dear friend }}][{{missing}}]"
                "[{{email}}][{{n}}][{{r}}][{{b}}][{{nul|dflt}}][{{obj|o}}]";
    buf_t out = BUF_INIT;
    char err[256];
    /* Missing: the default, or nothing. */
    assert_int_equal(render_json(&spec, "a@b.example",
                                 "{\"n\":12,\"r\":2.5,\"b\":true,\"nul\":null,\"obj\":{}}", &out,
                                 err, sizeof err),
                     0);
    assert_non_null(strstr(cstr(&out), "\r\n\r\n[there][Dear friend][][a@b.example][12][2.5]"
                                       "[true][dflt][o]\r\n"));
    buf_reset(&out);
    /* Present: the value; empty counts as missing; email can be overridden. */
    assert_int_equal(render_json(&spec, "a@b.example",
                                 "{\"first_name\":\"Zoë\",\"missing\":\"\",\"email\":\"x\"}", &out,
                                 err, sizeof err),
                     0);
    assert_non_null(strstr(cstr(&out), "[Zo=C3=AB][Zo=C3=AB][][x]"));
    buf_free(&out);
}

static void test_no_vars_and_reused_scratch(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.text = "Hi {{first_name|there}}";
    char err[256];
    struct render_template *t = render_compile(&spec, err, sizeof err);
    assert_non_null(t);
    struct render_scratch scratch;
    render_scratch_init(&scratch);
    buf_t out = BUF_INIT;
    for (int i = 0; i < 3; i++) {
        buf_reset(&out);
        assert_int_equal(render_message(t, "a@b.example", NULL, &scratch, &out, err, sizeof err),
                         0);
        assert_non_null(strstr(cstr(&out), "Subject: Hello there\r\n"));
        assert_non_null(strstr(cstr(&out), "\r\n\r\nHi there\r\n"));
    }
    /* out is appended to, never overwritten. */
    size_t one = buf_len(&out);
    assert_int_equal(render_message(t, "a@b.example", NULL, &scratch, &out, err, sizeof err), 0);
    assert_int_equal(buf_len(&out), 2 * one);
    render_scratch_free(&scratch);
    buf_free(&out);
    render_free(t);
}

/* ---------------------------------------------------------------- transfer encodings */

static void test_quoted_printable_for_some_8bit(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.subject = "s";
    spec.text =
        "Dear {{first_name}}, our café has a new crème brûlée this week, come and try it \nx=1\t\n";
    buf_t out = BUF_INIT;
    char err[256];
    assert_int_equal(
        render_json(&spec, "a@b.example", "{\"first_name\":\"Zoë\"}", &out, err, sizeof err), 0);
    assert_non_null(strstr(cstr(&out), "Content-Transfer-Encoding: quoted-printable\r\n"));
    /* '=' encoded, 8-bit encoded, whitespace before a line end encoded. */
    assert_string_equal(
        body_after(&out, "Content-Type"),
        "Dear Zo=C3=AB, our caf=C3=A9 has a new cr=C3=A8me br=C3=BBl=C3=A9e this wee=\r\n"
        "k, come and try it=20\r\nx=3D1=09\r\n");
    buf_free(&out);
}

static void test_quoted_printable_for_long_ascii_lines(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    char text[400];
    for (size_t i = 0; i < 300; i++) {
        text[i] = (char)('a' + i % 26);
    }
    memcpy(text + 300, "\n", 2);
    spec.text = text;
    buf_t out = BUF_INIT;
    char err[256];
    assert_int_equal(render_json(&spec, "a@b.example", NULL, &out, err, sizeof err), 0);
    assert_non_null(strstr(cstr(&out), "Content-Transfer-Encoding: quoted-printable\r\n"));
    assert_lines(&out, 76);
    /* Soft breaks removed, the text comes back. */
    buf_t plain = BUF_INIT;
    for (const char *p = body_after(&out, "Content-Type"); *p; p++) {
        if (p[0] == '=' && p[1] == '\r' && p[2] == '\n') {
            p += 2;
        } else if (*p != '\r' && *p != '\n') {
            buf_append(&plain, p, 1);
        }
    }
    assert_int_equal(buf_len(&plain), 300);
    assert_memory_equal(buf_data(&plain), text, 300);
    buf_free(&plain);
    buf_free(&out);
}

static void test_base64_for_mostly_8bit(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.html = "<p>{{name}}：欢迎！这是一封中文邮件，内容大部分不是 ASCII。</p>\r\n";
    buf_t out = BUF_INIT;
    char err[256];
    assert_int_equal(
        render_json(&spec, "a@b.example", "{\"name\":\"<李>\"}", &out, err, sizeof err), 0);
    assert_non_null(strstr(cstr(&out), "Content-Type: text/html; charset=utf-8\r\n"
                                       "Content-Transfer-Encoding: base64\r\n"));
    assert_lines(&out, 76);
    const char *b64 = body_after(&out, "Content-Type");
    buf_t joined = BUF_INIT;
    for (const char *p = b64; *p; p++) {
        if (*p != '\r' && *p != '\n') {
            buf_append(&joined, p, 1);
        }
    }
    uint8_t bin[512];
    size_t n;
    assert_true(EVP_DecodeBase64(bin, &n, sizeof bin, (const uint8_t *)buf_data(&joined),
                                 buf_len(&joined)));
    const char *want = "<p>&lt;李&gt;：欢迎！这是一封中文邮件，内容大部分不是 ASCII。</p>\r\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(bin, want, n);
    buf_free(&joined);
    buf_free(&out);
}

static void test_line_endings_normalized(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.text = "a\nb\r\nc\rd{{v}}";
    buf_t out = BUF_INIT;
    char err[256];
    /* A line break in a body value is fine (not a header). */
    assert_int_equal(
        render_json(&spec, "a@b.example", "{\"v\":\"\\ne\\r\\n\"}", &out, err, sizeof err), 0);
    assert_string_equal(body_after(&out, "Content-Type"), "a\r\nb\r\nc\r\nd\r\ne\r\n");
    assert_lines(&out, 78);
    buf_free(&out);
}

static void test_multipart_boundary_never_in_a_part(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.text = "--=_ringmail-alt\n";
    spec.html = "<p>--=_ringmail-alt--</p>";
    buf_t out = BUF_INIT;
    char err[256];
    assert_int_equal(render_json(&spec, "a@b.example", NULL, &out, err, sizeof err), 0);
    /* ASCII with short lines, but "=_" forces quoted-printable. */
    assert_non_null(strstr(cstr(&out), "\r\n\r\n--=3D_ringmail-alt\r\n--=_ringmail-alt\r\n"));
    assert_non_null(strstr(cstr(&out), "<p>--=3D_ringmail-alt--</p>\r\n--=_ringmail-alt--\r\n"));
    buf_free(&out);
}

/* ---------------------------------------------------------------- headers */

static void test_long_ascii_subject_folds_at_spaces(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.subject = "This week only: twenty percent off everything in the store, plus free "
                   "shipping on orders over fifty dollars for {{first_name}}";
    spec.text = "x";
    buf_t out = BUF_INIT;
    char err[256];
    assert_int_equal(
        render_json(&spec, "a@b.example", "{\"first_name\":\"Ann\"}", &out, err, sizeof err), 0);
    assert_non_null(strstr(
        cstr(&out), "Subject: This week only: twenty percent off everything in the store, plus free"
                    "\r\n shipping on orders over fifty dollars for Ann\r\n"));
    assert_lines(&out, 78);
    buf_free(&out);
}

static void test_display_names_quoted_or_encoded(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.from_name = "Acme, Inc. \"Deals\"";
    spec.to_name = "{{n}}";
    spec.text = "x";
    buf_t out = BUF_INIT;
    char err[256];
    assert_int_equal(
        render_json(&spec, "a@b.example", "{\"n\":\"=?x?= Ann\"}", &out, err, sizeof err), 0);
    assert_non_null(
        strstr(cstr(&out), "From: \"Acme, Inc. \\\"Deals\\\"\" <news@acme.example>\r\n"));
    /* "=?" could be read as an encoded word: encode it. */
    assert_non_null(strstr(cstr(&out), "To: =?UTF-8?B?PT94Pz0gQW5u?= <a@b.example>\r\n"));
    buf_free(&out);
}

static void test_long_chinese_name_folds_address(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.to_name = "{{n}}";
    spec.text = "x";
    buf_t out = BUF_INIT;
    char err[256];
    assert_int_equal(render_json(&spec, "someone.with.a.long.address@example.org",
                                 "{\"n\":\"欧阳娜娜欧阳娜娜欧阳娜娜欧阳娜娜\"}", &out, err,
                                 sizeof err),
                     0);
    assert_lines(&out, 78);
    buf_t v = BUF_INIT, d = BUF_INIT;
    header_value(&out, "To", &v);
    assert_non_null(strstr(cstr(&v), "<someone.with.a.long.address@example.org>"));
    decode_words(cstr(&v), &d);
    assert_int_equal(buf_len(&d), strlen("欧阳娜娜欧阳娜娜欧阳娜娜欧阳娜娜"));
    assert_memory_equal(buf_data(&d), "欧阳娜娜欧阳娜娜欧阳娜娜欧阳娜娜", buf_len(&d));
    buf_free(&v);
    buf_free(&d);
    buf_free(&out);
}

static void test_generated_date_and_message_id(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.fixed_date = 0;
    spec.fixed_message_id = NULL;
    spec.text = "x";
    char err[256];
    struct render_template *t = render_compile(&spec, err, sizeof err);
    assert_non_null(t);
    buf_t a = BUF_INIT, b = BUF_INIT, v = BUF_INIT;
    assert_int_equal(render_message(t, "a@b.example", NULL, NULL, &a, err, sizeof err), 0);
    assert_int_equal(render_message(t, "a@b.example", NULL, NULL, &b, err, sizeof err), 0);
    header_value(&a, "Message-ID", &v);
    /* " <20 hex.unix time@acme.example>" */
    const char *id = cstr(&v);
    assert_int_equal(id[0], ' ');
    assert_int_equal(id[1], '<');
    for (int i = 2; i < 22; i++) {
        assert_non_null(strchr("0123456789abcdef", id[i]));
    }
    assert_int_equal(id[22], '.');
    char *end;
    long long ts = strtoll(id + 23, &end, 10);
    assert_true(ts >= FIXED_DATE);
    assert_string_equal(end, "@acme.example>");
    buf_t w = BUF_INIT;
    header_value(&b, "Message-ID", &w);
    assert_string_not_equal(cstr(&v), cstr(&w));
    /* "Date: Www, DD Mmm YYYY HH:MM:SS +0000" */
    buf_reset(&v);
    header_value(&a, "Date", &v);
    assert_int_equal(buf_len(&v), strlen(" Tue, 14 Nov 2023 22:13:20 +0000"));
    assert_string_equal(cstr(&v) + buf_len(&v) - 6, " +0000");
    buf_free(&a);
    buf_free(&b);
    buf_free(&v);
    buf_free(&w);
    render_free(t);
}

/* ---------------------------------------------------------------- URLs */

/* Render with a scratch; the message as a C string in out. */
static void render_ok(const struct render_spec *spec, const char *rcpt, const char *json,
                      buf_t *out)
{
    char err[256] = "";
    if (render_json(spec, rcpt, json, out, err, sizeof err) != 0) {
        print_error("render failed: %s\n", err);
        fail();
    }
    cstr(out);
}

static void assert_has(buf_t *msg, const char *want)
{
    if (!strstr(cstr(msg), want)) {
        print_error("want\n%s\nin\n%s\n", want, cstr(msg));
        fail();
    }
}

static void test_url_list_unsubscribe_encoded(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.text = "x";
    spec.list_unsubscribe = "https://acme.example/u?e={{email}}&n={{name}}&d={{none|a b}}";
    buf_t out = BUF_INIT;
    render_ok(&spec, "a+b@ex.org", "{\"name\":\"Zoë & co/ü~._-\"}", &out);
    /* Unreserved characters stay; UTF-8 octet by octet; the default too. */
    assert_has(&out, "List-Unsubscribe: <https://acme.example/u?e=a%2Bb%40ex.org&n="
                     "Zo%C3%AB%20%26%20co%2F%C3%BC~._-&d=a%20b>\r\n");
    buf_free(&out);
    /* In a mailto: address '@' stays; after its '?' it is encoded. */
    spec.list_unsubscribe = "mailto:{{box}}?subject=stop%20{{email}}";
    buf_init(&out);
    render_ok(&spec, "a+b@ex.org", "{\"box\":\"list+x@acme.example\"}", &out);
    assert_has(&out, "List-Unsubscribe: <mailto:list%2Bx@acme.example?subject=stop%20a%2Bb%40"
                     "ex.org>\r\n");
    buf_free(&out);
}

static void test_url_html_href_src_encoded(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.html = "<a href=\"https://x.test/t?u={{email}}&amp;n={{name}}\">{{name}}</a>\n"
                "<img src='https://x.test/p/{{name}}.png' alt=\"{{name}}\">\n"
                "<a href=\"{{link}}\">whole URL</a> <A HREF={{link}}>unquoted</A>\n"
                "<a title=\"x {{name}}\" href=x>not a URL attribute</a>\n"
                "<a href=\"mailto:{{rep}}?subject={{name}}\">m</a>\n"
                "<!-- <a href=\"x{{name}}\"> --> <p data-src=\"y{{name}}\">\n"
                "<a href=\"{{link}}?u={{name}}\">after a whole URL</a>\n"
                "text https://x.test/{{name}} is not a link in HTML\n";
    buf_t out = BUF_INIT;
    render_ok(&spec, "a+b@ex.org",
              "{\"name\":\"A&B \\\"C\\\"\",\"link\":\"https://y.test/?a=1&b=2\","
              "\"rep\":\"rep@x.test\"}",
              &out);
    const char *body = body_after(&out, "Content-Type: text/html");
    const char *want = "<a href=\"https://x.test/t?u=a%2Bb%40ex.org&amp;n=A%26B%20%22C%22\">"
                       "A&amp;B &quot;C&quot;</a>\r\n"
                       "<img src='https://x.test/p/A%26B%20%22C%22.png' alt=\"A&amp;B &quot;C"
                       "&quot;\">\r\n"
                       "<a href=\"https://y.test/?a=1&amp;b=2\">whole URL</a> "
                       "<A HREF=https://y.test/?a=1&amp;b=2>unquoted</A>\r\n"
                       "<a title=\"x A&amp;B &quot;C&quot;\" href=x>not a URL attribute</a>\r\n"
                       "<a href=\"mailto:rep@x.test?subject=A%26B%20%22C%22\">m</a>\r\n"
                       "<!-- <a href=\"xA&amp;B &quot;C&quot;\"> --> <p data-src=\"yA&amp;B "
                       "&quot;C&quot;\">\r\n"
                       "<a href=\"https://y.test/?a=1&amp;b=2?u=A%26B%20%22C%22\">after a whole "
                       "URL</a>\r\n"
                       "text https://x.test/A&amp;B &quot;C&quot; is not a link in HTML\r\n";
    /* Lines over 78 octets: quoted-printable; decode the soft breaks and =XX. */
    buf_t plain = BUF_INIT;
    for (const char *p = body; *p;) {
        if (p[0] == '=' && p[1] == '\r' && p[2] == '\n') {
            p += 3;
        } else if (p[0] == '=' && p[1] && p[2]) {
            char hex[3] = {p[1], p[2], 0};
            char c = (char)strtol(hex, NULL, 16);
            buf_append(&plain, &c, 1);
            p += 3;
        } else {
            buf_append(&plain, p++, 1);
        }
    }
    if (strcmp(cstr(&plain), want) != 0) {
        print_error("got:\n%s\nwant:\n%s\n", cstr(&plain), want);
        fail();
    }
    buf_free(&plain);
    buf_free(&out);
}

static void test_url_text_encoded(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.text = "Hi {{name}}\n"
                "https://x.test/?n={{name}} and {{name}}\n"
                "<HTTPS://x.test/{{name}}>\n"
                "see:http://y.test/{{name}}\n"
                "{{link}}\n"
                "xhttps://no.test/{{name}} ftp://z.test/{{name}}\n";
    buf_t out = BUF_INIT;
    render_ok(&spec, "a@b.example", "{\"name\":\"A B/é\",\"link\":\"https://l.test/?a b\"}", &out);
    const char *body = body_after(&out, "Content-Transfer-Encoding");
    assert_string_equal(body, "Hi A B/=C3=A9\r\n"
                              "https://x.test/?n=3DA%20B%2F%C3%A9 and A B/=C3=A9\r\n"
                              "<HTTPS://x.test/A%20B%2F%C3%A9>\r\n"
                              "see:http://y.test/A%20B%2F%C3%A9\r\n"
                              "https://l.test/?a b\r\n"
                              "xhttps://no.test/A B/=C3=A9 ftp://z.test/A B/=C3=A9\r\n");
    buf_free(&out);
}

/* ---------------------------------------------------------------- missing values */

static void test_missing_fields_named(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.subject = "Hi {{first_name}}";
    spec.to_name = "{{last_name}}";
    spec.text = "{{a}} {{b|dflt}} {{c}} {{a}} {{email}} {{d}} {{first_name}}";
    char err[256];
    struct render_template *t = render_compile(&spec, err, sizeof err);
    assert_non_null(t);
    struct render_scratch scratch;
    render_scratch_init(&scratch);
    buf_t out = BUF_INIT;
    /* Missing, null and empty are missing; a default or {{email}} never is. */
    json_t *vars = json_loads("{\"c\":\"\",\"d\":\"x\",\"last_name\":null}", 0, NULL);
    struct render_vars rv;
    render_vars_json(&rv, vars);
    assert_int_equal(render_message(t, "a@b.example", &rv, &scratch, &out, err, sizeof err), 0);
    assert_int_equal(scratch.nmissing, 4);
    assert_string_equal(scratch.missing[0], "last_name"); /* To, Subject, then the body */
    assert_string_equal(scratch.missing[1], "first_name");
    assert_string_equal(scratch.missing[2], "a");
    assert_string_equal(scratch.missing[3], "c");
    json_decref(vars);
    /* The next recipient has them all: nothing is left from the last. */
    vars =
        json_loads("{\"a\":1,\"c\":2,\"d\":3,\"first_name\":\"F\",\"last_name\":\"L\"}", 0, NULL);
    render_vars_json(&rv, vars);
    assert_int_equal(render_message(t, "a@b.example", &rv, &scratch, &out, err, sizeof err), 0);
    assert_int_equal(scratch.nmissing, 0);
    json_decref(vars);
    /* No variables at all; and a refused recipient names nothing. */
    assert_int_equal(render_message(t, "a@b.example", NULL, &scratch, &out, err, sizeof err), 0);
    assert_int_equal(scratch.nmissing, 5);
    assert_int_equal(render_message(t, "nobody", NULL, &scratch, &out, err, sizeof err), -1);
    assert_int_equal(scratch.nmissing, 0);
    buf_free(&out);
    render_scratch_free(&scratch);
    render_free(t);
}

/* More missing fields than the scratch names: the first named, the others said. */
static void test_missing_fields_many(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    buf_t text = BUF_INIT;
    for (int i = 0; i < RENDER_MISSING_MAX + 5; i++) {
        buf_appendf(&text, "{{f%d}} {{f%d}}\n", i, i);
    }
    spec.text = cstr(&text);
    char err[256];
    struct render_template *t = render_compile(&spec, err, sizeof err);
    assert_non_null(t);
    struct render_scratch scratch;
    render_scratch_init(&scratch);
    buf_t out = BUF_INIT;
    assert_int_equal(render_message(t, "a@b.example", NULL, &scratch, &out, err, sizeof err), 0);
    assert_int_equal(scratch.nmissing, RENDER_MISSING_MAX);
    assert_true(scratch.missing_more);
    assert_string_equal(scratch.missing[RENDER_MISSING_MAX - 1], "f15");
    spec.text = "{{f0}}";
    render_free(t);
    t = render_compile(&spec, err, sizeof err);
    assert_int_equal(render_message(t, "a@b.example", NULL, &scratch, &out, err, sizeof err), 0);
    assert_int_equal(scratch.nmissing, 1);
    assert_false(scratch.missing_more);
    buf_free(&out);
    buf_free(&text);
    render_scratch_free(&scratch);
    render_free(t);
}

/* ---------------------------------------------------------------- refusals */

static void assert_refused(const struct render_spec *spec, const char *rcpt, const char *json,
                           const char *reason)
{
    buf_t out = BUF_INIT;
    buf_append_str(&out, "previous message");
    char err[256] = "";
    assert_int_equal(render_json(spec, rcpt, json, &out, err, sizeof err), -1);
    if (!strstr(err, reason)) {
        print_error("reason \"%s\" lacks \"%s\"\n", err, reason);
        fail();
    }
    /* Nothing of the refused message is left behind. */
    assert_int_equal(buf_len(&out), strlen("previous message"));
    buf_free(&out);
}

static void test_header_injection_refused(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.to_name = "{{last_name}}";
    spec.text = "Hi {{first_name}}";
    spec.list_unsubscribe = "https://acme.example/u/{{id}}";
    const char *ok = "{\"first_name\":\"Ann\",\"last_name\":\"Lee\",\"id\":\"1\"}";
    buf_t out = BUF_INIT;
    char err[256];
    assert_int_equal(render_json(&spec, "a@b.example", ok, &out, err, sizeof err), 0);
    buf_free(&out);
    assert_refused(&spec, "a@b.example", "{\"first_name\":\"Ann\\r\\nBcc: x@evil.example\"}",
                   "Subject: merge field first_name contains CR or LF (header injection refused)");
    assert_refused(&spec, "a@b.example", "{\"first_name\":\"Ann\\nBcc: x@evil.example\"}",
                   "Subject: merge field first_name contains CR or LF");
    assert_refused(&spec, "a@b.example", "{\"last_name\":\"Lee\\rX\"}",
                   "To: merge field last_name contains CR or LF");
    /* Inside the URL a value is percent-encoded: nothing of it can end the
     * header or the <...>. */
    assert_int_equal(render_json(&spec, "a@b.example",
                                 "{\"id\":\"1> <https://evil.example>\\r\\nBcc: x@evil.example\"}",
                                 &out, err, sizeof err),
                     0);
    assert_non_null(strstr(cstr(&out), "List-Unsubscribe: <https://acme.example/u/"
                                       "1%3E%20%3Chttps%3A%2F%2Fevil.example%3E%0D%0ABcc%3A%20"
                                       "x%40evil.example>\r\n"));
    buf_free(&out);
    assert_refused(&spec, "a@b.example\r\nBcc: x@evil.example", NULL,
                   "recipient address: contains CR or LF");
    assert_refused(&spec, "<a@b.example>", NULL, "recipient address: contains a space");
    assert_refused(&spec, "张@例子.中国", NULL, "recipient address: not ASCII");
    assert_refused(&spec, "nobody", NULL, "recipient address: not local@domain");
}

/* A lookup returning ctx as the value ("a\0b" is 3 octets): JSON cannot
 * carry invalid UTF-8, a caller's own lookup can. */
static int raw_lookup(void *ctx, const char *name, buf_t *value)
{
    (void)name;
    const char *v = ctx;
    buf_append(value, v, v[0] == 'a' ? 3 : strlen(v));
    return 1;
}

static void test_invalid_utf8_value_refused(void **state)
{
    (void)state;
    struct render_spec spec = base_spec();
    spec.subject = "s";
    spec.text = "Hi {{first_name}}";
    char err[256];
    struct render_template *t = render_compile(&spec, err, sizeof err);
    assert_non_null(t);
    static const char *bad[] = {"\xff", "\xc0\xaf", "\xed\xa0\x80", "a\0b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf_t out = BUF_INIT;
        struct render_vars vars = {raw_lookup, (void *)bad[i]};
        assert_int_equal(render_message(t, "a@b.example", &vars, NULL, &out, err, sizeof err), -1);
        assert_non_null(strstr(err, "text: merge field first_name is not UTF-8 text"));
        assert_int_equal(buf_len(&out), 0);
        buf_free(&out);
    }
    render_free(t);
}

static void assert_compile_error(const struct render_spec *spec, const char *reason)
{
    char err[256] = "";
    struct render_template *t = render_compile(spec, err, sizeof err);
    assert_null(t);
    if (!strstr(err, reason)) {
        print_error("reason \"%s\" lacks \"%s\"\n", err, reason);
        fail();
    }
}

static void test_compile_errors(void **state)
{
    (void)state;
    struct render_spec s = base_spec();
    s.text = "Hi {{first_name";
    assert_compile_error(&s, "text: unterminated merge field '{{first_name' at character 4");
    s.text = "Hi {{first name}}";
    assert_compile_error(&s, "text: bad merge field name '{{first name}}' at character 4 "
                             "(a name is letters, digits, _ - .)");
    s.text = "Hi {{}}";
    assert_compile_error(&s, "text: bad merge field name '{{}}' at character 4");
    s.text = "Hi {{a|{{b}}";
    assert_compile_error(&s, "text: '{' inside the merge field '{{a|{{b}}' at character 4");
    /* Several lines: line and character (UTF-8 characters, CRLF one line end). */
    s.text = "Dear all,\r\n\r\nZoë said {{x}} and {{y\nthe end {{z}}";
    assert_compile_error(&s, "text: unterminated merge field '{{y' at line 3, character 20");
    s.text = "line one\n  {{bad name|x}} here, and more text after it than fits in an excerpt";
    assert_compile_error(&s, "text: bad merge field name '{{bad name|x}}' at line 2, character 3");
    s.text = "x {{y and a long run of text without the closing braces, on and on and on";
    assert_compile_error(&s, "text: unterminated merge field '{{y and a long run of text without "
                             "the c...' at character 3"); /* 40 characters */
    s.text = "x";
    s.subject = "Hi {{first_name";
    assert_compile_error(&s, "subject: unterminated merge field '{{first_name' at character 4");
    s.subject = "Hi";
    s.list_unsubscribe = "https://acme.example/u?e={{email";
    assert_compile_error(&s,
                         "list_unsubscribe: unterminated merge field '{{email' at character 26");
    s.list_unsubscribe = NULL;
    s.reply_to = "help desk@acme.example";
    assert_compile_error(&s, "reply_to: contains a space");
    s.reply_to = NULL;
    s.text = "\xff";
    assert_compile_error(&s, "text: template is not UTF-8 text");
    s.text = NULL;
    assert_compile_error(&s, "text, html: a message needs one of them");
    s.text = "x";
    s.subject = "Hello\r\nBcc: x@evil.example";
    assert_compile_error(&s, "subject: a line break in a header template");
    s.subject = NULL;
    assert_compile_error(&s, "subject: missing");
    s.subject = "x";
    s.list_unsubscribe = "http://acme.example/u";
    assert_compile_error(&s, "list_unsubscribe: must start with https:// or mailto:");
    s.list_unsubscribe = "http://localhost.acme.example/u";
    assert_compile_error(&s, "list_unsubscribe: must start with https:// or mailto:");
    s.list_unsubscribe = NULL;
    s.from_addr = "News <news@acme.example>";
    assert_compile_error(&s, "from_addr: contains a space");
    s.from_addr = "news@acme.example";
    s.from_name = "Acme\nBcc: x";
    assert_compile_error(&s, "from_name: not one line of UTF-8 text");
    s.from_name = NULL;
    const char *dup[] = {"X-Campaign: 42", "subject: again", NULL};
    s.extra_headers = dup;
    assert_compile_error(&s, "extra header: subject is written by the renderer");
    const char *reply[] = {"Reply-To: x@acme.example", NULL};
    s.extra_headers = reply;
    assert_compile_error(&s, "extra header: Reply-To is written by the renderer");
    const char *bad[] = {"No colon here", NULL};
    s.extra_headers = bad;
    assert_compile_error(&s, "extra header: \"Name: value\"");
    s.extra_headers = NULL;
    s.feedback_id = "a\r\nb";
    assert_compile_error(&s, "feedback_id: printable ASCII");
    s.feedback_id = NULL;
    struct dkim_spec dk = {
        .domain = "acme.example", .selector = "s1", .key_file = "/nonexistent/key.pem"};
    s.dkim = &dk;
    assert_compile_error(&s, "dkim: cannot read a private key from /nonexistent/key.pem");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_text_only),
        cmocka_unit_test(test_loopback_http_one_click),
        cmocka_unit_test(test_golden_html_only_escapes_values),
        cmocka_unit_test(test_golden_multipart),
        cmocka_unit_test(test_golden_chinese_subject_names_and_body),
        cmocka_unit_test(test_defaults_and_field_syntax),
        cmocka_unit_test(test_no_vars_and_reused_scratch),
        cmocka_unit_test(test_quoted_printable_for_some_8bit),
        cmocka_unit_test(test_quoted_printable_for_long_ascii_lines),
        cmocka_unit_test(test_base64_for_mostly_8bit),
        cmocka_unit_test(test_line_endings_normalized),
        cmocka_unit_test(test_multipart_boundary_never_in_a_part),
        cmocka_unit_test(test_long_ascii_subject_folds_at_spaces),
        cmocka_unit_test(test_display_names_quoted_or_encoded),
        cmocka_unit_test(test_long_chinese_name_folds_address),
        cmocka_unit_test(test_generated_date_and_message_id),
        cmocka_unit_test(test_header_injection_refused),
        cmocka_unit_test(test_invalid_utf8_value_refused),
        cmocka_unit_test(test_compile_errors),
        cmocka_unit_test(test_url_list_unsubscribe_encoded),
        cmocka_unit_test(test_url_html_href_src_encoded),
        cmocka_unit_test(test_url_text_encoded),
        cmocka_unit_test(test_missing_fields_named),
        cmocka_unit_test(test_missing_fields_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
