"""What the gateway observes: counters, histograms, snapshots, Prometheus, stats, health."""
