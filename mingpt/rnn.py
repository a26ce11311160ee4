"""
The recurrent baselines the course starts from, in the writeup's notation:

    h_t = slide(W_hh h_(t-1) + W_hx x_t + b_h),    y_t = W_yh h_t + b_y,    slide(a) = min(1, max(0, a))

- `ElmanRNN`: that network, with tanh offered beside slide (slide's gradient is zero outside [0, 1]).
- `RNNLM` (`--model.model_type=rnn`): token embedding -> n_layer stacked Elman layers -> logits, trained by the
  same trainer as the GPT and generating one step per token while carrying its hidden state.
- `BiRNNLM`: the writeup's bidirectional RNN, f_t from the left, g_t from the right, h_t = [f_t; g_t], as the
  two language models of question 1.2:
  * `model_type=birnn_invalid`, (a): p(x_t | h_(t-1)) from one pass over the whole sequence. g_(t-1) has read
    x_t and everything after it, so the prediction sees the answer: not an autoregressive model, and its
    training loss is deceptively low.
  * `model_type=birnn_prefix`, (b): p(x_t | BiRNN(x_(1:t-1))), the BiRNN rerun on every prefix, its
    representation [f_(t-1); g_1] (the forward state at the prefix's end, the backward state at its start).
    Valid, and its cost grows as T^2.
"""

import torch
import torch.nn as nn
from torch.nn import functional as F

from mingpt.attention import Dropout
from mingpt.errors import UserError
from mingpt.model import LanguageModel
from mingpt.optim import adamw_with_decay
from mingpt.sampling import check_sampling, sample_next


def slide(a):
    return a.clamp(0.0, 1.0)


ACTIVATIONS = {"slide": slide, "tanh": torch.tanh}


class ElmanRNN(nn.Module):
    """h_t = act(W_hh h_(t-1) + W_hx x_t + b_h), y_t = out_act(W_yh h_t + b_y).

    forward(x, h0=None): x (B, T, input_size) -> y (B, T, output_size), h (B, T, hidden_size); h0 defaults to 0.
    Without an output_size there is no output layer and y is None: the bidirectional model reads h alone, and a
    parameter that gets no gradient would stop DistributedDataParallel."""

    def __init__(self, input_size, hidden_size, output_size=None, activation="slide", output_activation=None):
        super().__init__()
        self.hidden_size, self.output_size = hidden_size, output_size
        self.activation = ACTIVATIONS[activation]
        self.output_activation = ACTIVATIONS.get(output_activation)
        scale = hidden_size ** -0.5
        self.W_hh = nn.Parameter(torch.randn(hidden_size, hidden_size) * scale * 0.5)
        self.W_hx = nn.Parameter(torch.randn(hidden_size, input_size) * input_size ** -0.5)
        # slide passes gradient only inside (0, 1): start the hidden units in the middle of that range
        self.b_h = nn.Parameter(torch.full((hidden_size,), 0.5 if activation == "slide" else 0.0))
        if output_size is not None:
            self.W_yh = nn.Parameter(torch.randn(output_size, hidden_size) * scale)
            self.b_y = nn.Parameter(torch.zeros(output_size))

    def drive(self, x):
        """W_hx x_t + b_h for all steps at once: (B, T, input_size) -> (B, T, hidden_size)."""
        return x @ self.W_hx.T + self.b_h

    def step(self, h, drive_t):
        """One recurrence step: h_t from h_(t-1) (B, hidden) and that step's drive (B, hidden)."""
        return self.activation(h @ self.W_hh.T + drive_t)

    def forward(self, x, h0=None):
        B, T, _ = x.shape
        h = x.new_zeros(B, self.hidden_size) if h0 is None else h0
        drive = self.drive(x)
        hs = []
        for t in range(T):
            h = self.step(h, drive[:, t])
            hs.append(h)
        h = torch.stack(hs, dim=1)  # (B, T, hidden)
        if self.output_size is None:
            return None, h
        y = h @ self.W_yh.T + self.b_y
        return (y if self.output_activation is None else self.output_activation(y)), h


class RecurrentLM(LanguageModel):
    """What the recurrent language models share: embedding, loss and optimizer groups (the rest of the interface,
    generation included, is LanguageModel's)."""

    def __init__(self, config):
        super().__init__()
        self.block_size = config.block_size
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = Dropout(config.embd_pdrop)

    def configure_optimizers(self, train_config):
        """Weight decay on the recurrent and output matrices, none on biases and the embedding."""
        if train_config.optimizer != "adamw":
            raise UserError(f"--trainer.optimizer={train_config.optimizer} is for the GPT's blocks; the recurrent "
                            f"models train with adamw")
        decay = {n for n, p in self.named_parameters() if p.dim() == 2 and not n.startswith("wte")}
        return adamw_with_decay(self, decay, train_config)

    def forward(self, idx, targets=None):
        logits = self.logits(idx)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss


