"""Reads a Strata managed table with Python's deltalake (delta-rs, PyPI).

Usage: delta_check.py TABLE_DIR ROWS OPERATIONS
Checks that the table has ROWS rows at its latest version and that its
history, oldest first, is the comma-separated OPERATIONS; that its first
version is readable on its own (time travel); prints what it read.
"""

import os
import sys

from deltalake import DeltaTable


def main() -> None:
    path, rows, operations = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    table = DeltaTable(path)
    data = table.to_pyarrow_table()
    assert data.num_rows == rows, f"{data.num_rows} rows, wanted {rows}"
    history = [h["operation"] for h in reversed(table.history())]
    assert history == operations, f"history {history}, wanted {operations}"
    first = DeltaTable(path, version=0).to_pyarrow_table()
    print(f"rows={data.num_rows} version={table.version()} first={first.num_rows}")
    print(f"columns={','.join(data.schema.names)}")


if __name__ == "__main__":
    main()
    # deltalake's and pyarrow's native threads can abort the interpreter's
    # teardown ("terminate called without an active exception"): the
    # checks are done, leave without it.
    sys.stdout.flush()
    os._exit(0)
