#!/usr/bin/env python3
"""Medians of a berth-bench run, per scenario and target, each as a ratio to one target.

    ratios.py RESULTS.jsonl BASE TARGET...   prints a line per scenario and target:
                                             median, unit, and "xR of BASE_LABEL"
    (BASE_LABEL is taken from the BERTH_RATIO_LABEL variable, default BASE)
"""
import json
import os
import statistics
import sys
from collections import defaultdict


def main(results, base, *targets):
    label = os.environ.get("BERTH_RATIO_LABEL", base)
    figures = defaultdict(list)
    unit = {}
    for line in open(results):
        record = json.loads(line)
        if record.get("value") is not None:
            figures[(record["scenario"], record["target"])].append(record["value"])
            unit[record["scenario"]] = record.get("unit", "")
    for scenario in sorted({s for s, _ in figures}):
        reference = statistics.median(figures[(scenario, base)])
        for target in (base, *targets):
            values = figures.get((scenario, target))
            if values:
                median = statistics.median(values)
                print(f"{scenario:13} {target:10} {median:10.1f} {unit[scenario]}  "
                      f"x{median / reference:.3f} of {label}")


if __name__ == "__main__":
    main(*sys.argv[1:])
