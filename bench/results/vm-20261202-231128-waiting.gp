prefix = "bench/results/vm-20261202-231128"
set terminal pngcairo size 1500,800 noenhanced font "sans,9"
set output prefix."-waiting.png"
set datafile missing "?"
set grid
set logscale xy
set multiplot layout 2,3 title "openloop, 1 client, 64 B: p99 latency from the intended send time (top) and server CPU per frame (bottom) against the rate, per wait strategy"
titles = "no_limit cpu-limit_1 cpu-limit_0.5"
do for [l=0:2] {
  set title word(titles, l+1)
  set xlabel "frames/s"
  set ylabel "p99 (us)"
  if (l == 0) { set key top left font ",8" } else { unset key }
  plot for [i=0:4] prefix."-waiting.dat" index (l*5+i) using 1:2 with linespoints pt 7 title columnheader(1)
}
do for [l=0:2] {
  set title word(titles, l+1)
  set ylabel "server CPU us per frame"
  unset key
  plot for [i=0:4] prefix."-waiting.dat" index (l*5+i) using 1:3 with linespoints pt 7 title columnheader(1)
}
unset multiplot
