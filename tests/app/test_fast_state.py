"""`uniroute build-state --embedder fast` writes a router state that carries its own copy of the
shipped static embedder, and a gateway started on it routes by it."""
from __future__ import annotations

import numpy as np
from openai import OpenAI

from app.cli.main import main
from app.demo import ROUTERBENCH_DIR
from router_core.embedding import FAST_DIRNAME, fast_model_id
from router_core.shipped import FAST_EMBEDDER_DIR
from router_core.state import RouterState


def test_a_fast_state_is_built_offline_and_served(tmp_path, make_gateway, routerbench, test_split_ids):
    """The state's embedder is a copy of the shipped one, not a new distillation: before, every
    `build-state --embedder fast` distilled MiniLM again (about 75 s, torch and all), into a
    vector space of its own that no embedding cache or shipped state shared."""
    out = tmp_path / "state-fast"
    train = [str(p) for p in sorted(ROUTERBENCH_DIR.glob("*_train.csv"))]
    argv = ["build-state", "--embedder", "fast", "--clusters", "8", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    for path in train:
        argv += ["--data", path]
    assert main(argv) == 0
    state = RouterState.load(out)
    assert state.embedder == "fast" and state.dim == 256 and state.k == 8
    assert fast_model_id(out / FAST_DIRNAME) == fast_model_id(FAST_EMBEDDER_DIR) == state.metadata["embedder_id"]

    with make_gateway(state_dir=str(out)) as gw:
        client = OpenAI(base_url=gw + "/v1", api_key="unused", max_retries=0)
        row = {pid: i for i, pid in enumerate(routerbench.ids)}
        clusters = set()
        for pid in test_split_ids[::150]:
            raw = client.chat.completions.with_raw_response.create(
                model="uniroute:0", messages=[{"role": "user", "content": routerbench.prompts[row[pid]]}])
            assert raw.parse().choices[0].message.content
            clusters.add(int(raw.headers["x-uniroute-cluster"]))
        assert len(clusters) > 1 and clusters <= set(range(8))
        cheapest = routerbench.models[int(np.argmin(np.nanmean(routerbench.costs, axis=0)))]
        raw = client.chat.completions.with_raw_response.create(
            model="uniroute:1000", messages=[{"role": "user", "content": "Name a prime number."}])
        assert raw.headers["x-uniroute-model"] == cheapest
