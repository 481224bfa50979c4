#!/usr/bin/env bash
# ringmail campaign create/list, recipients import (CSV and SQL) and report
# against a private PostgreSQL: what is stored (bodies, states, reasons,
# merge variables), the error cases and their exit codes, re-imports that
# add nothing, the three report formats over synthetic delivery rows, and
# the time of a large CSV import (RINGMAIL_E2E_IMPORT_ROWS, default 200000).
set -u
. "$(dirname "$0")/lib.sh"
e2e_tmpdir
RM=${RINGMAIL:-build/ringmail}
T=$E2E_TMP
start_postgres "$T/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
check "db migrate" "$RM" db migrate --db "$PG_URL"

# ---- words of the command line: whole option names, named subcommands,
# a database without the schema ---------------------------------------------
"$RM" send --conf /dev/null --recipients /dev/null >"$T/abbr.out" 2>"$T/abbr.err"
check_eq "send --conf: refused (exit 2), nothing sent" "2 0" "$? $(wc -c <"$T/abbr.out")"
check_grep "send --conf: names the option it abbreviates" \
    "^ringmail: unknown option '--conf' \(options are spelled in full: did you mean --config\?\)$" "$T/abbr.err"
"$RM" campaign list --d "$PG_URL" 2>"$T/abbr2.err"
check_eq "campaign list --d: exit 2" 2 "$?"
check_grep "campaign list --d: did you mean --db" "did you mean --db\?" "$T/abbr2.err"
"$RM" campaign frobnicate 2>"$T/sub.err"
check_eq "campaign frobnicate: exit 2" 2 "$?"
check_grep "campaign frobnicate: names it and the subcommands" \
    "^ringmail campaign: unknown subcommand 'frobnicate' \(one of: create, list" "$T/sub.err"
"$RM" db 2>"$T/sub2.err"
check_grep "db without a subcommand: says one is required" \
    "^ringmail db: a subcommand is required \(one of: migrate\)$" "$T/sub2.err"
psql_q "CREATE DATABASE bare" >/dev/null
BARE_URL="${PG_URL/dbname=postgres/dbname=bare}"
"$RM" report --db "$BARE_URL" --campaign 1 >/dev/null 2>"$T/bare.err"
check_eq "report before db migrate: exit 1" 1 "$?"
check_grep "report before db migrate: says to migrate, not a missing relation" \
    'no ringmail schema .*run `ringmail db migrate --db URL` first' "$T/bare.err"
check_no_grep "report before db migrate: no PostgreSQL relation error" "does not exist" "$T/bare.err"

# ---- campaign create ------------------------------------------------------
printf 'Hello {{first_name|friend}},\nspring is here.\n' >"$T/body.txt"
printf '<p>Hello {{first_name|friend}}</p>\n' >"$T/body.html"
openssl genpkey -algorithm ed25519 -out "$T/dkim.pem" 2>/dev/null
C1=$("$RM" campaign create --db "$PG_URL" --name "Spring sale 春季" --from news@example.com \
    --subject "Hi {{first_name}}" --text "$T/body.txt" --html "$T/body.html" \
    --list-unsubscribe 'https://example.com/u?e={{email}}' --feedback-id 'spring:ringmail' \
    --dkim-domain example.com --dkim-selector s2024 --dkim-key "$T/dkim.pem" 2>"$T/create.err")
check_eq "create: exit 0" 0 "$?"
check_grep "create: prints the id alone" '^[0-9]+$' <(echo "$C1")
check_eq "create: bodies, headers and DKIM stored as given" \
    "$(md5sum <"$T/body.txt" | cut -d' ' -f1) $(md5sum <"$T/body.html" | cut -d' ' -f1) t https://example.com/u?e={{email}} spring:ringmail example.com s2024 draft" \
    "$(psql_q "SELECT md5(text_body), md5(html_body), dkim_key = \$\$$(cat "$T/dkim.pem")
\$\$, list_unsubscribe, feedback_id, dkim_domain, dkim_selector, status FROM ringmail.campaign WHERE id = $C1" | tr '\t' ' ')"
C2=$("$RM" campaign create --db "$PG_URL" --name "HTML only" --from "Ops@Example.org" \
    --subject "Ops" --html "$T/body.html")
check_eq "create: --html alone is enough" "t" "$(psql_q "SELECT text_body IS NULL AND html_body IS NOT NULL FROM ringmail.campaign WHERE id = $C2")"

