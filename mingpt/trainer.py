"""
Simple training loop; Boilerplate that could apply to any arbitrary neural network,
so nothing in this file really has anything to do with GPT specifically.

minGPT's Trainer: `Trainer(config, model, train_dataset)` trains on any torch Dataset of (x, y) pairs through a
DataLoader that samples with replacement (targets of -1 are ignored by the models' loss), AdamW from the model's
configure_optimizers, gradient clipping, callbacks ('on_batch_end') that read iter_num (the step's index, from 0),
iter_dt and loss, and max_iters=None to train until stopped; its default config is minGPT's (a constant learning
rate of 3e-4, fp32) and it prints only minGPT's "running on device" line. Added, each off by default or read only
where the data has it: a dataset with batches of its own (chargpt's CharDataset: get_batch and get_eval_batch) is
read with them and evaluated on both splits; a warm-up + cosine (or warm-up / stable / decay) learning-rate
schedule; Muon beside AdamW; bf16 and float16 autocast (float16 with loss scaling); torch.compile, compiled before
the first step so that its time is apart from the iterations'; gradient accumulation and torchrun's processes;
per-iteration metrics and evaluations for the callbacks to record; state_dict/load_state_dict for exact resumption.
What a run prints, saves and logs, and when it stops early, is its callbacks' (chargpt's: mingpt/app/run.py).
"""

import contextlib
import math
import time
from collections import defaultdict

import torch
from torch.utils.data import DataLoader, RandomSampler

from mingpt.config import CfgNode as CN, Check, at_least, between, each
from mingpt.device import DEVICES, auto_dtype, autocast_problem, compile_problem, device_problem, pick_device
from mingpt.distributed import Processes, micro_batch_size
from mingpt.errors import UserError

LR_SCHEDULES = ("cosine", "constant", "wsd")
OPTIMIZERS = ("adamw", "muon")
# a learning rate reaches the weights as a float32 step size after the optimizers' own factors (AdamW divides by its
# bias correction, 1 - beta1 at the first step; Muon multiplies by sqrt(rows / cols)): one that float32 cannot hold
# ends the first step in torch's overflow error, after the run has written its files. 1e6 is far above any rate that
# trains and far below float32's 3.4e38
MAX_LR = 1e6
LEARNING_RATE = Check(f"> 0 and <= {MAX_LR:g}", lambda v: 0 < v <= MAX_LR)
DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_schedule(config):
    if config.lr_schedule != "constant" and config.min_lr > config.learning_rate:
        raise UserError(f"--trainer.min_lr={config.min_lr} is above --trainer.learning_rate={config.learning_rate}; "
                        f"the {config.lr_schedule} schedule decays from the peak down to min_lr")


def check_compile(config):
    problem = compile_problem(pick_device(config.device))
    if problem:
        raise UserError(f"--trainer.compile=True: {problem}; run without --trainer.compile")


def check_batch_split(config):
    micro_batch_size(config.batch_size, config.grad_accum_steps, Processes().world_size)


class Diverged(ArithmeticError):
    """A step whose loss or gradient norm is not finite: training cannot go on from it. Raised before the
    optimizer's step, in every process alike (both numbers are the same in all of them)."""

    def __init__(self, iteration, loss, grad_norm):
        super().__init__(f"iteration {iteration}: loss {loss:.4g}, gradient norm {grad_norm:.4g}")
        self.iteration, self.loss, self.grad_norm = iteration, loss, grad_norm


