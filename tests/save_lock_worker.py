"""A rank of a 2-process run taking the --save-dir lock (test_save_safety.py); a module of its own so the
spawned processes import only torch and checkpoint_lock."""

from pathlib import Path


def lock_worker(rank: int, world: int, port: int, folders: list, out_dir: str) -> None:
    import torch.distributed as dist

    from fairseq_switch import checkpoint_lock

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        got = []
        for folder in folders:
            try:
                checkpoint_lock.lock_for_run(folder)
                got.append("ok")
            except ValueError as e:
                got.append(str(e))
        Path(out_dir, f"rank{rank}.txt").write_text("\n".join(got))
    finally:
        dist.destroy_process_group()