class RNNLM(RecurrentLM):
    """Embedding -> n_layer Elman layers (each feeding its y to the next) -> logits. The hidden size is n_embd."""

    def __init__(self, config):
        super().__init__(config)
        sizes = [config.n_embd] * config.n_layer + [config.vocab_size]
        self.layers = nn.ModuleList([ElmanRNN(sizes[i], config.n_embd, sizes[i + 1], config.rnn_activation)
                                     for i in range(config.n_layer)])

    def flops_per_token(self, T):
        """Training FLOPs per token: 6 per weight that multiplies (the embedding only looks up), as for GPT."""
        return 6 * (self.num_params() - self.wte.weight.numel())

    def run(self, idx, state=None):
        """Logits (B, T, vocab) and each layer's last hidden state, starting from `state` (None: zeros)."""
        x = self.drop(self.wte(idx))
        last = []
        for i, layer in enumerate(self.layers):
            x, h = layer(x, None if state is None else state[i])
            last.append(h[:, -1])
        return x, last

    def logits(self, idx):
        return self.run(idx)[0]

    @torch.no_grad()
    def stream(self, idx, max_new_tokens, temperature=1.0, do_sample=False, top_k=None, top_p=None,
               use_cache=True, generator=None):
        """GPT.stream's contract. The hidden state is the whole memory: one step per new token, never a
        recomputation (use_cache is accepted for the common interface and changes nothing)."""
        check_sampling(temperature, top_k, top_p)
        logits, state = self.run(idx)
        for _ in range(max_new_tokens):
            idx_next = sample_next(logits[:, -1], temperature, do_sample, top_k, top_p, generator)
            yield idx_next
            logits, state = self.run(idx_next, state)


class BiRNNLM(RecurrentLM):
    """The writeup's bidirectional RNN as a language model, in form (a) `invalid` or (b) `prefix` (see above)."""

    # the two RNNs' output layers, which h_t = [f_t; g_t] never read, were parameters once: checkpoints of then
    # hold them, and loading drops them
    RETIRED_KEYS = ("forward_rnn.W_yh", "forward_rnn.b_y", "backward_rnn.W_yh", "backward_rnn.b_y")

    def __init__(self, config, form):
        super().__init__(config)
        self.form = form
        H = config.n_embd
        self.forward_rnn = ElmanRNN(H, H, activation=config.rnn_activation)
        self.backward_rnn = ElmanRNN(H, H, activation=config.rnn_activation)
        self.head = nn.Linear(2 * H, config.vocab_size)

    def representations(self, x):
        """(B, T, 2H): position t holds h_t, the representation that predicts token t+1."""
        _, f = self.forward_rnn(x)  # f_t has read x_1..x_t
        if self.form == "invalid":
            _, g = self.backward_rnn(x.flip(1))
            g = g.flip(1)  # g_t has read x_T..x_t: the future, x_(t+1) included
            return torch.cat([f, g], dim=-1)
        # (b): for every prefix x_1..x_t, run the backward RNN over x_t, x_(t-1), .., x_1 and keep its last state
        # g_1. All T prefixes run as one batch of B*T sequences; step s reads x_(t-s) for the prefixes that
        # are long enough and leaves the shorter ones as they are: T steps over T sequences, O(T^2).
        B, T, H = x.shape
        t = torch.arange(T, device=x.device)
        g = x.new_zeros(B, T, H)
        drive = self.backward_rnn.drive(x)  # (B, T, H)
        for s in range(T):
            active = (t >= s)[None, :, None]  # prefixes ending at t have a token x_(t-s)
            g = torch.where(active, self.backward_rnn.step(g, drive[:, (t - s).clamp(min=0)]), g)
        return torch.cat([f, g], dim=-1)

    def logits(self, idx):
        # p(x_t | h_(t-1)): the targets are the inputs shifted by one, so position t-1's representation
        # gives the logits for x_t
        return self.head(self.representations(self.drop(self.wte(idx))))

    @torch.no_grad()
    def stream(self, idx, max_new_tokens, temperature=1.0, do_sample=False, top_k=None, top_p=None,
               use_cache=True, generator=None):
        """GPT.stream's contract; every step reruns the BiRNN over the last block_size tokens."""
        check_sampling(temperature, top_k, top_p)
        for _ in range(max_new_tokens):
            x = self.drop(self.wte(idx[:, -self.block_size:]))
            idx_next = sample_next(self.head(self.representations(x)[:, -1]), temperature, do_sample, top_k,
                                   top_p, generator)
            idx = torch.cat([idx, idx_next], dim=1)
            yield idx_next
