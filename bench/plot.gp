# bench/plot.gp: the PNG plots of `make bench` (bench/run.sh), from the
# small .dat files it writes (medians; "?" = no successful run).
#
#   gnuplot -e "dir='bench/results'; what='scale'" bench/plot.gp
#
# what: scale | cost | size | all (default: all whose .dat file exists).
if (!exists("dir")) dir = "bench/results"
if (!exists("what")) what = "all"

have(f) = system("test -s '" . f . "' && echo 1 || echo 0") eq "1"
want(w) = (what eq w) || (what eq "all" && have(dir . "/" . w . ".dat"))

if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
    set terminal pngcairo size 1000,600 noenhanced font "sans,10"
} else {
    set terminal png size 1000,600 noenhanced
}
set datafile missing "?"
set grid
set key below box
set bmargin 7
set format x "%.0f"
set style data linespoints

# ---- 3. scale: msgs/s and KB/session vs sessions (log x); total RSS (linear)
if (want("scale")) {
    f = dir . "/scale.dat"
    set output dir . "/scale.png"
    set multiplot layout 1,2 title "ringmail blast: sessions open at once (the sink delays every reply: SCALE_LATENCY_MS, default 100 ms)"
    set logscale x 10
    set xlabel "TLS sessions open at once (log scale)" offset 0,0.8
    set ylabel "messages/s (end to end)"
    set y2label "client peak RSS per session (KB)"
    set ytics nomirror
    set y2tics
    set yrange [0:*]
    set y2range [0:*]
    plot f using 1:2 axes x1y1 lw 2 pt 7 title "msgs/s", \
         f using 1:3 axes x1y2 lw 2 pt 5 title "KB/session (peak RSS / sessions)"
    unset logscale x
    unset y2tics
    unset y2label
    set ytics mirror
    set xlabel "TLS sessions open at once" offset 0,0.8
    set ylabel "client peak RSS (MB)"
    set xrange [0:*]
    plot f using 1:4 lw 2 pt 7 title "measured peak RSS", \
         f using 1:5 with lines dt 2 lw 1 title "least-squares line: base + KB x sessions"
    unset multiplot
    unset output
    reset
    set grid
    set datafile missing "?"
    set key below box
    set bmargin 7
    set format x "%.0f"
    set style data linespoints
}

# ---- 4. cost growth: client CPU per message vs messages (log x)
if (want("cost")) {
    f = dir . "/cost.dat"
    set output dir . "/cost.png"
    set title "ringmail blast: client CPU per message vs campaign size (2 KB, 20 connections, STARTTLS)"
    set logscale x 10
    set xlabel "messages per run (log scale)" offset 0,0.8
    set ylabel "client CPU per message (us, user+system)"
    set y2label "messages/s (end to end)"
    set ytics nomirror
    set y2tics
    set yrange [0:*]
    set y2range [0:*]
    plot f using 1:2 axes x1y1 lw 2 pt 7 title "us CPU/msg", \
         f using 1:3 axes x1y2 lw 2 pt 5 title "msgs/s"
    unset output
}

# ---- 5. message size: msgs/s and MB/s vs size (log x)
if (want("size")) {
    f = dir . "/size.dat"
    set output dir . "/size.png"
    set title "ringmail blast: message size (20 connections, STARTTLS)"
    set logscale x 10
    set xlabel "message size (KB, log scale)" offset 0,0.8
    set ylabel "messages/s (end to end, log scale)"
    set y2label "MB/s (msgs/s x size)"
    set ytics nomirror
    set y2tics
    set logscale y 10
    set yrange [500:*]
    set y2range [0:*]
    set xrange [1.5:150]
    plot f using 1:2 axes x1y1 lw 2 pt 7 title "msgs/s", \
         f using 1:3 axes x1y2 lw 2 pt 5 title "MB/s", \
         2000 axes x1y1 with lines dt 2 lw 1 lc rgb "#2a9d2a" title "target at 100 KB: 2,000 msgs/s", \
         917 axes x1y1 with lines dt 3 lw 1 lc rgb "#c03030" title "KumoMTA published, 100 KB, 8 cores: ~917 msgs/s"
    unset output
}
