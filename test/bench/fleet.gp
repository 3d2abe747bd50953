# test/bench/fleet.gp — the fleet benchmark's figure (fleet.sh):
# gnuplot -e "csv='fleet-plot.csv'; out='fleet.png'" fleet.gp
# fleet-plot.csv (fleet.sh makes it from fleet.csv), one row per run size:
# processes x dicts, statements/commit (published, versions), p99 ms
# (published, versions, the floor: bare pub/sub subscribers; empty if none).
set terminal pngcairo size 1000,420 font ",10"
set output out
set datafile separator ","
set datafile missing ""
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
plot csv using 2:xtic(1) title "published changes", \
     csv using 3 title "versions only (baseline)"
set yrange [1:*]
set title "commit -> visible, p99 over all processes (ms)"
set ylabel "ms (log)"
plot csv using 4:xtic(1) title "published changes", \
     csv using 5 title "versions only (baseline)", \
     csv using 6 title "floor: bare Redis pub/sub subscribers"
unset multiplot
