#!/usr/bin/env bash
# ringmail recipients import that explains, and recipients list, against a
# private PostgreSQL: each bad-row message by its text (a ragged row, an
# unterminated quote, text after a closing quote, invalid UTF-8 with and
# without --encoding latin1, a byte windows-1252 does not have, a
# ;-separated file with and without --delimiter, a UTF-16 file), nothing
# stored when a bad row stops the import, --skip-bad-rows (the rejects
# file's contents, in the input's encoding, and a summary that adds up),
# the merge fields the data lacks (CSV and --sql), the progress line on a
# terminal and not elsewhere, `recipients list` with --state and --limit
# and their errors.
set -u
. "$(dirname "$0")/lib.sh"
e2e_tmpdir
RM=${RINGMAIL:-build/ringmail}
T=$E2E_TMP
e2e_require script || { e2e_finish; exit 1; }
start_postgres "$T/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
check "db migrate" "$RM" db migrate --db "$PG_URL"

printf 'Hello {{first_name}} from {{city|your town}}\n' >"$T/body.txt"
C=$("$RM" campaign create --db "$PG_URL" --name imports --from news@example.com \
    --subject "Hi {{first_name}}, {{tier}}" --text "$T/body.txt")
check_grep "campaign created" '^[0-9]+$' <(echo "$C")
count() { psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C${1:+ AND $1}"; }
imp() { # imp NAME FILE [options...]: import into $C, stdout in $T/NAME.out, stderr in $T/NAME.err, status in RC
    local name=$1 file=$2
    shift 2
    "$RM" recipients import --db "$PG_URL" --campaign "$C" --csv "$file" "$@" >"$T/$name.out" 2>"$T/$name.err"
    RC=$?
}

# ---- a bad row stops the import: named by line and column, nothing stored ----
printf 'email,first_name,last_name,city\nok1@example.com,A,B,Paris\nok2@example.com,A,B,Rome\nragged@example.com,A,B\nok3@example.com,A,B,Oslo\n' >"$T/ragged.csv"
imp ragged "$T/ragged.csv"
check_eq "ragged row: exit 2" 2 "$RC"
check_grep "ragged row: line, field count and the header" \
    "^ringmail recipients import: .*ragged\.csv: line 4: 3 fields, the header has 4 \(email, first_name, last_name, city\)$" "$T/ragged.err"
check_grep "ragged row: says nothing was imported and how to go on" \
    "nothing imported \(--skip-bad-rows FILE imports the other rows" "$T/ragged.err"
check_eq "ragged row: nothing stored (the rows before it neither)" 0 "$(count)"
check_eq "ragged row: no summary on stdout" 0 "$(wc -c <"$T/ragged.out")"

printf 'email,first_name,city\nok1@example.com,Ann,"Paris\nok2@example.com,Bob,Rome\n' >"$T/unterm.csv"
imp unterm "$T/unterm.csv"
check_eq "unterminated quote: exit 2" 2 "$RC"
check_grep "unterminated quote: line and column" "unterm\.csv: line 2: column 'city': unterminated quoted field$" "$T/unterm.err"
check_eq "unterminated quote: nothing stored" 0 "$(count)"

printf 'email,first_name\nok1@example.com,"Ann "the" Smith"\n' >"$T/afterq.csv"
imp afterq "$T/afterq.csv"
check_grep "text after a closing quote: says how quotes are written" \
    "afterq\.csv: line 2: column 'first_name': text after the closing quote \(a quote inside a quoted field is written twice: \"\"\)$" "$T/afterq.err"

# A file from a latin1 system: "José" with é as the single byte 0xE9.
printf 'email,first_name\nok1@example.com,Ann\njose@example.com,Jos\xe9\n' >"$T/latin1.csv"
imp utf8 "$T/latin1.csv"
check_eq "invalid UTF-8: exit 2" 2 "$RC"
check_grep "invalid UTF-8: the byte, its offset and the way out" \
    "latin1\.csv: line 3: column 'first_name': invalid UTF-8 \(byte 0xE9 at offset 3; try --encoding latin1\)$" "$T/utf8.err"
check_eq "invalid UTF-8: nothing stored" 0 "$(count)"
imp latin1 "$T/latin1.csv" --encoding latin1
check_eq "--encoding latin1: exit 0" 0 "$RC"
check_eq "--encoding latin1: stored as UTF-8" "José" \
    "$(psql_q "SELECT vars->>'first_name' FROM ringmail.recipient WHERE campaign_id = $C AND address = 'jose@example.com'")"
psql_q "DELETE FROM ringmail.recipient WHERE campaign_id = $C" >/dev/null

imp badenc "$T/latin1.csv" --encoding klingon
check_eq "unknown --encoding: exit 2" 2 "$RC"
check_grep "unknown --encoding: says so" "--encoding klingon: not an encoding iconv knows" "$T/badenc.err"

# Excel's "Unicode text": UTF-16LE with a byte order mark, tab-separated.
printf 'email\tfirst_name\r\nutf16@example.com\tZoë\r\n' | iconv -f utf-8 -t utf-16 >"$T/utf16.txt"
imp utf16bad "$T/utf16.txt"
check_grep "UTF-16 read as UTF-8: names the encoding to use" "starts with a UTF-16 byte order mark: use --encoding utf-16$" "$T/utf16bad.err"
imp utf16 "$T/utf16.txt" --encoding utf-16 --delimiter tab
check_eq "--encoding utf-16 --delimiter tab: exit 0" 0 "$RC"
check_eq "--encoding utf-16: the value" '{"first_name": "Zoë"}' \
    "$(psql_q "SELECT vars FROM ringmail.recipient WHERE campaign_id = $C AND address = 'utf16@example.com'")"

# ---- delimiters ----
printf 'email;first_name;last_name;city\nsemi1@example.com;Ann;B;Paris\nsemi2@example.com;Bob;C;Rome\n' >"$T/semi.csv"
imp semi "$T/semi.csv"
check_eq "semicolon file without --delimiter: refused (exit 2)" 2 "$RC"
check_grep "semicolon file: names the header and the option" \
    "semi\.csv: the header has one column 'email;first_name;last_name;city'; the file looks ;-separated: use --delimiter ';'$" "$T/semi.err"
check_eq "semicolon file: no bogus addresses stored" 0 "$(count "address LIKE '%;%'")"
imp semi2 "$T/semi.csv" --delimiter ';'
check_eq "--delimiter ';': exit 0" 0 "$RC"
check_eq "--delimiter ';': fields split" '{"city": "Rome", "last_name": "C", "first_name": "Bob"}' \
    "$(psql_q "SELECT vars FROM ringmail.recipient WHERE campaign_id = $C AND address = 'semi2@example.com'")"
printf 'email\tfirst_name\ntab1@example.com\tTab\n' >"$T/tab.csv"
imp tab "$T/tab.csv"
check_grep "tab file without --delimiter: says tab" "the file looks tab-separated: use --delimiter tab$" "$T/tab.err"
imp tab2 "$T/tab.csv" --delimiter tab
check_eq "--delimiter tab: exit 0" "0 Tab" "$RC $(psql_q "SELECT vars->>'first_name' FROM ringmail.recipient WHERE address = 'tab1@example.com'")"
imp delim "$T/tab.csv" --delimiter x
check_eq "--delimiter x: exit 2" 2 "$RC"

# ---- --skip-bad-rows: the rest goes in, the bad rows go to FILE ----
psql_q "DELETE FROM ringmail.recipient WHERE campaign_id = $C;
        INSERT INTO ringmail.suppression (address, reason) VALUES ('blocked@example.com', 'bounced')" >/dev/null
{
    printf 'email,first_name,tier,city\n'
    # 11 rows = 4 queued + 1 invalid + 1 suppressed + 1 duplicate + 4 bad
    printf 'a1@example.com,Ann,1,Paris\n'                   # 2 queued
    printf 'a2@example.com,Bob,2\n'                         # 3 ragged
    printf 'not-an-address,Cy,1,Rome\n'                     # 4 invalid
    printf 'blocked@example.com,Dee,1,Oslo\n'               # 5 suppressed
    printf 'A1@example.com,Ann again,1,Paris\n'             # 6 queued (the local part differs in case)
    printf 'a1@example.com,Dup,1,Paris\n'                   # 7 duplicate of line 2
    printf 'a3@example.com,Jos\xe9,1,Lyon\n'                # 8 invalid UTF-8
    printf 'a4@example.com,"multi\nline",1,"Nice"\n'        # 9-10 queued (a quoted line break)
    printf 'a5@example.com,"Eve "E" Doe",1,Bern\n'          # 11 text after a quote
    printf '\n'                                             # 12 blank: not a row
    printf 'a6@example.com,Fay,1,"Graz\n'                   # 13 unterminated: the rest is read again
    printf 'a7@example.com,Gus,1,Linz\n'                    # 14 queued
} >"$T/mixed.csv"
imp mixed "$T/mixed.csv" --skip-bad-rows "$T/rejects.csv"
check_eq "skip-bad-rows: exit 3 (rows were skipped)" 3 "$RC"
check_eq "skip-bad-rows: the summary adds up" \
    "read 11 rows: imported 4 (queued), invalid 1, suppressed 1, duplicates 1, skipped 4 (bad rows, written to $T/rejects.csv)" \
    "$(cat "$T/mixed.out")"
check_grep "skip-bad-rows: stderr names the first bad row" \
    "4 bad rows skipped, written to .*rejects\.csv; the first: line 3: 3 fields, the header has 4" "$T/mixed.err"
check_eq "skip-bad-rows: stored by state" "invalid 1|queued 4|suppressed 1" \
    "$(psql_q "SELECT string_agg(state || ' ' || n, '|' ORDER BY state) FROM (SELECT state, count(*) AS n FROM ringmail.recipient WHERE campaign_id = $C GROUP BY 1) s")"
check_eq "skip-bad-rows: the rejects file, line by line" \
    "$(printf '%s\n' \
        'line,reason,email,first_name,tier,city' \
        '3,"3 fields, the header has 4 (email, first_name, tier, city)",a2@example.com,Bob,2' \
        "8,\"column 'first_name': invalid UTF-8 (byte 0xE9 at offset 3; try --encoding latin1)\",a3@example.com,Jos$(printf '\xe9'),1,Lyon" \
        "11,\"column 'first_name': text after the closing quote (a quote inside a quoted field is written twice: \"\"\"\")\",\"a5@example.com,\"\"Eve \"\"E\"\" Doe\"\",1,Bern\"" \
        "13,\"column 'city': unterminated quoted field\",\"a6@example.com,Fay,1,\"\"Graz\"")" \
    "$(cat "$T/rejects.csv")"
