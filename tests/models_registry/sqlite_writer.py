"""Child process for the crash test: writes profiles and answers into a SQLite registry in a
loop, printing "<i>" once write i is committed, until it is killed.

    python -m tests.models_registry.sqlite_writer <db path>

Write i updates model `model-{i % NAMES}` (so its revision r means i = (r - 1) * NAMES + n)
with the profile of `make_record(seed=i)`, and records answer `p{i}` for it.
"""
from __future__ import annotations

import asyncio
import itertools
import sys

from models_registry.records import Answer
from models_registry.sqlite import SQLiteRegistry
from tests.models_registry.helpers import make_record

NAMES = 5
K = 64


def write_index(name: str, revision: int) -> int:
    """Which write i produced revision `revision` of model `name`."""
    return (revision - 1) * NAMES + int(name.rsplit("-", 1)[1])


def answer(i: int) -> Answer:
    return Answer(prompt_id=f"p{i}", score=float(i % 2), cost=i * 1e-6, output_tokens=i)


async def main(path: str) -> None:
    registry = SQLiteRegistry(path)
    await registry.start()
    for i in itertools.count():
        name = f"model-{i % NAMES}"
        await registry.put_model(make_record(name, k=K, seed=i))
        await registry.record_answer(name, "v1", answer(i))
        print(i, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
