#!/usr/bin/env bash
# ringmail report --format html (issue 14 item 5) and the per-minute table
# with its empty minutes, over delivery rows written here with psql (what
# send's results writer writes): three ISPs, a 10-minute stall with no
# attempt at all, deferrals, rejections, an expiry, TLS handshakes
# (conn_first) resumed or not, complaints and unsubscribes, recipients
# still waiting, a campaign name and a reply that try to break out of the
# page ("</script><script>alert(1)</script>").
#   1. text, CSV and JSON: every minute from the first attempt to the last,
#      the stall's ten as zeros; resumption over TLS handshakes, and over
#      attempts, said so, for rows written before connections were recorded
#   2. the page: one file, no external reference, escaped, its data intact
#   3. headless Chromium (tests/e2e/cdp.py) opens it from file://: no console
#      error, no request, every chart drawn (a canvas with coloured series),
#      the empty minutes in the charts' data; a screenshot kept in
#      tests/e2e/out/report_html/
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
e2e_require chromium psql || { e2e_finish; exit 1; }
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null
T=$E2E_TMP
OUT=${E2E_OUT:-$E2E_DIR/out}/report_html
rm -rf "$OUT"
mkdir -p "$OUT"

NAME="Spring <b>\"sale\"</b> & 'more' 春"
EVIL='421 4.7.28 slow down </script><script>alert(1)</script>'
C=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body, created_at)
    VALUES (\$n\$$NAME\$n\$, 'news@sender.test', 'Hi', 'Body', '2026-05-01 09:00:00+00') RETURNING id")
# r1-r30: gmail, yahoo, outlook in turn. r1-r20 sent; r21-r24 bounced; r25
# expired; r26-r30 still waiting (deferred).
psql_q "INSERT INTO ringmail.recipient (campaign_id, address, state)
    SELECT $C, 'r' || g || '@' || (ARRAY['gmail', 'yahoo', 'outlook'])[1 + g % 3] || '.test',
           CASE WHEN g <= 20 THEN 'sent' WHEN g <= 24 THEN 'bounced' WHEN g = 25 THEN 'expired'
                ELSE 'deferred' END
    FROM generate_series(1, 30) g" >/dev/null
T0="'2026-05-01 10:00:00+00'::timestamptz"
ISP="(ARRAY['gmail', 'yahoo', 'outlook'])[1 + g % 3]"
RID="(SELECT id FROM ringmail.recipient WHERE campaign_id = $C AND address LIKE 'r' || g || '@%')"
# Accepted: r1-r10 in minutes 0-4, r11-r20 in minutes 15-19: minutes 5-14
# have no attempt at all. Each over TLS 1.3; the first attempt of its
# connection when g % 4 is 1 or 2 (10 handshakes), resumed when g is even
# (5 of those handshakes, 10 of the 20 attempts).
psql_q "INSERT INTO ringmail.delivery (campaign_id, recipient_id, attempt, outcome, final, isp, at,
        peer, code, enhanced, reply, reason, tls_version, tls_cipher, tls_resumed, tls_verify,
        conn_first)
    SELECT $C, $RID, 1, 'accepted', true, $ISP,
           $T0 + ((g - 1) % 5 + CASE WHEN g > 10 THEN 15 ELSE 0 END) * interval '1 minute'
               + interval '10 seconds',
           '127.0.0.1', 250, '2.0.0', 'OK queued', 'accepted', 'TLSv1.3', 'TLS_AES_128_GCM_SHA256',
           g % 2 = 0, CASE WHEN g % 3 = 0 THEN 'ok' ELSE 'unable to get local issuer certificate' END,
           g % 4 IN (1, 2)
    FROM generate_series(1, 20) g" >/dev/null