check_eq "skip-bad-rows: the rejects file is CSV with the reason beside each row" \
    "[['line', 'reason', 'email'], ['3', '3 fields, the header has 4 (email, first_name, tier, city)', 'a2@example.com'], ['13', \"column 'city': unterminated quoted field\", 'a6@example.com,Fay,1,\"Graz']]" \
    "$("$E2E_PY" -c 'import csv,sys; r=list(csv.reader(open(sys.argv[1], encoding="latin1", newline=""))); print([x[:3] for x in (r[0], r[1], r[-1])])' "$T/rejects.csv")"
check_eq "skip-bad-rows: a quoted line break kept" 'multi
line' "$(psql_q "SELECT vars->>'first_name' FROM ringmail.recipient WHERE campaign_id = $C AND address = 'a4@example.com'")"

# Nothing skipped: exit 0, the rejects file holds its header only.
printf 'email,first_name,tier\ngood@example.com,Gil,1\n' >"$T/good.csv"
imp good "$T/good.csv" --skip-bad-rows "$T/none.csv"
check_eq "skip-bad-rows, nothing bad: exit 0, skipped 0" \
    "0 read 1 row: imported 1 (queued), invalid 0, suppressed 0, duplicates 0, skipped 0" "$RC $(cat "$T/good.out")"