class Trainer:

    @staticmethod
    def get_default_config():
        """minGPT's settings with minGPT's defaults, and the ones this trainer adds, each off or neutral by
        default (chargpt's run sets its own: mingpt/app/settings.py)."""
        C = CN()
        C.set("device", "auto", "auto picks cuda, then mps, then cpu", check=Check(DEVICES, problem=device_problem))
        C.set("max_iters", None, "number of optimizer steps (None: until stopped)", kind=int, check=at_least(0))
        C.set("batch_size", 64, "sequences per optimizer step, all processes and micro-steps together",
              check=at_least(1))
        C.set("num_workers", 4, "DataLoader worker processes for a torch Dataset of (x, y) pairs (datasets with batches "
              "of their own, as chargpt's, use none)", check=at_least(0))
        C.set("grad_accum_steps", 1, "micro-steps per optimizer step: each process runs batch_size / (processes x "
              "grad_accum_steps) sequences at a time and accumulates their gradients", check=at_least(1))
        C.set("optimizer", "adamw", "adamw: AdamW for every weight; muon: torch's Muon (momentum orthogonalised by "
              "Newton-Schulz) for the 2-D weights inside the blocks, AdamW for embeddings, head, norms and biases",
              choices=OPTIMIZERS)
        C.set("learning_rate", 3e-4, "peak AdamW learning rate", check=LEARNING_RATE)
        C.set("muon_lr", 0.02, "peak Muon learning rate (--trainer.optimizer=muon), scaled by the schedule as "
              "learning_rate is", check=LEARNING_RATE, used=lambda c: c.optimizer == "muon")
        C.set("betas", (0.9, 0.95), "AdamW betas", check=each(between(0, 1, high_open=True)))
        C.set("weight_decay", 0.1, "weight decay of Linear weights (AdamW's, and Muon's matrices')", check=at_least(0))
        C.set("grad_norm_clip", 1.0, "clip the gradient norm to this value (0: no clipping)", check=at_least(0))
        C.set("lr_schedule", "constant", "cosine: linear warm-up then cosine decay; wsd: linear warm-up, constant, "
              "linear decay over the last decay_fraction; constant: minGPT's and the course's", choices=LR_SCHEDULES)
        C.set("warmup_iters", 0, "warm-up steps of the cosine and wsd schedules", check=at_least(0))
        C.set("lr_decay_iters", None, "steps at which cosine and wsd reach min_lr (None: max_iters; on resume: the "
              "saved run's; with max_iters None, no decay)", kind=int, check=at_least(1))
        C.set("decay_fraction", 0.2, "wsd: the last fraction of lr_decay_iters over which it decays linearly",
              check=Check("in (0, 1]", lambda v: 0 < v <= 1), used=lambda c: c.lr_schedule == "wsd")
        C.set("min_lr", 5e-5, "learning rate at the end of the cosine and wsd schedules", check=at_least(0))
        C.set("dtype", "float32", "autocast dtype; auto: mingpt.device.auto_dtype, bfloat16 where the hardware has "
              "it natively (CUDA 8.0+, CPUs with AMX or AVX512-BF16), float16 with loss scaling on older CUDA GPUs and "
              "MPS, else float32; float16 scales the loss (torch.amp.GradScaler) and skips the steps it overflows",
              choices=tuple(DTYPES))
        C.set("eval_interval", 100, "evaluate train and val loss every this many steps (0: only at the end), for "
              "datasets with evaluation batches (get_eval_batch)", check=at_least(0))
        C.set("eval_iters", 20, "batches per split in each evaluation", check=at_least(1))
        C.set("compile", False, "torch.compile the model for training and evaluation (nanoGPT's flag), compiled before "
              "the first step (compile_s apart from iter_ms); turns the attention probe off. On a 2-core CPU it takes "
              "30-65 s and pays only in long runs without dropout (docs/speedrun.md)")
        C.rule(check_schedule)
        C.rule(check_compile, when=lambda c: c.compile)
        C.rule(check_batch_split)
        return C

    def __init__(self, config, model, train_dataset, processes=None, started=None):
        """processes: this process's place among torchrun's (mingpt.distributed.Processes; one process if None).
        Under torchrun the process group is joined here and left by processes.stop(). started: the
        time.perf_counter() that elapsed times count from (None: now)."""
        self.started = time.perf_counter() if started is None else started
        config.validate("trainer.")
        if config.lr_decay_iters is None and config.max_iters is not None:
            # written out, so that config.json and a later resume see the schedule this run follows
            config.lr_decay_iters = max(1, config.max_iters)
        self.config = config
        self.model = model  # the plain model: its state_dict has no DistributedDataParallel prefixes
        self.train_dataset = train_dataset
        self.callbacks = defaultdict(list)
        self.processes = processes or Processes({})
        self.micro_batch = micro_batch_size(config.batch_size, config.grad_accum_steps, self.processes.world_size)

        self.device = self.processes.device_for(pick_device(config.device))
        self.device_type = torch.device(self.device).type  # "cuda" for cuda:1 too
        self.processes.start(self.device)
        self.model = self.model.to(self.device)
        print("running on device", self.device)
        dtype = DTYPES[config.dtype] or auto_dtype(self.device_type)
        problem = autocast_problem(self.device_type, dtype) if dtype != torch.float32 else None
        if problem:
            raise UserError(f"--trainer.dtype={config.dtype}: autocast cannot run {dtype} on {self.device_type} here "
                            f"({problem}); use --trainer.dtype=float32")
        self.autocast_dtype = None if dtype == torch.float32 else dtype
        self.dtype_name = str(dtype).removeprefix("torch.")
        # float16's narrow range: the loss is scaled up before backward, the gradients down before clipping, and a
        # step whose gradients overflowed is skipped while the scale shrinks (skipped_step says so)
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=dtype == torch.float16)
        self.skipped_step = False

        self.optimizer = model.configure_optimizers(config)
        self.compiled = torch.compile(self.model) if config.compile else self.model  # what steps and evaluations call
        self.train_model = self.processes.wrap(self.compiled)  # what the training step calls
        # training batches draw from their own generator so that evaluation and sampling never shift them; every
        # process draws the same global batches from it, and its own dropout masks from the seed + rank
        self.seed = torch.initial_seed()
        self.batch_generator = torch.Generator()
        self.batch_generator.manual_seed(self.seed)
        if self.processes.rank:
            torch.manual_seed(self.seed + self.processes.rank)
        # a dataset with batches of its own draws them with one index; any other is minGPT's: a DataLoader
        self.get_batch = getattr(train_dataset, "get_batch", None) or self._loader_batches(train_dataset)
        self.evaluates = hasattr(train_dataset, "get_eval_batch")

        self.iter_num = 0  # minGPT's: in on_batch_end the index of the step just taken (from 0), after run() the count
        self.iters_done = 0  # optimizer steps taken, in callbacks too: what checkpoints, logs and schedules count
        self.iter_time = time.time()  # minGPT's: when the last iteration ended (s), and how long it took
        self.iter_dt = 0.0
        self.loss = None  # the last step's loss, a tensor: its mean over the whole batch
        self.grad_norm = None  # the last step's gradient norm, before clipping
        self.metrics = {}  # the last iteration's, by mingpt.app.metrics name
        self.last_eval = None  # the last evaluation's, by mingpt.app.metrics name; None when the iteration had none
        self.interrupted = False  # asked to stop in this process (chargpt's Ctrl-C handler sets it)
        self.stop_requested = False  # the loop ends after this iteration: a callback's wish, or any process's interrupt
        self.compile_s = self._compile() if config.compile else None

    def _compile(self):
        """Compile the training and the evaluation graphs now, on a micro-batch laid out as the run's are (a
        dataset's own batch from a generator of its own, or zeros of a DataLoader's shape), so that their compile
        time (returned, in seconds; one forward + backward and one forward included) stays out of the iterations'
        times, and a failure stops the run before it writes anything. The RNG states are left as they were."""
        own_batch = getattr(self.train_dataset, "get_batch", None)
        if own_batch is None:
            x = y = torch.zeros(self.config.batch_size, len(self.train_dataset[0][0]), dtype=torch.long)
        else:
            x, y = own_batch("train", self.config.batch_size, torch.Generator().manual_seed(0))
        xm, ym = self.share(x, y)[0]
        t0 = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device_type == "cuda" else []):
                with self.autocast():
                    self.compiled(xm, ym)[1].backward()
                self.model.zero_grad(set_to_none=True)
                self.model.eval()
                with torch.no_grad(), self.autocast():
                    self.compiled(xm, ym)
                self.model.train()
        except Exception as e:  # inductor's failures come as many kinds: a missing or broken compiler, a backend bug
            why = (str(e).strip().splitlines() or [""])[0][:200]
            raise UserError(f"torch.compile failed ({type(e).__name__}{': ' + why if why else ''}); run without "
                            f"--trainer.compile") from None
        return time.perf_counter() - t0

    def _loader_batches(self, dataset):
        """get_batch over a DataLoader that samples (x, y) pairs with replacement, as minGPT's trainer does."""
        batches = None

        def get_batch(split, batch_size, generator=None):
            nonlocal batches
            if batches is None:  # made at the first step, so that a trainer driven by step() alone needs no data
                sampler = RandomSampler(dataset, replacement=True, num_samples=int(1e10))
                batches = iter(DataLoader(dataset, sampler=sampler, batch_size=batch_size,
                                          num_workers=self.config.num_workers, pin_memory=self.device_type == "cuda"))
            return next(batches)
        return get_batch

    def add_callback(self, onevent: str, callback):
        self.callbacks[onevent].append(callback)

    def set_callback(self, onevent: str, callback):
        self.callbacks[onevent] = [callback]

    def trigger_callbacks(self, onevent: str):
        for callback in self.callbacks.get(onevent, []):
            callback(self)

    def lr_at(self, it):
        """Learning rate for step `it` (0-based)."""
        C = self.config
        if C.lr_schedule == "constant" or (it >= C.warmup_iters and C.lr_decay_iters is None):
            return C.learning_rate
        if it < C.warmup_iters:
            return C.learning_rate * (it + 1) / C.warmup_iters
        if C.lr_schedule == "wsd":  # stable at the peak, then linear down to min_lr over the last decay_fraction
            decay = C.decay_fraction * C.lr_decay_iters
            progress = min(1.0, max(0.0, (it - (C.lr_decay_iters - decay)) / decay))
            return C.learning_rate - progress * (C.learning_rate - C.min_lr)
        progress = min(1.0, (it - C.warmup_iters) / max(1, C.lr_decay_iters - C.warmup_iters))
        return C.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (C.learning_rate - C.min_lr)

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.autocast_dtype,
                              enabled=self.autocast_dtype is not None)

    def share(self, *batches):
        """This process's micro-batches of the global batches (B, T) (x, y, ...): rank r takes rows r*B/W ..
        (r+1)*B/W, cut into grad_accum_steps micro-batches of (B / (W * grad_accum_steps), T)."""
        W, A = self.processes.world_size, self.config.grad_accum_steps
        rows = lambda t: t.view(W, A, self.micro_batch, -1)[self.processes.rank].to(self.device)  # (A, b, T)
        return list(zip(*map(rows, batches)))

    @torch.no_grad()
    def evaluate(self):
        """Mean loss over eval_iters batches of each split, in eval mode, and the validation loss in bits per
        character: the nats of those tokens over ln 2 x the characters they cover. Batches come from a generator
        seeded by the iteration, so evaluation is reproducible and leaves the training RNG untouched. Each
        process evaluates its share of every batch; the results are over all of them."""
        self.model.eval()
        gen = torch.Generator()
        gen.manual_seed(self.iters_done)
        sums = []  # per split: mean loss, nats, characters
        for split in ("train", "val"):
            # summed on the device, in float64 and in order, so that they are the sums that Python's floats would
            # give, with one wait for the device per split instead of three per micro-batch
            loss_sum = nats = torch.zeros((), dtype=torch.float64, device=self.device)
            chars, count = torch.zeros((), dtype=torch.int64, device=self.device), 0
            for _ in range(self.config.eval_iters):
                x, y, covered = self.train_dataset.get_eval_batch(split, self.config.batch_size, gen)
                for xm, ym, cm in self.share(x, y, covered):
                    with self.autocast():
                        _, loss = self.compiled(xm, ym)
                    loss_sum = loss_sum + loss.double()
                    nats = nats + loss.double() * ym.numel()
                    chars = chars + cm.sum()
                    count += 1
            loss_sum, nats, chars = torch.stack([loss_sum, nats, chars.double()]).tolist()
            sums += [loss_sum / count, nats, chars]
        train, _, _, val, val_nats, val_chars = self.processes.sum(sums)
        self.model.train()
        W = self.processes.world_size
        self.last_eval = {"train": train / W, "val": val / W, "val_bpc": val_nats / (math.log(2) * val_chars)}
        return self.last_eval

    def state_dict(self):
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iter_num": self.iters_done,
            "torch_rng": torch.get_rng_state(),
            "batch_rng": self.batch_generator.get_state(),
            "elapsed_s": time.perf_counter() - self.started,  # a resumed run's clock goes on from here
        }
        if self.device_type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        # the saved groups carry the saved run's betas, weight decay and lr scale; this run's settings win
        own = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, settings in zip(self.optimizer.param_groups, own):
            group.update(settings)
        self.iter_num = self.iters_done = state["iter_num"]
        torch.set_rng_state(state["torch_rng"])
        self.batch_generator.set_state(state["batch_rng"])
        self.started -= state.get("elapsed_s", 0.0)
        if "cuda_rng" in state and self.device_type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if "scaler" in state and self.scaler.is_enabled():  # a run that changes to float16 starts a fresh scale
            self.scaler.load_state_dict(state["scaler"])
        if self.processes.rank:  # the checkpoint holds rank 0's dropout RNG; the others draw fresh masks
            torch.manual_seed(self.seed + self.processes.rank + self.processes.world_size * self.iters_done)

    def run(self):
        """Train until max_iters, or until a callback (or an interrupt in any process) sets stop_requested: each
        iteration takes a step, evaluates when due (last_eval), and calls the on_batch_end callbacks."""
        model, config = self.model, self.config
        model.train()
        while config.max_iters is None or self.iters_done < config.max_iters:
            t0 = time.perf_counter()
            lr = self.lr_at(self.iters_done)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1)
            x, y = self.get_batch("train", config.batch_size, self.batch_generator)  # (B, T)
            loss = self.step(x, y)
            iter_dt = time.perf_counter() - t0
            self.iters_done += 1
            self.iter_time, self.iter_dt = time.time(), iter_dt
            clip = config.grad_norm_clip
            self.metrics = {"iter": self.iters_done, "loss": loss, "lr": lr, "iter_ms": iter_dt * 1000,
                            "tokens_per_s": x.numel() / iter_dt, "grad_norm": self.grad_norm,
                            "clipped": int(bool(clip) and self.grad_norm > clip)}
            if self.scaler.is_enabled():  # the scale the next step will use, and whether this one was skipped
                self.metrics.update(loss_scale=self.scaler.get_scale(), skipped=int(self.skipped_step))
            self.trigger_callbacks("on_step_end")  # where the lab adds what it measured during the step
            self.last_eval = None
            if self.evaluates and ((config.eval_interval and self.iters_done % config.eval_interval == 0)
                                   or self.iters_done == config.max_iters):
                self.evaluate()
                self.last_eval["elapsed_s"] = time.perf_counter() - self.started
            self.trigger_callbacks("on_batch_end")
            self.iter_num = self.iters_done
            if self.stop_requested:
                break

    def step(self, x, y):
        """One optimizer step on the global batch x, y (B, T): forward and backward over this process's
        micro-batches, gradients averaged over all processes (DistributedDataParallel's all-reduce, skipped by
        no_sync on every micro-step but the last), the gradient norm (clipped to grad_norm_clip unless it is 0),
        the optimizer's step. A loss or gradient norm that is not finite raises Diverged before the step, so the
        weights stay those of the last finite one. Returns the loss of the whole global batch (a float;
        self.loss holds it as a tensor, as minGPT's callbacks read it); self.grad_norm holds the norm."""
        model = self.train_model
        micro_batches = self.share(x, y)
        model.zero_grad(set_to_none=True)
        losses = []
        for i, (xm, ym) in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with contextlib.nullcontext() if last or model is self.model else model.no_sync():
                with self.autocast():
                    _, loss = model(xm, ym)
                self.scaler.scale(loss / len(micro_batches)).backward()
            losses.append(loss.detach())
        self.scaler.unscale_(self.optimizer)
        # the norm of the averaged gradients, the same in every process; an infinite limit scales by exactly 1
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_norm_clip or math.inf)
        # one all-reduce carries the loss and whether any process was asked to stop, so that all stop together;
        # .item()/.tolist() wait for the device, so the caller's timing is this step's own
        loss, stops = self.processes.sum([(sum(losses) / len(losses)).item(), float(self.interrupted)])
        loss, self.grad_norm = loss / self.processes.world_size, norm.item()
        # float16's overflowed gradients are the scaler's to skip; anything else not finite is divergence
        self.skipped_step = self.scaler.is_enabled() and not math.isfinite(self.grad_norm)
        if not math.isfinite(loss) or not (math.isfinite(self.grad_norm) or self.skipped_step):
            raise Diverged(self.iters_done + 1, loss, self.grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.stop_requested = stops > 0
        self.loss = torch.tensor(loss)
        return loss