# r21-r30 deferred in minute 1 (r21's reply is the one that tries to break
# out); r21-r24 rejected and r25 expired in minute 16.
psql_q "INSERT INTO ringmail.delivery (campaign_id, recipient_id, attempt, outcome, final, isp, at,
        peer, code, enhanced, reply, reason, category, bounce)
    SELECT $C, $RID, 1, 'deferred', false, $ISP,
           $T0 + interval '70 seconds' + CASE WHEN g = 21 THEN interval '5 seconds' ELSE interval '0' END,
           '127.0.0.1', 421,
           '4.7.28', CASE WHEN g = 21 THEN \$e\$$EVIL\$e\$ ELSE '421 4.7.28 rate limited' END,
           'rcpt_deferred', NULL, NULL
    FROM generate_series(21, 30) g
    UNION ALL
    SELECT $C, $RID, 2, CASE WHEN g = 25 THEN 'expired' ELSE 'rejected' END, true, $ISP,
           $T0 + interval '16 minutes', '127.0.0.1', CASE WHEN g = 25 THEN 421 ELSE 550 END,
           CASE WHEN g = 25 THEN '4.7.28' ELSE '5.1.1' END,
           CASE WHEN g = 25 THEN 'rate limited' ELSE 'no such user' END,
           CASE WHEN g = 25 THEN 'rcpt_deferred' ELSE 'rcpt_rejected' END,
           CASE WHEN g = 25 THEN 'message-expired' ELSE 'bad-mailbox' END,
           CASE WHEN g = 25 THEN 'soft' ELSE 'hard' END
    FROM generate_series(21, 25) g" >/dev/null
# What came back: complaints and unsubscribes in the hours after.
psql_q "INSERT INTO ringmail.feedback_event (kind, source, campaign_id, recipient_id, isp, received_at)
    SELECT CASE WHEN g % 2 = 0 THEN 'complaint' ELSE 'unsubscribe' END,
           CASE WHEN g % 2 = 0 THEN 'arf' ELSE 'http' END, $C, $RID, $ISP,
           $T0 + g * interval '25 minutes'
    FROM generate_series(1, 6) g" >/dev/null
# A campaign whose rows were written before connections were recorded.
OLD=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
    VALUES ('old', 'news@sender.test', 'Hi', 'Body') RETURNING id")
psql_q "INSERT INTO ringmail.delivery (campaign_id, recipient_id, attempt, outcome, final, isp, at,
        peer, code, tls_version, tls_resumed) VALUES
    ($OLD, 1, 1, 'accepted', true, 'gmail', $T0, '127.0.0.1', 250, 'TLSv1.3', true),
    ($OLD, 2, 1, 'accepted', true, 'gmail', $T0, '127.0.0.1', 250, 'TLSv1.3', false)" >/dev/null

# ============================================================ 1. text, CSV, JSON
"$RM" report --db "$PG_URL" --campaign "$C" >"$T/r.txt" 2>"$T/r.err"
check_eq "text: exit 0" 0 "$?"
section() { awk -v t="$2" 'index($0, t) == 1 { on = 1; next } on && /^$/ { exit } on' "$1"; }
section "$T/r.txt" "per minute" >"$T/min.txt"
check_grep "text: per minute: the header" \
    '^  minute +attempts +accepted +deferred +rejected +failed +expired +accepted_per_s$' "$T/min.txt"
check_eq "text: per minute: every minute from 10:00 to 10:19 (20 rows)" 20 "$(($(wc -l <"$T/min.txt") - 1))"
check_eq "text: per minute: the stall's ten minutes (10:05-10:14) are there, all zeros" 10 \
    "$(grep -cE '^  2026-05-01T10:(0[5-9]|1[0-4])Z +0 +0 +0 +0 +0 +0 +0$' "$T/min.txt")"
check_grep "text: per minute: 10:01: 2 accepted, 10 deferred" \
    '^  2026-05-01T10:01Z +12 +2 +10 +0 +0 +0 ' "$T/min.txt"
check_grep "text: per minute: 10:16: 2 accepted, 4 rejected, 1 expired" \
    '^  2026-05-01T10:16Z +7 +2 +0 +4 +0 +1 ' "$T/min.txt"
check_grep "text: resumption over TLS handshakes" \
    '^TLS resumption: 5 of 10 TLS handshakes resumed \(50\.0%\)$' "$T/r.txt"
check_grep "text: recipients: expired is a state" '^  expired +1$' "$T/r.txt"
check_grep "text: deferrals by reason, with the last reply" \
    '^  gmail +rcpt_deferred 421 4\.7\.28 +[0-9]+ +421 4\.7\.28' "$T/r.txt"
check_grep "text: failures by reason" '^  [a-z]+ +rejected rcpt_rejected 550 5\.1\.1 +[0-9]+ +no such user$' "$T/r.txt"
check_grep "text: TLS posture: certificate verified, any policy" \
    '^  TLS, certificate verified +any +6$' "$T/r.txt"