check_eq "skip-bad-rows, nothing bad: the rejects file has its header only" "line,reason,email,first_name,tier" "$(cat "$T/none.csv")"

# In a converted encoding the rejects file keeps the input's: the byte
# windows-1252 lacks (0x81) and the é (0xE9) come back as they were.
printf 'email,first_name,tier\nw1@example.com,Ren\xe9,1\nw2@example.com,X\x81Y,1\n' >"$T/cp1252.csv"
imp cp1252 "$T/cp1252.csv" --encoding windows-1252 --skip-bad-rows "$T/cp1252-rejects.csv"
check_eq "windows-1252: exit 3, one skipped" 3 "$RC"
check_eq "windows-1252: René stored as UTF-8" "René" \
    "$(psql_q "SELECT vars->>'first_name' FROM ringmail.recipient WHERE address = 'w1@example.com'")"
check_eq "windows-1252: the byte it lacks, named" \
    "3,\"column 'first_name': byte 0x81 at offset 1 is not windows-1252\",w2@example.com,X$(printf '\x81')Y,1" \
    "$(sed -n 2p "$T/cp1252-rejects.csv")"

# ---- stdin, and the merge fields the data does not give ----
printf 'email,first_name\nstdin@example.com,Sid\n' | "$RM" recipients import --db "$PG_URL" --campaign "$C" --csv - \
    >"$T/stdin.out" 2>"$T/stdin.err"
