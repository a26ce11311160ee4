"""
Study 8, attention_analysis: the writeup's written questions on attention, checked numerically (float64).

1. Multiplicative attention k^T W_s q folds exactly into the query projection: W_q' = W_s W_q gives the same
   scores, so it adds no expressive power.
2. When is the attention matrix symmetric? The scores S = Q K^T are symmetric when W_q^T W_k is (tied
   projections, say); softmax then normalises each row, so A = softmax(S) is symmetric only when in addition
   every row of exp(S) has the same sum.
3. Two heads are not one head with the concatenated weights: one head adds the two heads' scores inside a
   single softmax; two heads take two softmaxes.
4. Can concatenated scoring w^T [k; q] and additive scoring v^T tanh(W [k; q]) fit the angle between k and q?
   Concatenated scoring is a sum of a function of k and a function of q, so it cannot; additive scoring can.

    python scripts/study_attention_analysis.py --scale quick|cpu|full [--results DIR]
"""

import math

import torch

from mingpt.experiments.study import Measurement, Study, study_args


def max_diff(a, b):
    return (a - b).abs().max().item()


def softmax_rows(S):
    return torch.softmax(S, dim=-1)


def checks(d=16, T=10, head_dim=8):
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64) / math.sqrt(shape[-1])  # noqa: E731
    X, W_q, W_k, W_s = rand(T, d), rand(d, d), rand(d, d), rand(d, d)
    Q, K = X @ W_q.T, X @ W_k.T
    rows = [dict(check="1. k^T W_s q equals k^T (W_s W_q) x: max |difference|",
                 value=max_diff(K @ W_s @ Q.T, K @ (X @ (W_s @ W_q).T).T), expect="0 (up to rounding)")]
    S_free = Q @ K.T
    S_tied = Q @ Q.T
    rows += [dict(check="2a. untied W_q, W_k: max |S - S^T|", value=max_diff(S_free, S_free.T), expect="> 0"),
             dict(check="2b. tied W_q = W_k: max |S - S^T|", value=max_diff(S_tied, S_tied.T), expect="0"),
             dict(check="2c. tied, softmax: max |A - A^T|",
                  value=max_diff(softmax_rows(S_tied), softmax_rows(S_tied).T), expect="> 0 (row sums differ)")]
    basis = torch.linalg.qr(rand(d, d))[0][:T]  # orthonormal inputs: S = I, equal row sums of exp(S)
    A_equal = softmax_rows(basis @ basis.T)
    rows.append(dict(check="2d. tied and equal row sums of exp(S): max |A - A^T|", value=max_diff(A_equal, A_equal.T),
                     expect="0"))
    Wq, Wk, Wv = rand(2 * head_dim, d), rand(2 * head_dim, d), rand(2 * head_dim, d)
    q, k, v = X @ Wq.T, X @ Wk.T, X @ Wv.T
    one_head = softmax_rows(q @ k.T / math.sqrt(2 * head_dim)) @ v
    h = slice(0, head_dim), slice(head_dim, 2 * head_dim)
    two_heads = torch.cat([softmax_rows(q[:, s] @ k[:, s].T / math.sqrt(head_dim)) @ v[:, s] for s in h], dim=-1)
    rows.append(dict(check="3. two heads vs one head with the concatenated weights: max |difference|",
                     value=max_diff(one_head, two_heads), expect="> 0"))
    return rows


def fit_angle(steps, n=2048, dim=2, hidden=32):
    """Fit the angle between unit vectors k and q with both scoring functions; returns R^2 and predictions."""
    g = torch.Generator().manual_seed(0)
    k = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)
    q = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)
    angle = torch.acos((k * q).sum(-1).clamp(-1, 1))
    kq = torch.cat([k, q], dim=-1)
    torch.manual_seed(0)
    concatenated = torch.nn.Linear(2 * dim, 1)
    additive = torch.nn.Sequential(torch.nn.Linear(2 * dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    out = {}
    for name, model in (("concatenated", concatenated), ("additive", additive)):
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(steps):
            loss = ((model(kq).squeeze(-1) - angle) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = model(kq).squeeze(-1)
        r2 = 1 - ((pred - angle) ** 2).sum().item() / ((angle - angle.mean()) ** 2).sum().item()
        out[name] = (r2, pred)
    return angle, out


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("attention_analysis", args)
    steps = 300 if args.scale == "quick" else 3000

    def compute():
        rows = checks()
        angle, fits = fit_angle(steps)
        rows += [dict(check=f"4. {name} scoring fits the angle between k and q: R^2", value=r2,
                      expect="about 0" if name == "concatenated" else "close to 1") for name, (r2, _) in fits.items()]
        for row in rows:
            print(f"{row['check']}: {row['value']:.3g} (expected {row['expect']})")
        rounded = lambda t: [round(v, 4) for v in t.tolist()]  # noqa: E731  the figure's points, a few KB
        return rows, {"angle": rounded(angle), "fits": {name: {"r2": r2, "prediction": rounded(pred)}
                                                        for name, (r2, pred) in fits.items()}}
    study.finish(study.run([Measurement("checks", compute, params=(steps,))]))


if __name__ == "__main__":
    main()