create_fails() { # EXPECTED_RC ERE ARGS...: exits EXPECTED_RC, says ERE, stores nothing
    local rc=$1 re=$2 before after
    shift 2
    before=$(psql_q "SELECT count(*) FROM ringmail.campaign")
    "$RM" campaign create "$@" >"$T/cf.out" 2>"$T/cf.err"
    local got=$?
    after=$(psql_q "SELECT count(*) FROM ringmail.campaign")
    [ "$got" -eq "$rc" ] && grep -Eq -- "$re" "$T/cf.err" && [ "$before" = "$after" ] && [ ! -s "$T/cf.out" ] || {
        echo "rc=$got (want $rc), stderr: $(cat "$T/cf.err"), campaigns $before -> $after"
        return 1
    }
}
base=(--db "$PG_URL" --name x --subject s)
check "create: no body -> 2" create_fails 2 'at least one of --text' "${base[@]}" --from a@example.com
check "create: --from without '@' -> 2" create_fails 2 "--from: no '@'" "${base[@]}" --from nobody --text "$T/body.txt"
check "create: --from with a bad domain -> 2" create_fails 2 "--from: domain label starts or ends" "${base[@]}" --from a@-x.com --text "$T/body.txt"
check "create: --from with a space in the address -> 2" create_fails 2 'must be an ASCII address' "${base[@]}" --from 'a b@example.com' --text "$T/body.txt"
check "create: --from with a display name and --from-name -> 2" create_fails 2 'give the name once' "${base[@]}" --from 'News <a@example.com>' \
    --from-name News --text "$T/body.txt"
check "create: a template that does not compile -> 2" create_fails 2 "^ringmail campaign create: --subject: unterminated merge field '\{\{first_name' at character 4$" \
    --db "$PG_URL" --name x --subject 'Hi {{first_name' --from a@example.com --text "$T/body.txt"
check "create: missing --from -> 2" create_fails 2 '--from ADDR is required' "${base[@]}" --text "$T/body.txt"
check "create: unreadable --text -> 2" create_fails 2 'nope.txt: No such file' "${base[@]}" --from a@example.com --text "$T/nope.txt"
check "create: DKIM options incomplete -> 2" create_fails 2 'go together' "${base[@]}" --from a@example.com --text "$T/body.txt" --dkim-domain example.com
check "create: DKIM key not PEM -> 2" create_fails 2 'not a PEM private key' "${base[@]}" --from a@example.com --text "$T/body.txt" \
    --dkim-domain example.com --dkim-selector s --dkim-key "$T/body.txt"
check "create: DKIM key missing -> 2" create_fails 2 'missing.pem: No such file' "${base[@]}" --from a@example.com --text "$T/body.txt" \
    --dkim-domain example.com --dkim-selector s --dkim-key "$T/missing.pem"
check "create: plain http List-Unsubscribe -> 2" create_fails 2 'https:// or mailto:' "${base[@]}" --from a@example.com --text "$T/body.txt" \
    --list-unsubscribe 'http://example.com/u'
check "create: subject with a line break -> 2" create_fails 2 'line break' --db "$PG_URL" --name x --subject $'a\nBcc: x@y' \
    --from a@example.com --text "$T/body.txt"
"$RM" campaign create --db "host=127.0.0.1 port=1 dbname=x connect_timeout=2" --name x --from a@example.com \
    --subject s --text "$T/body.txt" >/dev/null 2>"$T/down.err"
check_eq "create: database down -> 1" 1 "$?"
check_grep "create: database down says why" 'cannot connect to PostgreSQL' "$T/down.err"