check_eq "--csv -: reads stdin" "0 read 1 row: imported 1 (queued), invalid 0, suppressed 0, duplicates 0, skipped 0" "$? $(cat "$T/stdin.out")"
check_grep "missing merge field: named with its templates, against the header" \
    "^ringmail recipients import: warning: the templates use \{\{tier\}\} \(subject\) but the CSV has no column tier: it renders empty for every recipient$" "$T/stdin.err"
check_no_grep "missing merge field: a column the CSV has is not named" "\{\{first_name\}\}" "$T/stdin.err"
check_no_grep "missing merge field: one with a default is not named" "\{\{city" "$T/stdin.err"
check_no_grep "no progress line when stderr is a pipe or a file" "rows/s|"$'\r' "$T/stdin.err"
printf 'address,first_name,tier\naddr@example.com,Al,1\n' >"$T/addrcol.csv"
C2=$("$RM" campaign create --db "$PG_URL" --name addr --from news@example.com --subject "To {{address}}" --text "$T/body.txt")
"$RM" recipients import --db "$PG_URL" --campaign "$C2" --csv "$T/addrcol.csv" >/dev/null 2>"$T/addrcol.err"
check_grep "missing merge field: the address column is not a merge variable" \
    "the templates use \{\{address\}\} \(subject\) but the CSV's column address holds the addresses, not a merge variable: .*\{\{email\}\}" "$T/addrcol.err"
C3=$("$RM" campaign create --db "$PG_URL" --name sql --from news@example.com --subject "Hi {{first_name}}, {{tier}}" --text "$T/body.txt")
"$RM" recipients import --db "$PG_URL" --campaign "$C3" --sql "SELECT 'sql1@example.com'" >/dev/null 2>"$T/sql1.err"
check_grep "missing merge field, --sql without variables" \
    "the templates use \{\{first_name\}\} \(subject, text\) but the query returns no merge variables" "$T/sql1.err"
"$RM" recipients import --db "$PG_URL" --campaign "$C3" \
    --sql "SELECT 'sql2@example.com', jsonb_build_object('first_name', 'Q')" >/dev/null 2>"$T/sql2.err"
check_grep "missing merge field, --sql: one no recipient has" \
    "the templates use \{\{tier\}\} \(subject\) but no recipient of the campaign has it among its merge variables" "$T/sql2.err"
check_no_grep "missing merge field, --sql: one the rows have is not named" "\{\{first_name\}\}" "$T/sql2.err"

