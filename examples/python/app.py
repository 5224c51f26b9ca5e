"""tally: named counters in a Hightower namespace, over the standard
`wasi:keyvalue@0.2.0-draft2` interfaces (store, atomics, batch).

Usage (after `hightower run tally.wasm --namespace app/`):

    add NAME [N]      add N (default 1) to counter NAME; prints the new total
    show              every counter, sorted by name: "NAME TOTAL"
    reset NAME        set NAME to 0 unless it changes meanwhile; prints the old total
    drop NAME...      remove counters, all at once

Counters live in the default bucket (the first granted namespace) under
`tally/NAME`, as ASCII decimal, so `hightower get app/tally/NAME` reads them.
"""

import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import atomics, batch, store

PREFIX = "tally/"


def fail(message: str) -> None:
    print(f"tally: {message}", file=sys.stderr)
    sys.exit(1)


def describe(err: Err) -> str:
    """An error of the keyvalue interfaces, as text."""
    value = err.value
    if isinstance(value, atomics.CasError_StoreError):
        value = value.value
    if isinstance(value, store.Error_Other):
        return value.value
    return type(value).__name__


def all_counters(bucket: store.Bucket) -> list[str]:
    """Every counter's key, page by page (the cursor is opaque)."""
    keys: list[str] = []
    cursor = None
    while True:
        page = bucket.list_keys(cursor)
        keys.extend(k for k in page.keys if k.startswith(PREFIX))
        cursor = page.cursor
        if cursor is None:
            return keys


def reset(bucket: store.Bucket, key: str) -> int:
    """Compare-and-swap: write 0 only if nobody wrote in between."""
    cas = atomics.Cas.new(bucket, key)
    while True:
        current = cas.current()
        if current is None:
            fail(f"{key[len(PREFIX):]}: no such counter")
        try:
            atomics.swap(cas, b"0")
            return int(current)
        except Err as err:
            if isinstance(err.value, atomics.CasError_CasFailed):
                cas = err.value.value  # refreshed handle: try again
            else:
                raise


class Run(exports.Run):
    def run(self) -> None:
        args = sys.argv[1:]
        try:
            bucket = store.open("default")
            if len(args) in (2, 3) and args[0] == "add":
                delta = int(args[2]) if len(args) == 3 else 1
                print(atomics.increment(bucket, PREFIX + args[1], delta))
            elif args == ["show"]:
                keys = sorted(all_counters(bucket))
                for i in range(0, len(keys), 100):
                    for entry in batch.get_many(bucket, keys[i : i + 100]):
                        if entry is not None:
                            print(entry[0][len(PREFIX) :], entry[1].decode())
            elif len(args) == 2 and args[0] == "reset":
                print(reset(bucket, PREFIX + args[1]))
            elif len(args) >= 2 and args[0] == "drop":
                batch.delete_many(bucket, [PREFIX + name for name in args[1:]])
            else:
                fail("usage: tally add NAME [N] | show | reset NAME | drop NAME...")
        except Err as err:
            fail(describe(err))
        except ValueError as err:
            fail(str(err))