# ---- CSV import -------------------------------------------------------------
psql_q "INSERT INTO ringmail.suppression (address, reason) VALUES ('Blocked@Example.COM', 'bounced')" >/dev/null
# A byte order mark, a quoted header name with a comma, UTF-8 names, quoted
# fields with commas and doubled quotes, a duplicate (domain case and
# spaces differ), invalid addresses, a suppressed one.
{
    printf '\xef\xbb\xbfFirst Name,EMAIL,city,"note, ""quoted"""\n'
    printf '张伟,  zhang.wei@Example.CN ,北京,"said ""hi"", then left"\n'
    printf 'Ann,ann@example.com,"Paris, France",\n'
    printf 'Ann again,ann@EXAMPLE.com,Rome,duplicate\n'
    printf 'Bob,bob-at-example.com,,\n'
    printf 'Carl,carl@exa_mple.com,,\n'
    printf 'Dan,dan@example..com,,\n'
    printf 'Eve,"eve smith@example.com",,\n'
    printf 'Gus,gus@-bad.com,,\n'
    printf 'Lou,%s@example.com,,\n' "$(printf 'l%.0s' {1..65})"
    printf 'Blocked,blocked@example.com,,\n'
    printf '"李, 娜",li.na@example.com,上海,"多行""引号"""\n'
} >"$T/list.csv"
"$RM" recipients import --db "$PG_URL" --campaign "$C1" --csv "$T/list.csv" >"$T/imp1.out" 2>"$T/imp1.err"
check_eq "csv import: exit 0" 0 "$?"
check_eq "csv import: summary" "read 11 rows: imported 3 (queued), invalid 6, suppressed 1, duplicates 1, skipped 0" "$(cat "$T/imp1.out")"
# The subject's {{first_name}} has no default and the file says "First Name".
check_grep "csv import: a merge field the CSV lacks is named" \
    "warning: the templates use \{\{first_name\}\} \(subject\) but the CSV has no column first_name: it renders empty for every recipient$" "$T/imp1.err"
q() { psql_q "SELECT $1 FROM ringmail.recipient WHERE campaign_id = $C1 AND address = \$\$$2\$\$"; }
check_eq "csv: address trimmed, domain lower-cased, queued" "queued" "$(q state 'zhang.wei@example.cn')"
check_eq "csv: UTF-8 merge variables, quoted fields" '{"city": "北京", "First Name": "张伟", "note, \"quoted\"": "said \"hi\", then left"}' \
    "$(q vars 'zhang.wei@example.cn')"
check_eq "csv: quoted comma in a value" 'Paris, France' "$(q "vars->>'city'" 'ann@example.com')"
check_eq "csv: duplicate in the file, the first row wins" 'Ann 1' \
    "$(psql_q "SELECT vars->>'First Name', count(*) FROM ringmail.recipient WHERE campaign_id = $C1 AND lower(address) = 'ann@example.com' GROUP BY 1" | tr '\t' ' ')"
check_eq "csv: quoted comma in the first column" '李, 娜 多行"引号"' "$(q "(vars->>'First Name') || ' ' || (vars->>'note, \"quoted\"')" 'li.na@example.com')"
check_eq "csv: no '@'" "invalid|no '@' in the address" "$(q "state || '|' || reason" 'bob-at-example.com')"
check_eq "csv: forbidden character in the domain" "invalid|forbidden character in the domain" "$(q "state || '|' || reason" 'carl@exa_mple.com')"
check_eq "csv: empty domain label" "invalid|empty label in the domain" "$(q "state || '|' || reason" 'dan@example..com')"
check_eq "csv: space in the local part" "invalid|forbidden character in the local part" "$(q "state || '|' || reason" 'eve smith@example.com')"
check_eq "csv: label starting with '-'" "invalid|domain label starts or ends with '-'" "$(q "state || '|' || reason" 'gus@-bad.com')"
check_eq "csv: local part over 64 octets" "invalid|local part longer than 64 octets" \
    "$(psql_q "SELECT state || '|' || reason FROM ringmail.recipient WHERE campaign_id = $C1 AND address LIKE 'lll%'")"
check_eq "csv: suppressed (case-insensitive match)" "suppressed|suppressed" "$(q "state || '|' || reason" 'blocked@example.com')"
check_eq "csv: rows stored" 10 "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C1")"

"$RM" recipients import --db "$PG_URL" --campaign "$C1" --csv "$T/list.csv" >"$T/imp2.out" 2>"$T/imp2.err"
check_eq "csv import again: everything is a duplicate" "read 11 rows: imported 0 (queued), invalid 0, suppressed 0, duplicates 11, skipped 0" "$(cat "$T/imp2.out")"
check_eq "csv import again: no new rows" 10 "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C1")"

# Excel's kind of file: byte order mark and CRLF line endings throughout.
printf '\xef\xbb\xbfemail,name\r\ncrlf1@example.com,"One, Two"\r\ncrlf2@example.com,Three\r\n' >"$T/crlf.csv"
check_grep "csv: CRLF file" '^read 2 rows: imported 2 \(queued\),' <("$RM" recipients import --db "$PG_URL" --campaign "$C2" --csv "$T/crlf.csv" 2>&1)
check_eq "csv: CRLF file, no CR left in the last field" '{"name": "Three"}' "$(psql_q "SELECT vars FROM ringmail.recipient WHERE address = 'crlf2@example.com'")"

