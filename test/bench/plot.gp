# test/bench/plot.gp — bench.png from the plot_*.dat files summarize.pl
# writes: gnuplot -e "outdir='DIR'" plot.gp
# Bars are medians, whiskers min..max over the run's repetitions; blue is
# ddict, grey what a user would do instead.

if (!exists("outdir")) outdir = "."
set terminal pngcairo size 1600,1150 font "DejaVu Sans,10" noenhanced
set output outdir."/bench.png"
set multiplot layout 2,2 title "ddict — make bench (bars: median; whiskers: min..max over repetitions; blue: ddict, grey: baselines)" font ",13"

blue = 0x3b75af
grey = 0x9a9a9a
ok(y) = (y > 0)
v(y) = ok(y) ? y : 1/0
si(y) = y >= 1e6 ? sprintf("%.1fM", y / 1e6) : y >= 1e4 ? sprintf("%.0fk", y / 1e3) : y >= 1e3 ? sprintf("%.1fk", y / 1e3) : sprintf("%.0f", y)
lat(y) = !ok(y) ? "not measured" : y >= 1000 ? sprintf("%.1f us", y / 1000) : y >= 10 ? sprintf("%.0f ns", y) : sprintf("%.1f ns", y)
ms(y) = !ok(y) ? "not measured" : y >= 10 ? sprintf("%.0f ms", y) : y >= 1 ? sprintf("%.1f ms", y) : sprintf("%.2f ms", y)

set style fill solid 0.85 border -1
set grid ytics mytics lc rgb "#dddddd"
set border 3
set ytics nomirror
set xtics nomirror rotate by -35 left
set offsets 0.5, 0.5, 0, 0
set tmargin 3

# 1. every read path on one log scale, from a few ns to tens of µs
set title "Read latency p50, 100k keys, random order (log scale)"
set ylabel "ns per read"
set logscale y 10
set yrange [1:300000]
set format y "%.0s%c"
unset key
plot outdir."/plot_lat.dat" using 0:(v($2)):(v($3)):(v($4)):(0.7):($5 == 1 ? blue : grey) with boxerrorbars lc rgb variable, \
     ""                     using 0:(1e-9):xtic(1) with points ps 0, \
     ""                     using 0:(ok($2) ? $4 * 1.4 : 1.5):(lat($2)) with labels font ",8" rotate by 90 left

# 2. reloads: full loads against COPY binary, and a one-key delta
set title "Reloads: ddict_open vs COPY (FORMAT binary) into a hash table; one-key delta; push commit-to-visible p99 (log scale)"
set ylabel "ms"
set yrange [0.01:20000]
set format y "%g"
set key top left
plot outdir."/plot_load.dat" using ($0 - 0.17):(v($2)):(v($3)):(v($4)):(0.32) with boxerrorbars lc rgb blue title "ddict", \
     ""                      using ($0 + 0.17):(v($5)):(v($6)):(v($7)):(0.32) with boxerrorbars lc rgb grey title "COPY binary + hash table", \
     ""                      using 0:(1e-9):xtic(1) with points ps 0 notitle, \
     ""                      using ($0 - 0.17):(ok($2) ? $4 * 1.4 : 0.02):(ms($2)) with labels font ",8" notitle, \
     ""                      using ($0 + 0.17):(ok($5) ? $7 * 1.4 : 1/0):(ms($5)) with labels font ",8" notitle

# 3. writes
set title "Writes and version reads (pgbench TPS, linear scale)"
set ylabel "transactions/s"
unset logscale y
set yrange [0:*]
set format y "%.0s%c"
plot outdir."/plot_writes.dat" using ($0 - 0.27):(v($2)):(v($3)):(v($4)):(0.26) with boxerrorbars lc rgb grey title "plain table / SELECT 1", \
     ""                        using ($0):(v($5)):(v($6)):(v($7)):(0.26) with boxerrorbars lc rgb blue title "ddict table / ddict_last_updated()", \
     ""                        using ($0 + 0.27):(v($8)):(v($9)):(v($10)):(0.26) with boxerrorbars lc rgb 0x9ec3e6 title "ddict table, Redis publishing on", \
     ""                        using 0:(0):xtic(1) with points ps 0 notitle, \
     ""                        using ($0 - 0.27):4:(si($2)) with labels offset 0,0.8 font ",8" notitle, \
     ""                        using ($0):7:(si($5)) with labels offset 0,0.8 font ",8" notitle, \
     ""                        using ($0 + 0.27):(ok($8) ? $10 : 1/0):(si($8)) with labels offset 0,0.8 font ",8" notitle

# 4. threads
set title "Reads/s from one handle while a writer commits 100/s (log scale)"
set ylabel "reads/s"
set logscale y 10
set yrange [1000:1e9]
unset key
plot outdir."/plot_threads.dat" using 0:(v($2)):(v($3)):(v($4)):(0.6):xtic(1) with boxerrorbars lc rgb blue notitle, \
     ""                         using 0:($4 * 1.5):(si($2)) with labels font ",9" notitle

unset multiplot