# queue age from 10:00:10 (the first attempt): r1-r10 within 4 minutes,
# r11-r25 final 15 to 19 minutes after
check_grep "text: queue age: 8 final within 1-5 min" '^  1-5 min +8 +0$' "$T/r.txt"
check_grep "text: queue age: 15 final within 15-60 min" '^  15-60 min +15 +0$' "$T/r.txt"
check_grep "text: queue age: the 5 waiting, hours after" '^  >= 24 h +0 +5$' "$T/r.txt"
"$RM" report --db "$PG_URL" --campaign "$OLD" >"$T/old.txt" 2>&1
check_grep "text: rows without conn_first: resumption over attempts, said so" \
    '^TLS resumption: 1 of 2 attempts resumed \(50\.0%\) \(connections not recorded\)$' "$T/old.txt"

"$RM" report --db "$PG_URL" --campaign "$C" --format json --out "$T/r.json" 2>"$T/j.err"
check_eq "json --out: exit 0, nothing on stdout" 0 "$?"
check_eq "json: 20 minutes, the stall's ten with no attempt" "20 10" \
    "$(jeval "$T/r.json" '"%d %d" % (len(d["throughput"]), sum(1 for r in d["throughput"][5:15] if r["attempts"] == 0))')"
check_eq "json: per ISP and minute: 3 ISPs x 20 minutes, zero-filled" "60 30" \
    "$(jeval "$T/r.json" '"%d %d" % (len(d["isp_minutes"]), sum(1 for r in d["isp_minutes"] if "2026-05-01T10:05Z" <= r["minute"] <= "2026-05-01T10:14Z" and r["accepted"] + r["deferred"] + r["rejected"] == 0))')"
check_eq "json: resumption counted over handshakes" '{"resumed": 5, "full": 5, "rate": 0.5, "counted": "handshakes"}' \
    "$(jeval "$T/r.json" 'd["resumption"]')"
check_eq "json: the reply is kept as it was" "$EVIL" \
    "$(jeval "$T/r.json" '[r["last_reply"] for r in d["deferral_reasons"] if r["isp"] == "gmail"][0]')"
"$RM" report --db "$PG_URL" --campaign "$C" --format csv >"$T/r.csv" 2>&1
check_grep "csv: an empty minute" '^throughput,2026-05-01T10:09Z,attempts,0$' "$T/r.csv"
check_grep "csv: resumption counted over handshakes" '^resumption,tls,counted,handshakes$' "$T/r.csv"

# ============================================================ 2. the page
"$RM" report --db "$PG_URL" --campaign "$C" --format html --out "$OUT/report.html" 2>"$T/h.err"
check_eq "html: exit 0" 0 "$?"
check_eq "html: the file is 0600 (replies and addresses)" 600 "$(stat -c %a "$OUT/report.html")"
H=$OUT/report.html
check_eq "html: three script elements (uPlot, the data, the charts), none with src" "3 0" \
    "$(grep -o '<script[ >]' "$H" | wc -l) $(grep -c '<script[^>]*src=' "$H")"
check_no_grep "html: no stylesheet or script fetched (no src=, no <link)" '<link|src="http' "$H"
check_no_grep "html: the reply's </script><script> is not in the page as markup" \
    '</script><script>alert' "$H"
check_grep "html: the reply escaped in its table" \
    '&lt;/script&gt;&lt;script&gt;alert\(1\)&lt;/script&gt;' "$H"
check_grep "html: the campaign name escaped in the title" \
    '<title>ringmail report: campaign [0-9]+: Spring &lt;b&gt;&quot;sale&quot;&lt;/b&gt; &amp; &#39;more&#39; 春' "$H"
check_grep "html: uPlot's licence line is in the page" 'https://github.com/leeoniya/uPlot \(v1\.6\.32\)' "$H"

"$RM" report --db "$PG_URL" --campaign "$C" --format html --out "$T/no/such/dir/r.html" 2>"$T/nodir.err"
check_eq "html: --out in a missing directory: exit 1" 1 "$?"
check_eq "html: --out in a missing directory: says which file and why" \
    "ringmail report: cannot write --out $T/no/such/dir/r.html: No such file or directory" "$(cat "$T/nodir.err")"
"$RM" report --db "$PG_URL" --campaign "$C" --format pdf 2>"$T/fmt.err"
check_eq "--format pdf: exit 2, names the formats" "2 ringmail report: --format is text, csv, json or html, not 'pdf'" \
    "$? $(cat "$T/fmt.err")"