# email is the first column when no column is named so; no other columns -> {}.
printf 'address\nsolo@example.com\n' >"$T/one.csv"
check_grep "csv: without an 'email' column the first one is the address" '^read 1 row: imported 1 \(queued\),' \
    <("$RM" recipients import --db "$PG_URL" --campaign "$C2" --csv "$T/one.csv" 2>&1)
check_eq "csv: no other columns, empty variables" '{}' "$(psql_q "SELECT vars FROM ringmail.recipient WHERE address = 'solo@example.com'")"

# Errors: all or nothing.
printf 'email,name\nok1@example.com,A\nok2@example.com,B,extra\n' >"$T/bad.csv"
"$RM" recipients import --db "$PG_URL" --campaign "$C2" --csv "$T/bad.csv" >/dev/null 2>"$T/bad.err"
check_eq "csv: a malformed row fails the import (exit 2)" 2 "$?"
check_grep "csv: the error names the line and the header" "bad\.csv: line 3: 3 fields, the header has 2 \(email, name\)$" "$T/bad.err"
check_eq "csv: a failed import adds nothing" 0 "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE address LIKE 'ok_@example.com'")"
"$RM" recipients import --db "$PG_URL" --campaign 999999 --csv "$T/list.csv" >/dev/null 2>"$T/nocamp.err"
check_eq "import: unknown campaign -> 1" 1 "$?"
check_grep "import: unknown campaign says so" 'campaign 999999 does not exist' "$T/nocamp.err"
"$RM" recipients import --db "$PG_URL" --campaign "$C2" --csv "$T/nope.csv" >/dev/null 2>"$T/nofile.err"
check_eq "import: missing file -> 2" 2 "$?"
"$RM" recipients import --db "$PG_URL" --campaign "$C2" >/dev/null 2>&1
check_eq "import: neither --csv nor --sql -> 2" 2 "$?"
: >"$T/empty.csv"
"$RM" recipients import --db "$PG_URL" --campaign "$C2" --csv "$T/empty.csv" >/dev/null 2>"$T/empty.err"
check_eq "import: empty file -> 2" 2 "$?"

# ---- SQL import ---------------------------------------------------------------
psql_q "CREATE TABLE public.customers (mail text, first text, tier int);
        INSERT INTO public.customers VALUES ('zhang.wei@EXAMPLE.cn', '伟', 1), ('new.one@Example.net', 'New', 2),
          ('broken', 'B', 3), ('BLOCKED@example.com', 'X', 4), ('new.one@example.NET', 'Dup', 5)" >/dev/null
out=$("$RM" recipients import --db "$PG_URL" --campaign "$C1" \
    --sql "SELECT mail, jsonb_build_object('first_name', first, 'tier', tier) FROM customers ORDER BY tier;" 2>&1)
check_eq "sql import: summary (existing address, in-query duplicate)" "read 5 rows: imported 1 (queued), invalid 1, suppressed 1, duplicates 2, skipped 0" "$out"
check_eq "sql import: variables as jsonb" '{"tier": 2, "first_name": "New"}' \
    "$(psql_q "SELECT vars FROM ringmail.recipient WHERE campaign_id = $C1 AND address = 'new.one@example.net'")"
check_eq "sql import: the CSV's row was kept" "张伟" \
    "$(psql_q "SELECT vars->>'First Name' FROM ringmail.recipient WHERE campaign_id = $C1 AND address = 'zhang.wei@example.cn'")"
out=$("$RM" recipients import --db "$PG_URL" --campaign "$C2" --sql "SELECT mail FROM customers" 2>&1)
check_eq "sql import: address column only" "read 5 rows: imported 2 (queued), invalid 1, suppressed 1, duplicates 1, skipped 0" "$out"
out=$("$RM" recipients import --db "$PG_URL" --campaign "$C2" --sql "SELECT mail, '{\"k\": 1}'::text FROM customers" 2>&1)
check_eq "sql import again: all duplicates" "read 5 rows: imported 0 (queued), invalid 0, suppressed 0, duplicates 5, skipped 0" "$out"
"$RM" recipients import --db "$PG_URL" --campaign "$C2" --sql "SELECT mail, first, tier FROM customers" >/dev/null 2>"$T/sql3.err"
check_eq "sql import: three columns -> 2" 2 "$?"
"$RM" recipients import --db "$PG_URL" --campaign "$C2" --sql "SELEC mail FROM customers" >/dev/null 2>"$T/sqlsyn.err"
check_eq "sql import: syntax error -> 1" 1 "$?"
check_grep "sql import: syntax error reported" 'syntax error' "$T/sqlsyn.err"

