"""wandb tracking: offline by default (works with no network or account), online opt-in, disabled in tests.

The run id is stored in the run directory, so a resumed run logs into the same wandb run.
"""
from __future__ import annotations

import uuid
from pathlib import Path

MODES = ("offline", "online", "disabled")


class Tracker:
    def __init__(self, mode: str, project: str, run_dir: str | Path, config: dict, name: str | None = None,
                 entity: str | None = None, tags: list[str] | None = None):
        if mode not in MODES:
            raise ValueError(f"logger.mode must be one of {MODES}, got {mode!r}")
        self.run = None
        if mode == "disabled":
            return
        import wandb  # imported lazily: a disabled tracker costs nothing

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(project=project, entity=entity, name=name, tags=tags, config=config, id=run_id,
                              resume="allow", mode=mode, dir=str(run_dir))

    def log(self, metrics: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, metrics: dict) -> None:
        if self.run is not None:
            self.run.summary.update(metrics)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
