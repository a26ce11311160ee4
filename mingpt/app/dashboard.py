"""
What a run sends to wandb, so that a dashboard answers the course's questions on its own.

- One run per run: the wandb run id is kept in the run folder (wandb_run_id.txt), and --trainer.resume=True
  continues that run (resume="allow"), so a resumed training is one curve. Its default name is the work_dir's
  path below the `out` folder (out/experiments_cpu/gqa_loss/kv2 -> experiments_cpu/gqa_loss/kv2).
- wandb's own environment variables keep their meaning (WANDB_MODE, WANDB_PROJECT, WANDB_NAME, WANDB_RUN_GROUP,
  WANDB_TAGS, WANDB_DIR, WANDB_JOB_TYPE, WANDB_RUN_ID): where one is set and the matching --system flag is not,
  the variable's value is used; a flag that is given wins. They are read at each run's start and passed to
  wandb.init (wandb itself reads them once per process, so a second run in one process would miss a change).
- Nothing waits for a login or the network: without an API key or a netrc login the mode is offline.
- Interrupted and failed runs finish with a non-zero exit code, so they show as crashed / failed.

The metric keys are listed, with their units, in METRICS (declared in mingpt/app/metrics.py, and in the README).
"""

import io
import netrc
import os
import re

from mingpt.app.metrics import METRICS as DECLARED

METRICS = {m.key: m.about for m in DECLARED}  # wandb key -> what it holds, for the README and anyone reading a run
RUN_ID_FILE = "wandb_run_id.txt"
ENVIRONMENT = {"project": "WANDB_PROJECT", "name": "WANDB_NAME", "group": "WANDB_RUN_GROUP",
               "tags": "WANDB_TAGS", "dir": "WANDB_DIR", "job_type": "WANDB_JOB_TYPE", "id": "WANDB_RUN_ID"}


def default_run_name(work_dir):
    """The work_dir's path below its last `out` folder; the path as given where it has none."""
    parts = os.path.normpath(work_dir).split(os.sep)
    below = [i for i, part in enumerate(parts[:-1]) if part == "out"]
    return "/".join(parts[below[-1] + 1:]) if below else "/".join(p for p in parts if p)


def wandb_mode(flag):
    """The mode a run uses: the flag, else WANDB_MODE, else online when a wandb login exists and offline
    otherwise (so that nothing ever prompts for one)."""
    if flag is not None:
        return flag
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        return "online" if netrc.netrc().authenticators("api.wandb.ai") else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


def init_arguments(given, defaults):
    """wandb.init's arguments but the mode (wandb_mode's): each from its flag, else from wandb's environment
    variable, else our default."""
    kwargs = {}
    for key in {**defaults, **given}:
        from_env = os.environ.get(ENVIRONMENT[key])
        if key == "tags" and from_env:
            from_env = from_env.split(",")
        value = next((v for v in (given.get(key), from_env, defaults.get(key)) if v), None)
        if value is not None:
            kwargs[key] = value
    return kwargs


class WandbRun:
    """One wandb run, or a no-op when wandb is disabled. A failed online start falls back to offline."""

    def __init__(self, system, config, folder, job_type="train", name=None, run_id=None):
        """system: the config's system node; config: the dict to record; folder: where the run's files live
        (and its wandb files, unless WANDB_DIR says otherwise); run_id: the id of a run to continue."""
        self.run = None
        mode = wandb_mode(system.wandb)
        if mode == "disabled":
            return
        import wandb
        self.wandb = wandb
        tags = system.wandb_tags.split(",") if system.wandb_tags else None
        given = {"project": system.wandb_project, "name": system.wandb_name or name, "group": system.wandb_group,
                 "tags": tags}
        defaults = {"project": "chargpt", "name": default_run_name(folder), "dir": folder, "job_type": job_type,
                    "id": run_id}
        kwargs = {**init_arguments(given, defaults), "mode": mode}
        if "id" in kwargs:
            kwargs["resume"] = "allow"
        settings = wandb.Settings(init_timeout=30, silent=True)
        try:
            self.run = wandb.init(config=config, settings=settings, **kwargs)
        except Exception as e:
            if kwargs["mode"] != "online":
                raise
            print(f"wandb online start failed ({type(e).__name__}); logging offline instead")
            self.run = wandb.init(config=config, settings=settings, **{**kwargs, "mode": "offline"})
        self.run.define_metric("val/loss", summary="min,last")
        self.samples = wandb.Table(columns=["iter", "sample"], log_mode="INCREMENTAL")
        self.best_val = None

    @property
    def id(self):
        return self.run.id if self.run else None

    def log(self, metrics, step):
        if not self.run:
            return
        self.run.log({k: v for k, v in metrics.items() if v is not None}, step=step)
        val = metrics.get("val/loss")
        if val is not None and (self.best_val is None or val < self.best_val):
            self.best_val = val
            self.run.summary.update({"val/best_loss": val, "val/best_step": step})

    def summarize(self, values):
        """Values of the whole run (compile time, the target's iteration, tokens and time) into its summary."""
        if self.run:
            self.run.summary.update(values)

    def log_sample(self, iter_num, text):
        if self.run:
            self.samples.add_data(iter_num, text)
            self.run.log({"samples": self.samples}, step=iter_num)

    def log_figure(self, name, figure, step):
        """A matplotlib figure as an image under `name` at `step` (wandb's own conversion needs pyplot's figures)."""
        if self.run:
            from PIL import Image
            png = io.BytesIO()
            figure.savefig(png, format="png")
            self.run.log({name: self.wandb.Image(Image.open(png))}, step=step)

    def log_files(self, images, tables):
        """images: {name: path of a PNG}; tables: {name: (columns, rows)}."""
        if self.run:
            self.run.log({**{name: self.wandb.Image(path) for name, path in images.items()},
                          **{name: self.wandb.Table(columns=columns, data=rows)
                             for name, (columns, rows) in tables.items()}})

    def finish(self, exit_code=0):
        if self.run:
            self.run.finish(exit_code=exit_code)
            self.run = None


def saved_run_id(folder):
    """The id of the wandb run that trained in `folder`; None when there is none, or what is there is not an id
    (then the resume starts a new wandb run)."""
    try:
        with open(os.path.join(folder, RUN_ID_FILE)) as f:
            run_id = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return run_id if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", run_id) else None
