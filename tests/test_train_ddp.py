"""DDP through torchrun on the CPU (gloo, 2 processes): the global batch is split over ranks, gradients are averaged
so both ranks hold the same weights, evaluation counts are summed, and only rank 0 writes the run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from test_data import _isolated, write_fmnist  # noqa: F401  (the fixture isolates the data/cache lookup)

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from pathlib import Path
    from resnet_deploy.config import TrainConfig, apply_overrides
    from resnet_deploy.train import distributed
    from resnet_deploy.train.loop import Trainer

    root, out = sys.argv[1], Path(sys.argv[2])
    cfg = apply_overrides(TrainConfig(), [f"data.spec=fashion-mnist:{root}", "optim.batch_size=16",
                                          "schedule.iterations=6", "run.log_every=3", "run.eval_every=0",
                                          "run.checkpoint_every=0", "run.device=cpu"])
    env = distributed.setup("cpu")
    t = Trainer(cfg, out, env, None, progress=False)
    r = t.run()
    vec = torch.cat([p.detach().flatten() for p in t.model.parameters()])
    r.update(per_rank_batch=t.data.batch_size, weights=[float(vec.sum()), float(vec.abs().sum())],
             ddp=type(t.net).__name__)
    (out / f"rank{env.rank}.json").write_text(json.dumps(r))
    distributed.cleanup(env)
""")


def test_two_process_gloo(tmp_path):
    root = write_fmnist(tmp_path / "fm", n_train=64, n_test=20)
    (tmp_path / "ddp.py").write_text(SCRIPT)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(tmp_path / "ddp.py"), str(root), str(out)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2 and (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["per_rank_batch"] == 8 and r0["ddp"] == "DistributedDataParallel"
    assert r0["weights"] == r1["weights"]  # DDP averaged the same gradients into both replicas
    assert r0["eval_images"] == r1["eval_images"] == 20 and r0["top1"] == r1["top1"]  # shards summed
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert sum('"train"' in ln for ln in lines) == 2  # rank 0 alone logs
    assert (out / "last.pt").is_file()