# ---- the progress line: on a terminal only ----
N=${RINGMAIL_E2E_PROGRESS_ROWS:-100000}
awk -v n="$N" 'BEGIN { print "email,first_name,tier"; for (i = 1; i <= n; i++) printf "p%d@example.com,P%d,%d\n", i, i, i % 3 }' >"$T/progress.csv"
CP=$("$RM" campaign create --db "$PG_URL" --name progress --from news@example.com --subject s --text "$T/body.txt")
script -q -e -c "'$RM' recipients import --db '$PG_URL' --campaign $CP --csv '$T/progress.csv'" /dev/null >"$T/tty.out" 2>&1
check_eq "progress: the import under a terminal, exit 0" 0 "$?"
check_grep "progress: a line with rows/s and % of the file" "read [0-9,]+ rows \([0-9]+% of [0-9.]+ MB\).*rows/s" "$T/tty.out"
check_grep "progress: rewritten in place" $'\r'"read [0-9,]+ rows" "$T/tty.out"
check_grep "progress: the last line and a newline before the summary" \
    "read 100,000 rows \(100% of [0-9.]+ MB\) in [0-9.]+ s, [0-9,]+ rows/s.*"$'\r?$' "$T/tty.out"
check_grep "progress: the summary on its own line" "^read $N rows: imported $N \(queued\)" "$T/tty.out"
"$RM" campaign create --db "$PG_URL" --name progress2 --from news@example.com --subject s --text "$T/body.txt" >"$T/cp2"
"$RM" recipients import --db "$PG_URL" --campaign "$(cat "$T/cp2")" --csv "$T/progress.csv" >"$T/file.out" 2>"$T/file.err"
check_eq "progress: stderr to a file, exit 0" 0 "$?"
check_eq "progress: nothing on stderr when it is a file" 0 "$(wc -c <"$T/file.err")"

# ---- recipients list ----
"$RM" recipients list --db "$PG_URL" --campaign "$C" >"$T/list.out" 2>"$T/list.err"
check_eq "list: exit 0" 0 "$?"
check_grep "list: a header" "^ADDRESS +STATE +ATTEMPTS +UPDATED +REASON$" "$T/list.out"
check_grep "list: a queued recipient" "^a1@example\.com +queued +0 +[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z *$" "$T/list.out"
check_grep "list: an invalid one with its reason" "^not-an-address +invalid +0 +[0-9T:Z-]+ +no '@' in the address$" "$T/list.out"
check_eq "list: one line per recipient, and the header" "$(($(count) + 1))" "$(wc -l <"$T/list.out")"
"$RM" recipients list --db "$PG_URL" --campaign "$C" --state suppressed >"$T/list2.out"
check_eq "list --state suppressed" "blocked@example.com suppressed 0" "$(tail -n +2 "$T/list2.out" | awk '{print $1, $2, $3}')"
check_eq "list --limit 2: the first two, in import order" "a1@example.com A1@example.com" \
    "$("$RM" recipients list --db "$PG_URL" --campaign "$C" --state queued --limit 2 | tail -n +2 | awk '{printf "%s%s", (NR > 1 ? " " : ""), $1}')"
"$RM" recipients list --db "$PG_URL" --campaign "$C" --state sen >/dev/null 2>"$T/list3.err"
check_eq "list --state sen: exit 2" 2 "$?"
check_grep "list --state sen: names the states of the schema" \
    "^ringmail recipients list: --state 'sen' is not a recipient state \(one of: queued, claimed, sent, deferred, bounced, failed, expired, invalid, suppressed, ambiguous\)$" "$T/list3.err"
"$RM" recipients list --db "$PG_URL" --campaign "$C" --state bounced >"$T/list4.out" 2>"$T/list4.err"
check_eq "list --state bounced: nothing, said on stderr" "0 0" "$? $(wc -c <"$T/list4.out")"
check_grep "list --state bounced: says there is none" "campaign $C has no recipient in state bounced" "$T/list4.err"
"$RM" recipients list --db "$PG_URL" --campaign 987654 >/dev/null 2>"$T/list5.err"
check_eq "list: unknown campaign -> 1" 1 "$?"
check_grep "list: unknown campaign says so" "campaign 987654 does not exist" "$T/list5.err"
"$RM" recipients frob 2>"$T/sub.err"
check_grep "recipients frob: names the subcommands" "^ringmail recipients: unknown subcommand 'frob' \(one of: import, list\)$" "$T/sub.err"
"$RM" recipients import --help >"$T/help.out"
check_grep "import --help: the exit statuses" "Exit status: 0 imported; 3 imported, but bad rows were skipped" "$T/help.out"
e2e_finish
