prefix = "bench/results/vm-20261202-235539"
frame = "64"
small = "64"
large = "65536"
fanout_small = "64"
fanout_large = "65536"
has_stream = 1
has_pingpong = 1
has_fanout = 1
touch = "read"
# Plots for one shmlane-bench result set. shmlane-bench writes the .dat files
# and runs this script; to redraw by hand, run the PREFIX.gp written beside
# them (it sets prefix, frame, small, large and touch, then includes this):
#   gnuplot bench/results/HOST-DATE.gp
#   (it also sets fanout_small and fanout_large)
# Each .dat file holds one block per series (blocks separated by two blank
# lines), whose first line is the series' name.
if (!exists("prefix")) prefix = "results"
if (!exists("frame")) frame = "64"
if (!exists("small")) small = "64"
if (!exists("large")) large = "65536"
if (!exists("touch")) touch = "read"
if (!exists("has_stream")) has_stream = 1
if (!exists("has_pingpong")) has_pingpong = 1
if (!exists("has_fanout")) has_fanout = 0
if (!exists("fanout_small")) fanout_small = "64"
if (!exists("fanout_large")) fanout_large = "65536"

set terminal pngcairo size 960,600 noenhanced font "sans,10"
set grid
set key outside right top
set datafile missing "?"

# A set without runs of a pattern has no plot of it (gnuplot rejects empty data).
if (has_stream) {
  set output prefix."-throughput.png"
  set title "stream ".frame." B: delivered frames/s vs clients, each transport at its best batch (touch ".touch.")"
  set logscale x 2
  set logscale y 10
  set xlabel "clients (processes)"
  set ylabel "frames/s"
  plot for [i=0:*] prefix."-throughput.dat" index i using 1:2 with linespoints pt 7 title columnheader(1)

  set output prefix."-batch.png"
  set multiplot layout 1,2 title "stream: delivered frames/s vs frames per write / publish (touch ".touch.")"
  set key inside bottom right font ",8"
  set xtics (1, 8, 64, 256)
  set xrange [0.7:400]
  set xlabel "batch (frames per write or publish)"
  set title small." B frames"
  plot for [i=0:*] prefix."-batch-small.dat" index i using 1:2 with linespoints pt 7 title columnheader(1)
  set title large." B frames"
  plot for [i=0:*] prefix."-batch-large.dat" index i using 1:2 with linespoints pt 7 title columnheader(1)
  unset multiplot
  set key outside right top font ",10"
  set xtics autofreq
  set autoscale x
}

if (has_pingpong) {
  set output prefix."-latency.png"
  set title "pingpong: RTT percentiles vs clients (solid p50, dashed p99)"
  set xlabel "clients (processes)"
  set ylabel "round-trip time (ns)"
  plot for [i=0:*] prefix."-latency.dat" index i using 1:2 with linespoints pt 7 lc (i+1) title columnheader(1), \
       for [i=0:*] prefix."-latency.dat" index i using 1:3 with linespoints pt 6 dt 2 lc (i+1) notitle

  set output prefix."-cdf.png"
  set title "pingpong: RTT distribution (fewest clients)"
  unset logscale y
  set logscale x 10
  set xlabel "round-trip time (ns)"
  set ylabel "fraction of round trips <= x"
  set yrange [0:1]
  plot for [i=0:*] prefix."-cdf.dat" index i using 2:1 with lines lw 2 title columnheader(1)
}

if (has_fanout) {
  set output prefix."-fanout.png"
  unset yrange
  set autoscale xy
  set xtics autofreq
  set logscale x 2
  set logscale y 10
  set multiplot layout 1,2 title "fanout: deliveries/s (summed over subscribers) vs subscribers, best batch, median of repeats (touch read)"
  set key inside bottom right font ",8"
  set xlabel "subscribers (processes)"
  set ylabel "deliveries/s"
  set title fanout_small." B frames"
  plot for [i=0:*] prefix."-fanout-small.dat" index i using 1:2 with linespoints pt 7 title columnheader(1)
  set title fanout_large." B frames"
  plot for [i=0:*] prefix."-fanout-large.dat" index i using 1:2 with linespoints pt 7 title columnheader(1)
  unset multiplot
}
