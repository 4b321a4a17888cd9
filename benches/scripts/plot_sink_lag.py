#!/usr/bin/env python3
"""Plots the sinks' lag over time from the `sinks.csv` files `tally bench --sinks ...`
writes (one per report directory), one panel per run: lag in outcome-stream entries and
transfers written so far, with the end of the load marked.

    python3 benches/scripts/plot_sink_lag.py OUT.png DIR|CSV [DIR|CSV ...]

Needs matplotlib (`pip install matplotlib`).
"""

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(source):
    """A report directory's `sinks.csv`, or a CSV file of that form."""
    path = Path(source)
    by_sink = {}
    with open(path if path.suffix == ".csv" else path / "sinks.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            by_sink.setdefault(row["sink"], []).append(row)
    return by_sink


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, directories = sys.argv[1], sys.argv[2:]
    figure, axes = plt.subplots(len(directories), 1, figsize=(10, 3.2 * len(directories)), squeeze=False)
    for axis, directory in zip(axes[:, 0], directories):
        rate_axis = axis.twinx()
        load_end = None
        for sink, rows in sorted(read(directory).items()):
            times = [float(row["at_s"]) for row in rows]
            lags = [int(row["lag"]) for row in rows]
            axis.plot(times, lags, label=f"{sink} lag (entries)")
            # Cumulative: a sink commits whole batches (seconds apart), so a per-sample rate
            # is all spikes; the slope of this line is its rate.
            transfers = [int(row["transfers"]) / 1000 for row in rows]
            rate_axis.plot(times, transfers, linestyle=":", label=f"{sink} transfers written (thousands)")
            ends = [float(row["at_s"]) for row in rows if row["loading"] == "0"]
            if ends:
                load_end = min(ends) if load_end is None else min(load_end, min(ends))
        if load_end is not None:
            axis.axvline(load_end, color="grey", linestyle="--", label="load ends")
        axis.set_title(Path(directory).name, fontsize=9)
        axis.set_xlabel("seconds since the load started")
        axis.set_ylabel("lag (outcome-stream entries)")
        rate_axis.set_ylabel("transfers written (thousands)")
        lines = axis.get_legend_handles_labels()
        rate_lines = rate_axis.get_legend_handles_labels()
        axis.legend(lines[0] + rate_lines[0], lines[1] + rate_lines[1], fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
