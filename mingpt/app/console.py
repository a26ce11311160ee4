"""
What a run prints while it trains, from the trainer's callback (the library's Trainer prints nothing of its own
but minGPT's "running on device" line): a line every --trainer.log_interval steps and at the last, each
evaluation's line, a tqdm bar instead on a terminal; and Ctrl-C, which asks the run to stop when the current
iteration ends (a second Ctrl-C stops at once).
"""

import contextlib
import signal
import sys
import threading
import time

from tqdm import tqdm


class Console:
    """The run's lines: `on_batch_end` is the trainer's callback, `close` ends the bar."""

    def __init__(self, trainer, log_interval):
        self.log_interval = log_interval
        max_iters = trainer.config.max_iters
        # a live bar on a terminal; plain log lines in CI logs and pipes
        self.bar = tqdm(total=max_iters, initial=trainer.iters_done, dynamic_ncols=True) if sys.stderr.isatty() \
            else None
        self.val = "-"
        self.started, self.start_iter = time.perf_counter(), trainer.iters_done  # this start's pace, evaluations in

    def say(self, text):
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def on_batch_end(self, trainer):
        m, it = trainer.metrics, trainer.iters_done
        if it % self.log_interval == 0 or it == trainer.config.max_iters:
            attn_ms, attn_mib = m.get("attention_ms"), m.get("attention_mib")
            attn = f"; attn {attn_ms:.2f}ms, {attn_mib:.2f}MiB" if attn_ms is not None else ""
            clipped = " (clipped)" if m["clipped"] else ""
            if "loss_scale" in m:  # float16
                clipped += f", loss scale {m['loss_scale']:g}" + (" (step skipped)" if m["skipped"] else "")
            self.say(f"iter {it}: loss {m['loss']:.4f}, lr {m['lr']:.2e}, grad norm {m['grad_norm']:.3g}{clipped}, "
                     f"{m['iter_ms']:.0f}ms/iter, {m['tokens_per_s']:.0f} tok/s{attn}{self.time_left(trainer)}")
        ev = trainer.last_eval
        if ev:
            self.say(f"iter {it}: train loss {ev['train']:.4f}, val loss {ev['val']:.4f}, "
                     f"val {ev['val_bpc']:.4f} bits/char")
            self.val = f"{ev['val']:.4f}"
        if self.bar is not None:
            self.bar.set_postfix({"loss": f"{m['loss']:.4f}", "val": self.val, "tok/s": f"{m['tokens_per_s']:.0f}"},
                                 refresh=False)
            self.bar.update(1)

    def time_left(self, trainer):
        """', 1m05s left' from this start's wall time per iteration so far (evaluations and samples included)."""
        max_iters, done = trainer.config.max_iters, trainer.iters_done - self.start_iter
        if max_iters is None or done == 0:
            return ""
        seconds = round((time.perf_counter() - self.started) / done * (max_iters - trainer.iters_done))
        return f", {seconds // 60}m{seconds % 60:02d}s left"

    def close(self):
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def stop_on_interrupt(trainer):
    """While the block runs, Ctrl-C (SIGINT) sets trainer.interrupted, which stops every process when the current
    iteration ends, so that what is saved then is a whole step; a second Ctrl-C stops at once."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return

    def handler(signum, frame):
        if trainer.interrupted:
            raise KeyboardInterrupt
        trainer.interrupted = True
        print("interrupt: stopping after this iteration (Ctrl-C again to stop at once)", file=sys.stderr)
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
