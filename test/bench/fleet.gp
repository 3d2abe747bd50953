# test/bench/fleet.gp — the fleet benchmark's figure (fleet.sh):
# gnuplot -e "csv='fleet.csv'; out='fleet.png'" fleet.gp
# Rows of fleet.csv alternate published / versions; x: processes x dicts per process.
set terminal pngcairo size 1000,420 font ",10"
set output out
set datafile separator ","
set multiplot layout 1,2 title "Fleet: push caches following published changes vs version-only push"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set key top left
set grid ytics
set logscale y
set yrange [0.5:*]
set title "PostgreSQL statements per commit (all processes)"
set ylabel "statements / commit (log)"
plot csv every 2::1 using 6:xtic(sprintf("%dx%d", int(column(3)), int(column(1)))) title "published changes", \
     csv every 2::2 using 6 title "versions only (baseline)"
unset logscale y
set yrange [0:*]
set title "commit -> visible, p99 over all processes (ms)"
set ylabel "ms"
plot csv every 2::1 using 8:xtic(sprintf("%dx%d", int(column(3)), int(column(1)))) title "published changes", \
     csv every 2::2 using 8 title "versions only (baseline)"
unset multiplot