# ---- campaign list ----------------------------------------------------------------
"$RM" campaign list --db "$PG_URL" >"$T/list.out" 2>&1
check_eq "list: exit 0" 0 "$?"
# QUEUED CLAIMED SENT DEFERRED BOUNCED FAILED EXPIRED INVALID SUPPRESSED AMBIGUOUS
check_grep "list: counts by state" "^ *$C1  draft  +13  +4  +0  +0  +0  +0  +0  +0  +7  +2  +0  Spring sale 春季$" "$T/list.out"

# ---- report -----------------------------------------------------------------------
psql_q "INSERT INTO ringmail.delivery (campaign_id, recipient_id, attempt, outcome, final, at, isp, mx, peer,
          code, enhanced, reply, tls_version, tls_cipher, tls_resumed) VALUES
  ($C1, 1, 1, 'accepted', true, '2024-05-01 10:00:05+00', 'gmail', 'mx.g', '192.0.2.1', 250, '2.0.0', 'OK', 'TLSv1.3', 'TLS_AES_128_GCM_SHA256', false),
  ($C1, 2, 1, 'accepted', true, '2024-05-01 10:00:40+00', 'gmail', 'mx.g', '192.0.2.1', 250, '2.0.0', 'OK', 'TLSv1.3', 'TLS_AES_128_GCM_SHA256', true),
  ($C1, 3, 1, 'deferred', false, '2024-05-01 10:01:10+00', 'yahoo', 'mx.y', '192.0.2.2', 421, '4.7.0', 'later', 'TLSv1.2', 'ECDHE-ECDSA-AES128-GCM-SHA256', false),
  ($C1, 3, 2, 'accepted', true, '2024-05-01 10:03:10+00', 'yahoo', 'mx.y', '192.0.2.2', 250, '2.0.0', 'OK', 'TLSv1.2', 'ECDHE-ECDSA-AES128-GCM-SHA256', true),
  ($C1, 4, 1, 'rejected', true, '2024-05-01 10:03:20+00', 'other', 'mx.o', '192.0.2.3', 550, '5.1.1', 'no such user', NULL, NULL, NULL),
  ($C1, 5, 1, 'failed', true, '2024-05-01 10:03:30+00', NULL, 'mx.o', NULL, NULL, NULL, 'connection refused', NULL, NULL, NULL),
  ($C2, 9, 1, 'accepted', true, now(), 'gmail', 'mx.g', '192.0.2.1', 250, '2.0.0', 'OK', 'TLSv1.3', 'TLS_AES_256_GCM_SHA384', false)" >/dev/null
"$RM" report --db "$PG_URL" --campaign "$C1" >"$T/r.txt" 2>&1
check_eq "report text: exit 0" 0 "$?"
check_grep "report text: recipients" '^  invalid +7$' "$T/r.txt"
check_grep "report text: per ISP" '^  gmail +2 +2 +0 +0 +0 +0$' "$T/r.txt"
check_grep "report text: reply code" '^ +550 5\.1\.1 +1$' "$T/r.txt"
check_grep "report text: TLS version" '^  TLSv1\.3 +2$' "$T/r.txt"
# rows without conn_first (as written before schema 5): a share of attempts, said so
check_grep "report text: resumption" 'TLS resumption: 2 of 4 attempts resumed \(50\.0%\) \(connections not recorded\)' "$T/r.txt"
check_grep "report text: throughput" '^  2024-05-01T10:00Z +2 ' "$T/r.txt"
"$RM" report --db "$PG_URL" --campaign "$C1" --format json >"$T/r.json" 2>&1
check_eq "report json: exit 0" 0 "$?"
check_eq "report json: recipients" "[4, 7, 2, 13]" "$(jeval "$T/r.json" '[d["recipients"]["queued"], d["recipients"]["invalid"], d["recipients"]["suppressed"], d["recipients"]["total"]]')"
check_eq "report json: ISPs by attempts" '[["gmail", 2, 2], ["yahoo", 2, 1], ["other", 1, 0], ["unknown", 1, 0]]' \
    "$(jeval "$T/r.json" '[[i["isp"], i["attempts"], i["accepted"]] for i in d["isps"]]')"
