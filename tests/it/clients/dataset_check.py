"""Reads a directory a Strata COPY wrote, with pyarrow's datasets (PyPI).

Usage: dataset_check.py DIR FORMAT PARTITION_COLUMN
Reads DIR as a Hive-partitioned dataset of FORMAT (parquet, csv, json)
files (pyarrow skips names starting with `_`: the staging directory and
the `_SUCCESS` marker) and prints its row count and, per value of the
partition column, its row count, sorted: `rows=N` then `VALUE=N` lines.
"""

import os
import sys

import pyarrow.dataset as ds


def main() -> None:
    path, fmt, column = sys.argv[1], sys.argv[2], sys.argv[3]
    data = ds.dataset(path, format=fmt, partitioning="hive").to_table()
    print(f"rows={data.num_rows}")
    counts = {}
    for value in data.column(column).to_pylist():
        counts[value] = counts.get(value, 0) + 1
    for value in sorted(counts, key=str):
        print(f"{value}={counts[value]}")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # pyarrow's native threads can abort the interpreter's teardown.
    os._exit(0)
