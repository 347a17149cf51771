#!/bin/sh
# Profile wstrio at 32 B x 100 connections with py-spy (pip install py-spy).
# Writes docs/perf/profile-32B-x100.{txt,svg} and -summary.txt.
# Extra arguments go to run.py, e.g. --profile-duration 15 or --workers 2.
cd "$(dirname "$0")/.." && exec python benchmarks/run.py --profile-only "$@"
