#!/usr/bin/env python
"""Self-contained PyTorch re-implementation of the reference SASRec.pytorch, for speed baselines.

This re-states, in our own words, the math of pmixer/SASRec.pytorch (main branch ``model.py``,
``utils.py``, ``main.py``) so that recjax can be compared against "the reference PyTorch SASRec"
on the same machine, with the same data and the same hyper-parameters.  It is a benchmark
script, not part of the recjax package, and imports nothing from it.

What is reproduced (the reference's behaviour, including its quirks):

* Model (``SASRecRef``):
  - item embedding ``(num_items + 1, d)`` with ``padding_idx=0``, multiplied by ``sqrt(d)``;
  - learned positional embedding ``(maxlen + 1, d)`` with ``padding_idx=0``; position ids are
    ``1..L`` and are zeroed wherever the item id is 0 (left padding), so pads get no position;
  - embedding dropout, then the *timeline mask*: the hidden state of pad positions is multiplied
    by 0 after the embedding and after every block;
  - ``num_blocks`` blocks, each: ``Q = LN_attn(x)``; ``a = MHA(Q, x, x)`` with a boolean causal
    mask (``torch.nn.MultiheadAttention``, sequence-first layout, default ``need_weights=True``,
    attention dropout = dropout rate); ``x = Q + a``; ``x = LN_ffn(x)``;
    ``x = x + Dropout(Conv1d_k1(Dropout(ReLU(Conv1d_k1(x)))))`` (the point-wise feed-forward
    network adds its own input, i.e. the normalised state, as residual); ``x *= ~pad``;
  - a final ``LayerNorm`` (all LayerNorms use ``eps=1e-8``);
  - training logits = dot product of the final state with the embedding of the positive / the
    one sampled negative item at every position; inference logits = last-position state dotted
    with candidate item embeddings.
* Init: ``xavier_normal_`` on every parameter where it applies (>= 2-D), then rows 0 of the item
  and position tables set to zero.
* Loss: ``BCEWithLogitsLoss`` on positive logits (label 1) + on negative logits (label 0), both
  averaged over the non-pad target positions (``pos != 0``), plus ``l2_emb * ||item_emb||``
  (``l2_emb`` = 0 by default, kept in the graph as the reference does).
* Optimiser: Adam, lr 1e-3, betas (0.9, 0.98).
* Data: ``data_partition`` -- ``u i`` lines, chronological per user; users with < 3 interactions
  keep everything for training; otherwise leave-one-out (last -> test, second last -> valid).
* Sampler: per example a uniformly random user with > 1 training item; ``seq``/``pos``/``neg``
  arrays of length ``maxlen`` are filled right-aligned from the end of the user's training list;
  ``pos`` is the next item, ``neg`` a uniformly random item not in the user's training set.
  DIFFERENCE: the reference ``WarpSampler`` runs 3 ``multiprocessing`` workers that fill a queue
  in the background; here sampling runs in the main process with a seeded
  ``numpy.random.RandomState`` (deterministic for ``--seed``), and its time is measured
  separately (``sample_ms_mean``) and *included* in the end-to-end step time
  (``train_it_per_s``); ``model_it_per_s`` excludes it (closest to the reference with
  background workers on a machine with spare cores).
* One epoch = ``num_users // batch`` steps (as the reference ``main.py``).
* Sampled evaluation (``--eval``): the reference ``evaluate()`` -- up to 10000 random users with
  a test item; input = training items + the validation item, right-aligned; candidates = the
  test item + 100 random items not in the user's training set; one ``predict`` call per user;
  NDCG@10 / HR@10 of the test item's rank.  (Run under ``torch.no_grad()``, which the reference
  does not do; it changes speed only.)

What is added for benchmarking (not in the reference):

* Full-catalogue evaluation timing: every user with a test item is scored against all items in
  chunks of ``--eval_chunk`` users (``log2feats`` on the batch, last state @ item table, top-10
  and the rank of the test item); its time is always reported, its NDCG@10 / HR@10 (history
  items NOT excluded) only with ``--eval``.
* Peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) at each stage.
* One JSON line with everything on stdout (and in ``--json_out`` if given).

Example (the speed protocol: batch 128, hidden 50, 2 blocks, 1 head, dropout 0.2)::

    python benchmarks/sasrec_pytorch_reference.py --data=/work/shared/data/amazon_video/Video.txt \
        --maxlen=200 --hidden=50 --blocks=2 --heads=1 --batch=128 --dropout=0.2 --steps=60
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import sys
import time
from collections import defaultdict

import numpy as np
import torch

# --------------------------------------------------------------------------------------------
# Data (reference utils.data_partition)
# --------------------------------------------------------------------------------------------


def data_partition(path):
    """Leave-one-out split of a ``u i`` file (1-indexed ids, chronological per user)."""
    usernum = 0
    itemnum = 0
    user_items = defaultdict(list)
    with open(path, "r") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 2:
                continue
            u, i = int(parts[0]), int(parts[1])
            usernum = max(u, usernum)
            itemnum = max(i, itemnum)
            user_items[u].append(i)
    train, valid, test = {}, {}, {}
    for u, items in user_items.items():
        if len(items) < 3:
            train[u], valid[u], test[u] = items, [], []
        else:
            train[u], valid[u], test[u] = items[:-2], [items[-2]], [items[-1]]
    return train, valid, test, usernum, itemnum


# --------------------------------------------------------------------------------------------
# Sampler (reference utils.sample_function, run in-process)
# --------------------------------------------------------------------------------------------


class InProcessSampler:
    """Builds (user, seq, pos, neg) batches exactly like the reference worker, synchronously."""

    def __init__(self, train, usernum, itemnum, batch_size, maxlen, seed):
        self.train = train
        self.usernum = usernum
        self.itemnum = itemnum
        self.batch_size = batch_size
        self.maxlen = maxlen
        self.rng = np.random.RandomState(seed)
        self._sets = {}

    def _item_set(self, u):
        s = self._sets.get(u)
        if s is None:
            s = set(self.train[u])
            self._sets[u] = s
        return s

    def _neg(self, seen):
        t = self.rng.randint(1, self.itemnum + 1)
        while t in seen:
            t = self.rng.randint(1, self.itemnum + 1)
        return t

    def _one(self):
        rng = self.rng
        u = rng.randint(1, self.usernum + 1)
        while len(self.train.get(u, ())) <= 1:
            u = rng.randint(1, self.usernum + 1)
        hist = self.train[u]
        seq = np.zeros(self.maxlen, dtype=np.int32)
        pos = np.zeros(self.maxlen, dtype=np.int32)
        neg = np.zeros(self.maxlen, dtype=np.int32)
        nxt = hist[-1]
        idx = self.maxlen - 1
        seen = self._item_set(u)
        for i in reversed(hist[:-1]):
            seq[idx] = i
            pos[idx] = nxt
            if nxt != 0:
                neg[idx] = self._neg(seen)
            nxt = i
            idx -= 1
            if idx == -1:
                break
        return u, seq, pos, neg

    def next_batch(self):
        batch = [self._one() for _ in range(self.batch_size)]
        u, seq, pos, neg = zip(*batch)
        return np.array(u), np.array(seq), np.array(pos), np.array(neg)


# --------------------------------------------------------------------------------------------
# Model (reference model.py)
# --------------------------------------------------------------------------------------------


class PointWiseFeedForward(torch.nn.Module):
    """Two kernel-1 Conv1d layers with ReLU and dropout; adds its input back (residual)."""

    def __init__(self, hidden, dropout):
        super().__init__()
        self.conv1 = torch.nn.Conv1d(hidden, hidden, kernel_size=1)
        self.dropout1 = torch.nn.Dropout(p=dropout)
        self.relu = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv1d(hidden, hidden, kernel_size=1)
        self.dropout2 = torch.nn.Dropout(p=dropout)

    def forward(self, x):  # x: (B, L, C); Conv1d wants (B, C, L)
        h = self.conv1(x.transpose(-1, -2))
        h = self.dropout1(h)
        h = self.relu(h)
        h = self.dropout2(self.conv2(h))
        out = h.transpose(-1, -2)
        out += x
        return out


class SASRecRef(torch.nn.Module):
    def __init__(self, item_num, maxlen, hidden, blocks, heads, dropout, device="cpu"):
        super().__init__()
        self.item_num = item_num
        self.dev = device
        self.item_emb = torch.nn.Embedding(item_num + 1, hidden, padding_idx=0)
        self.pos_emb = torch.nn.Embedding(maxlen + 1, hidden, padding_idx=0)
        self.emb_dropout = torch.nn.Dropout(p=dropout)
        self.attention_layernorms = torch.nn.ModuleList()
        self.attention_layers = torch.nn.ModuleList()
        self.forward_layernorms = torch.nn.ModuleList()
        self.forward_layers = torch.nn.ModuleList()
        self.last_layernorm = torch.nn.LayerNorm(hidden, eps=1e-8)
        for _ in range(blocks):
            self.attention_layernorms.append(torch.nn.LayerNorm(hidden, eps=1e-8))
            self.attention_layers.append(torch.nn.MultiheadAttention(hidden, heads, dropout))
            self.forward_layernorms.append(torch.nn.LayerNorm(hidden, eps=1e-8))
            self.forward_layers.append(PointWiseFeedForward(hidden, dropout))

    def log2feats(self, log_seqs):
        """log_seqs: numpy int array (B, L) of item ids, 0 = pad.  Returns (B, L, C)."""
        ids = torch.LongTensor(log_seqs).to(self.dev)
        x = self.item_emb(ids)
        x *= self.item_emb.embedding_dim ** 0.5
        B, L = log_seqs.shape
        poss = np.tile(np.arange(1, L + 1), [B, 1])
        poss *= log_seqs != 0
        x += self.pos_emb(torch.LongTensor(poss).to(self.dev))
        x = self.emb_dropout(x)

        pad = torch.BoolTensor(log_seqs == 0).to(self.dev)
        keep = ~pad.unsqueeze(-1)
        x *= keep

        causal_block = ~torch.tril(torch.ones((L, L), dtype=torch.bool, device=self.dev))
        for i in range(len(self.attention_layers)):
            x = torch.transpose(x, 0, 1)  # (L, B, C): MHA is sequence-first
            q = self.attention_layernorms[i](x)
            attn_out, _ = self.attention_layers[i](q, x, x, attn_mask=causal_block)
            x = q + attn_out
            x = torch.transpose(x, 0, 1)
            x = self.forward_layernorms[i](x)
            x = self.forward_layers[i](x)
            x *= keep
        return self.last_layernorm(x)

    def forward(self, user_ids, log_seqs, pos_seqs, neg_seqs):
        feats = self.log2feats(log_seqs)
        pos_e = self.item_emb(torch.LongTensor(pos_seqs).to(self.dev))
        neg_e = self.item_emb(torch.LongTensor(neg_seqs).to(self.dev))
        return (feats * pos_e).sum(dim=-1), (feats * neg_e).sum(dim=-1)

    def predict(self, user_ids, log_seqs, item_indices):
        feats = self.log2feats(log_seqs)
        last = feats[:, -1, :]
        cand = self.item_emb(torch.LongTensor(item_indices).to(self.dev))
        return cand.matmul(last.unsqueeze(-1)).squeeze(-1)


def init_like_reference(model):
    for _, p in model.named_parameters():
        try:
            torch.nn.init.xavier_normal_(p.data)
        except ValueError:  # 1-D tensors (biases, LayerNorm) keep their default init
            pass
    model.pos_emb.weight.data[0, :] = 0
    model.item_emb.weight.data[0, :] = 0


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def eval_input(train_u, valid_u, maxlen):
    seq = np.zeros(maxlen, dtype=np.int32)
    idx = maxlen - 1
    seq[idx] = valid_u[0]
    idx -= 1
    for i in reversed(train_u):
        if idx == -1:
            break
        seq[idx] = i
        idx -= 1
    return seq


def evaluate_sampled(model, dataset, maxlen, seed):
    """Reference evaluate(): 100 sampled negatives, NDCG@10 / HR@10 on up to 10000 users."""
    train, valid, test, usernum, itemnum = dataset
    py_rng = random.Random(seed)
    np_rng = np.random.RandomState(seed)
    if usernum > 10000:
        users = py_rng.sample(range(1, usernum + 1), 10000)
    else:
        users = range(1, usernum + 1)
    ndcg = hit = 0.0
    n = 0
    with torch.no_grad():
        for u in users:
            if len(train.get(u, ())) < 1 or len(test.get(u, ())) < 1:
                continue
            seq = eval_input(train[u], valid[u], maxlen)
            rated = set(train[u])
            rated.add(0)
            cands = [test[u][0]]
            for _ in range(100):
                t = np_rng.randint(1, itemnum + 1)
                while t in rated:
                    t = np_rng.randint(1, itemnum + 1)
                cands.append(t)
            scores = -model.predict(np.array([u]), np.array([seq]), np.array(cands))[0]
            rank = scores.argsort().argsort()[0].item()
            n += 1
            if rank < 10:
                ndcg += 1.0 / math.log2(rank + 2)
                hit += 1
    return ndcg / max(n, 1), hit / max(n, 1), n


def evaluate_full(model, dataset, maxlen, chunk):
    """Score every test user against the whole catalogue, in user chunks."""
    train, valid, test, usernum, itemnum = dataset
    users = [u for u in range(1, usernum + 1) if len(train.get(u, ())) >= 1 and len(test.get(u, ())) >= 1]
    ndcg = hit = 0.0
    with torch.no_grad():
        table = model.item_emb.weight  # (num_items + 1, C); row 0 = pad, masked below
        for s in range(0, len(users), chunk):
            us = users[s : s + chunk]
            seqs = np.stack([eval_input(train[u], valid[u], maxlen) for u in us])
            tgt = torch.as_tensor([test[u][0] for u in us], dtype=torch.long)
            last = model.log2feats(seqs)[:, -1, :]
            scores = last @ table.T  # (U, I+1)
            scores[:, 0] = -float("inf")
            torch.topk(scores, 10, dim=1)  # timed like a real top-10 retrieval
            tscore = scores.gather(1, tgt[:, None])
            rank = (scores > tscore).sum(dim=1)
            r = rank.numpy()
            inside = r < 10
            hit += float(inside.sum())
            ndcg += float((1.0 / np.log2(r[inside] + 2.0)).sum())
    n = len(users)
    return ndcg / max(n, 1), hit / max(n, 1), n


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def peak_rss_mb():
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return round(kb / 1024.0, 1)


def pct(xs, q):
    return float(np.percentile(np.asarray(xs), q)) if xs else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="`u i` interaction file (SASRec format)")
    ap.add_argument("--maxlen", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=50)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--l2_emb", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=60, help="training steps when --epochs is 0")
    ap.add_argument("--epochs", type=int, default=0, help="if > 0, train this many full epochs")
    ap.add_argument("--warmup", type=int, default=5, help="first steps excluded from timing")
    ap.add_argument("--eval", action="store_true", help="also compute NDCG@10/HR@10")
    ap.add_argument("--no_full_eval", action="store_true", help="skip full-catalogue eval timing")
    ap.add_argument("--eval_chunk", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json_out", default=None, help="also write the JSON result here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    cores = os.cpu_count() or 1
    threads = args.threads if args.threads > 0 else cores
    torch.set_num_threads(threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    dataset = data_partition(args.data)
    train, valid, test, usernum, itemnum = dataset
    load_s = time.perf_counter() - t0
    n_train_users = len(train)
    mean_train_len = sum(len(v) for v in train.values()) / max(n_train_users, 1)
    num_batches = n_train_users // args.batch
    rss_after_data = peak_rss_mb()
    log(f"data: users={usernum} items={itemnum} mean_train_len={mean_train_len:.2f} "
        f"batches/epoch={num_batches} load={load_s:.2f}s")

    model = SASRecRef(itemnum, args.maxlen, args.hidden, args.blocks, args.heads, args.dropout)
    init_like_reference(model)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    bce = torch.nn.BCEWithLogitsLoss()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98))
    sampler = InProcessSampler(train, usernum, itemnum, args.batch, args.maxlen, args.seed)

    total_steps = args.epochs * num_batches if args.epochs > 0 else args.steps
    warmup = min(args.warmup, max(total_steps - 1, 0))
    sample_t, model_t, step_t, losses = [], [], [], []
    t_train0 = time.perf_counter()
    for step in range(total_steps):
        ts = time.perf_counter()
        u, seq, pos, neg = sampler.next_batch()
        tm = time.perf_counter()
        pos_logits, neg_logits = model(u, seq, pos, neg)
        pos_labels = torch.ones(pos_logits.shape)
        neg_labels = torch.zeros(neg_logits.shape)
        opt.zero_grad()
        where = np.where(pos != 0)
        loss = bce(pos_logits[where], pos_labels[where])
        loss = loss + bce(neg_logits[where], neg_labels[where])
        for p in model.item_emb.parameters():
            loss = loss + args.l2_emb * torch.norm(p)
        loss.backward()
        opt.step()
        lv = loss.item()
        te = time.perf_counter()
        losses.append(lv)
        if step >= warmup:
            sample_t.append(tm - ts)
            model_t.append(te - tm)
            step_t.append(te - ts)
        if not args.quiet and (step % 20 == 0 or step == total_steps - 1):
            log(f"step {step}/{total_steps} loss={lv:.4f} step={1000 * (te - ts):.1f}ms "
                f"(sample {1000 * (tm - ts):.1f}ms)")
    train_wall_s = time.perf_counter() - t_train0
    rss_after_train = peak_rss_mb()

    measured = len(step_t)
    mean_step = float(np.mean(step_t)) if step_t else float("nan")
    mean_model = float(np.mean(model_t)) if model_t else float("nan")
    it_s = 1.0 / mean_step if step_t else None
    model_it_s = 1.0 / mean_model if model_t else None

    result = {
        "bench": "sasrec_pytorch_reference",
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": cores,
        "argv": sys.argv if argv is None else [sys.argv[0]] + list(argv),
        "config": {
            "data": args.data, "maxlen": args.maxlen, "hidden": args.hidden,
            "blocks": args.blocks, "heads": args.heads, "batch": args.batch,
            "dropout": args.dropout, "lr": args.lr, "betas": [0.9, 0.98],
            "l2_emb": args.l2_emb, "seed": args.seed,
        },
        "sampler": "in-process numpy RandomState (reference uses 3 multiprocessing workers)",
        "dataset": {
            "users": usernum, "items": itemnum, "train_users": n_train_users,
            "mean_train_len": round(mean_train_len, 3), "load_s": round(load_s, 3),
        },
        "num_params": n_params,
        "num_batches_per_epoch": num_batches,
        "steps": total_steps,
        "epochs_trained": (total_steps / num_batches) if num_batches else None,
        "warmup_steps": warmup,
        "measured_steps": measured,
        "train_it_per_s": round(it_s, 4) if it_s else None,
        "train_examples_per_s": round(it_s * args.batch, 2) if it_s else None,
        "model_it_per_s": round(model_it_s, 4) if model_it_s else None,
        "model_examples_per_s": round(model_it_s * args.batch, 2) if model_it_s else None,
        "step_ms_mean": round(1000 * mean_step, 2),
        "step_ms_median": round(1000 * pct(step_t, 50), 2) if step_t else None,
        "step_ms_p90": round(1000 * pct(step_t, 90), 2) if step_t else None,
        "sample_ms_mean": round(1000 * float(np.mean(sample_t)), 3) if sample_t else None,
        "epoch_time_s_est": round(num_batches * mean_step, 2) if step_t else None,
        "epoch_time_s_est_model_only": round(num_batches * mean_model, 2) if model_t else None,
        "epoch_time_s_measured": (round(train_wall_s / args.epochs, 2) if args.epochs > 0 else None),
        "train_wall_s": round(train_wall_s, 2),
        "loss_first": round(losses[0], 5) if losses else None,
        "loss_last": round(losses[-1], 5) if losses else None,
        "loss_last10_mean": round(float(np.mean(losses[-10:])), 5) if losses else None,
    }

    model.eval()
    if not args.no_full_eval:
        te0 = time.perf_counter()
        f_ndcg, f_hr, f_n = evaluate_full(model, dataset, args.maxlen, args.eval_chunk)
        full_s = time.perf_counter() - te0
        result["full_eval_s"] = round(full_s, 3)
        result["full_eval_users"] = f_n
        result["full_eval_chunk"] = args.eval_chunk
        result["full_eval_users_per_s"] = round(f_n / full_s, 1) if full_s > 0 else None
        if args.eval:
            result["full_ndcg10"] = round(f_ndcg, 5)
            result["full_hr10"] = round(f_hr, 5)
        log(f"full-catalogue eval: {f_n} users x {itemnum} items in {full_s:.2f}s")
    result["peak_rss_mb_after_full_eval"] = peak_rss_mb()

    if args.eval:
        te0 = time.perf_counter()
        s_ndcg, s_hr, s_n = evaluate_sampled(model, dataset, args.maxlen, args.seed)
        result["sampled_eval_s"] = round(time.perf_counter() - te0, 3)
        result["sampled_eval_users"] = s_n
        result["sampled_ndcg10"] = round(s_ndcg, 5)
        result["sampled_hr10"] = round(s_hr, 5)
        log(f"sampled-100 eval: NDCG@10={s_ndcg:.4f} HR@10={s_hr:.4f} on {s_n} users")

    result["peak_rss_mb_after_data"] = rss_after_data
    result["peak_rss_mb_after_train"] = rss_after_train
    result["peak_rss_mb"] = peak_rss_mb()

    line = json.dumps(result, sort_keys=False)
    print(line, flush=True)
    if args.json_out:
        d = os.path.dirname(os.path.abspath(args.json_out))
        os.makedirs(d, exist_ok=True)
        with open(args.json_out, "w") as fh:
            fh.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
