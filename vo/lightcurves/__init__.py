"""The light-curve pipeline: observatories, raw store, reduction, analysis, histograms."""
