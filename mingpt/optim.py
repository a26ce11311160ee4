"""
The optimizers that configure_optimizers returns: AdamW with weight decay on the chosen parameters (minGPT's), and
torch's Muon for the blocks' matrices beside it, stepped as one (Optimizers).
"""

import torch


class Optimizers:
    """Several optimizers stepped as one (Muon for the blocks' matrices beside AdamW for the rest): the trainer sees
    one list of param_groups, one step, and one state dict holding each optimizer's under its name."""

    def __init__(self, **optimizers):
        self.optimizers = optimizers

    @property
    def param_groups(self):
        return [group for optimizer in self.optimizers.values() for group in optimizer.param_groups]

    def step(self):
        for optimizer in self.optimizers.values():
            optimizer.step()

    def zero_grad(self, set_to_none=True):
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state):
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[name])


def adamw_with_decay(model, decay, train_config, skip=frozenset()):
    """AdamW with weight decay on the parameters named in `decay` and none on the others (but those in `skip`)."""
    params = {name: p for name, p in model.named_parameters() if name not in skip}
    groups = [
        {"params": [params[n] for n in sorted(decay)], "weight_decay": train_config.weight_decay},
        {"params": [params[n] for n in sorted(params.keys() - decay)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=train_config.learning_rate, betas=train_config.betas)


def muon_and_adamw(model, matrices, decay, train_config):
    """torch's Muon (Jordan et al.: momentum orthogonalised by Newton-Schulz iterations, its default momentum) for
    the matrices named in `matrices`, at muon_lr, and adamw_with_decay for the other parameters, stepped as one.
    The schedule sets each group's lr to its lr_scale times the AdamW learning rate of the step."""
    params = dict(model.named_parameters())
    muon = torch.optim.Muon([params[n] for n in sorted(matrices)], lr=train_config.muon_lr,
                            weight_decay=train_config.weight_decay)
    muon.param_groups[0]["lr_scale"] = train_config.muon_lr / train_config.learning_rate
    return Optimizers(adamw=adamw_with_decay(model, decay, train_config, skip=matrices), muon=muon)