check_eq "report json: reply codes" '[[250, "2.0.0", 3], [421, "4.7.0", 1], [550, "5.1.1", 1], [null, null, 1]]' \
    "$(jeval "$T/r.json" '[[c["code"], c["enhanced"], c["count"]] for c in d["reply_codes"]]')"
check_eq "report json: TLS over attempts that reached a server" '{"TLSv1.2": 2, "TLSv1.3": 2, "none": 1}' \
    "$(jeval "$T/r.json" '{v["version"]: v["count"] for v in d["tls_versions"]}')"
check_eq "report json: ciphers" '2' "$(jeval "$T/r.json" '[c["count"] for c in d["tls_ciphers"] if c["cipher"] == "TLS_AES_128_GCM_SHA256"][0]')"
check_eq "report json: resumption rate" '0.5' "$(jget "$T/r.json" resumption.rate)"
check_eq "report json: accepted per minute, every minute" '[["2024-05-01T10:00Z", 2], ["2024-05-01T10:01Z", 0], ["2024-05-01T10:02Z", 0], ["2024-05-01T10:03Z", 1]]' \
    "$(jeval "$T/r.json" '[[t["minute"], t["accepted"]] for t in d["throughput"]]')"
"$RM" report --db "$PG_URL" --campaign "$C1" --format csv >"$T/r.csv" 2>&1
check_eq "report csv: exit 0" 0 "$?"
check_eq "report csv: header" "section,key,metric,value" "$(head -1 "$T/r.csv")"
check_grep "report csv: campaign name (UTF-8)" '^campaign,[0-9]+,name,Spring sale 春季$' "$T/r.csv"
check_grep "report csv: recipients" '^recipients,suppressed,count,2$' "$T/r.csv"
check_grep "report csv: ISP" '^isps,yahoo,deferred,1$' "$T/r.csv"
check_grep "report csv: reply code" '^reply_codes,421 4\.7\.0,count,1$' "$T/r.csv"
check_grep "report csv: resumption" '^resumption,tls,rate,0\.5$' "$T/r.csv"
check_grep "report csv: throughput" '^throughput,2024-05-01T10:03Z,accepted,1$' "$T/r.csv"
check_eq "report csv: every row has four fields" 0 \
    "$("$E2E_PY" -c 'import csv,sys; print(sum(1 for r in csv.reader(open(sys.argv[1], encoding="utf-8")) if len(r) != 4))' "$T/r.csv")"
"$RM" report --db "$PG_URL" --campaign 424242 >/dev/null 2>"$T/rn.err"
check_eq "report: unknown campaign -> 1" 1 "$?"
"$RM" report --db "$PG_URL" --campaign "$C1" --format xml >/dev/null 2>&1
check_eq "report: unknown format -> 2" 2 "$?"

# ---- a large CSV ----------------------------------------------------------------------
N=${RINGMAIL_E2E_IMPORT_ROWS:-200000}
# Every 1000th row repeats an earlier address and every 1000th (offset) has none.
awk -v n="$N" 'BEGIN {
    print "email,first_name,last_name,city"
    for (i = 1; i <= n; i++) {
        if (i % 1000 == 0) a = "user" (i - 1) "@example" ((i - 1) % 997) ".com"
        else if (i % 1000 == 500) a = "no-at-sign-" i
        else a = "user" i "@example" (i % 997) ".com"
        printf "%s,First%d,Last%d,\"City %d, Region\"\n", a, i, i, i % 50
    }
}' >"$T/big.csv"
CB=$("$RM" campaign create --db "$PG_URL" --name big --from a@example.com --subject s --text "$T/body.txt")
t0=$(date +%s%N)
out=$("$RM" recipients import --db "$PG_URL" --campaign "$CB" --csv "$T/big.csv" 2>&1)
ms=$((($(date +%s%N) - t0) / 1000000))
dup=$((N / 1000)) inv=$(((N + 500) / 1000))
check_eq "big import: counts" "read $N rows: imported $((N - dup - inv)) (queued), invalid $inv, suppressed 0, duplicates $dup, skipped 0" "$out"
echo "# CSV import of $N rows (4 columns): $ms ms ($((N * 1000 / (ms > 0 ? ms : 1))) rows/s)"
check_le "big import: under 60 s" 60000 "$ms"
e2e_finish
