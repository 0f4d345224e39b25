"""Reads a Strata partitioned managed table with Python's deltalake.

Usage: partitioned_check.py TABLE_DIR COLUMN ROWS
Checks that the table is partitioned by COLUMN, holds ROWS rows with
COLUMN among its columns, and that each partition's rows read through a
partition filter are as many as the rows with that value; prints
`value=count` per partition.
"""

import os
import sys

from deltalake import DeltaTable


def main() -> None:
    path, column, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    table = DeltaTable(path)
    assert table.metadata().partition_columns == [column], table.metadata()
    data = table.to_pyarrow_table()
    assert data.num_rows == rows, f"{data.num_rows} rows, wanted {rows}"
    assert column in data.schema.names, data.schema.names
    counts = {}
    for value in data.column(column).to_pylist():
        counts[value] = counts.get(value, 0) + 1
    for value, n in sorted(counts.items(), key=lambda kv: str(kv[0])):
        if value is None:
            continue
        part = table.to_pyarrow_table(partitions=[(column, "=", str(value))])
        assert part.num_rows == n, f"{column}={value}: {part.num_rows} rows, wanted {n}"
        print(f"{value}={n}")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