# ============================================================ 3. headless Chromium
JS='(() => {
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const charts = (window.reportCharts || []).map(c => {
    const cv = document.querySelector("#" + c.id + " canvas");
    let painted = 0, coloured = 0;
    if (cv) {
      const px = cv.getContext("2d").getImageData(0, 0, cv.width, cv.height).data;
      for (let i = 0; i < px.length; i += 4) {
        if (px[i + 3] > 0) painted++;
        if (px[i + 3] > 0 && Math.max(px[i], px[i + 1], px[i + 2]) - Math.min(px[i], px[i + 1], px[i + 2]) > 40) coloured++;
      }
    }
    return {id: c.id, drawn: c.drawn, series: c.series, points: c.points, canvas: !!cv, painted, coloured};
  });
  return {charts, boxes: document.querySelectorAll(".chart").length,
          h1: document.querySelector("h1").textContent,
          minutes: D.throughput.length,
          stall: D.throughput.slice(5, 15).filter(r => r.attempts === 0).length,
          reply: D.deferral_reasons.filter(r => r.isp === "gmail")[0].last_reply,
          table_text: document.getElementById("tables").textContent.includes("</script><script>alert(1)</script>"),
          scripts: document.scripts.length};
})()'
timeout 60 "$E2E_PY" "$E2E_DIR/cdp.py" --no-click --full-page --eval "$JS" "file://$H" "$OUT" \
    >"$T/cdp.json" 2>"$T/cdp.err"
check_eq "chromium: the page was driven" 0 "$?"
[ -s "$T/cdp.err" ] && sed 's/^/# /' "$T/cdp.err"
cj() { jeval "$T/cdp.json" "$1"; }
check_eq "chromium: no console error, exception, dialog or failed load" "[]" "$(cj 'd["errors"]')"
check_eq "chromium: the script ran to its end" "null" "$(cj 'd.get("eval_error")')"
check_eq "chromium: no request (the page works from file://, offline)" "[]" "$(cj 'd["requests"]')"
check_eq "chromium: the title is the campaign's name, as text" \
    "campaign $C: $NAME (draft)" "$(cj 'd["eval"]["h1"]')"
check_eq "chromium: the reply intact in the data and in the table; 3 scripts" "$EVIL true 3" \
    "$(cj 'd["eval"]["reply"]') $(cj 'd["eval"]["table_text"]') $(cj 'd["eval"]["scripts"]')"
check_eq "chromium: the charts' data has the 20 minutes, the stall's 10 empty" "20 10" \
    "$(cj 'd["eval"]["minutes"]') $(cj 'd["eval"]["stall"]')"
# all ISPs + 3 ISPs; deferral reasons for 3 ISPs; reply codes; TLS versions,
# resumption, posture; bounces; feedback; queue age
check_eq "chromium: 14 charts, one box each" "14 14" \
    "$(cj 'len(d["eval"]["charts"])') $(cj 'd["eval"]["boxes"]')"
check_eq "chromium: every chart drawn: a canvas painted, its series in colour" "[]" \
    "$(cj '[c for c in d["eval"]["charts"] if not (c["drawn"] and c["canvas"] and c["points"] > 0 and c["painted"] > 1000 and c["coloured"] > 50)]')"
check_eq "chromium: the per-minute charts have the 20 minutes" "[]" \
    "$(cj '[c["id"] for c in d["eval"]["charts"] if (c["id"].startswith("chart-isp") or c["id"] == "chart-all") and c["points"] != 20]')"
# A campaign with nothing sent yet: no chart but the queue's, tables of (none), no error.
E=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
    VALUES ('empty', 'news@sender.test', 'Hi', 'Body') RETURNING id")
psql_q "INSERT INTO ringmail.recipient (campaign_id, address) VALUES ($E, 'a@x.test')" >/dev/null
"$RM" report --db "$PG_URL" --campaign "$E" --format html --out "$T/empty.html" 2>"$T/e.err"
check_eq "html, nothing sent: exit 0" 0 "$?"
timeout 60 "$E2E_PY" "$E2E_DIR/cdp.py" --no-click --eval '(window.reportCharts || []).map(c => c.id)' \
    "file://$T/empty.html" "$T/empty-shot" >"$T/cdp-e.json" 2>"$T/cdp-e.err"
check_eq "chromium, nothing sent: driven, no error, the queue age chart alone" '0 [] ["chart-queue-age"]' \
    "$? $(jeval "$T/cdp-e.json" 'd["errors"]') $(jeval "$T/cdp-e.json" 'd["eval"]')"

SHOT=$(cj 'd["screenshots"][0]')
check "chromium: a screenshot kept" test -s "$SHOT"
echo "# screenshot: $SHOT"
echo "# page: $H"
e2e_finish
