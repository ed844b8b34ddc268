"""Shared building blocks. Every model family is assembled from these; none keeps its own copy.

Conventions: sequences are (B, L, d); masks are (B, L) bool with True on valid positions and the
valid positions first. Every block zeroes padded positions before anything that mixes positions
(convolution, attention, pooling), so a sample gives the same output alone or padded in a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NEG_INF = float("-inf")


def masked_fill_padding(x: Tensor, mask: Tensor) -> Tensor:
    """Zero the padded positions of a (B, L, d) sequence."""
    return x * mask.unsqueeze(-1).to(x.dtype)


def zero_padding_(x: Tensor, mask: Tensor) -> Tensor:
    """`masked_fill_padding` in place, for a fresh tensor (the output of a linear, an addition or a
    product) that nothing else holds and no backward reads: one allocation fewer, the same bits."""
    return x.mul_(mask.unsqueeze(-1).to(x.dtype))


def add_residual(x: Tensor, update: Tensor) -> Tensor:
    """`x + update`. Without autograd (inference) the sum is written into `update`, a fresh tensor
    the caller no longer needs: one allocation fewer per residual, and the same bits (IEEE addition
    is commutative)."""
    if torch.is_grad_enabled():
        return x + update
    return update.add_(x)


def masked_softmax(logits: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax with padded positions at exactly zero probability."""
    return torch.softmax(logits.masked_fill(~mask, NEG_INF), dim=dim)


def masked_log_softmax(logits: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    return torch.log_softmax(logits.masked_fill(~mask, NEG_INF), dim=dim)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid positions of a (B, L, d) sequence -> (B, d)."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Max over valid positions of a (B, L, d) sequence -> (B, d)."""
    return x.masked_fill(~mask.unsqueeze(-1), NEG_INF).amax(1)


POSITIONS = ("absolute", "relative", "none")


class PositionalEmbedding(nn.Module):
    """Learned positions, added to the input.

    "absolute" (the default): row t of the table for position t. "relative": position t of a sequence
    of n valid positions reads row round(t * (max_len - 1) / (n - 1)), so a clip's embedding says where
    in its own video it lies (start, middle, end), whatever the video's length. "none": nothing added.
    """

    def __init__(self, d: int, max_len: int, mode: str = "absolute"):
        super().__init__()
        if mode not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {mode!r}")
        self.mode, self.max_len = mode, max_len
        if mode != "none":
            self.table = nn.Embedding(max_len, d)
            nn.init.normal_(self.table.weight, std=0.02)  # small next to LayerNorm-ed features

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.mode == "none":
            return x
        positions = torch.arange(x.shape[1], device=x.device)
        if self.mode == "absolute" or mask is None:
            return x + self.table(positions).unsqueeze(0)
        last = (mask.sum(1, keepdim=True) - 1).clamp_min(1)  # (B, 1)
        rows = torch.round(positions * (self.max_len - 1) / last).long().clamp_max(self.max_len - 1)
        return x + self.table(rows)


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, d: int, kernel_size: int):
        super().__init__()
        self.depthwise = nn.Conv1d(d, d, kernel_size, padding=kernel_size // 2, groups=d, bias=False)
        self.pointwise = nn.Conv1d(d, d, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, L, d)
        if torch.compiler.is_compiling():
            return self.taps(x)
        # The (B, L, d) sequence seen as a channels-last (B, d, 1, L) image, without a copy: oneDNN's
        # channels-last depthwise kernel is about 10x faster on the CPU than Conv1d on the transposed
        # sequence, with the same result; the 1x1 conv is a matmul over d.
        size = self.depthwise.kernel_size[0]
        image = x.transpose(1, 2).unsqueeze(2)
        weight = self.depthwise.weight.unsqueeze(2)
        mixed = F.conv2d(image, weight, padding=(0, size // 2), groups=weight.shape[0]).squeeze(2)
        return F.linear(mixed.transpose(1, 2), self.pointwise.weight[:, :, 0], self.pointwise.bias)

    def taps(self, x: Tensor) -> Tensor:
        """The same convolution written as shifted multiply-adds over (B, L, d), used under
        torch.compile: Inductor fuses the taps with what surrounds them into one kernel, where CUDA's
        depthwise-conv kernel alone took 36% of the compiled student's time at batch 16,384 on an H200
        (benchmarks/gpu_profile.py), and no layout transposes are needed. Eager runs keep the conv
        kernels, which are faster there on the CPU."""
        weight = self.depthwise.weight[:, 0, :]  # (d, k)
        size, length = weight.shape[1], x.shape[1]
        padded = F.pad(x, (0, 0, size // 2, size // 2))
        mixed = padded[:, :length] * weight[:, 0]
        for i in range(1, size):
            mixed = mixed + padded[:, i : i + length] * weight[:, i]
        return F.linear(mixed, self.pointwise.weight[:, :, 0], self.pointwise.bias)


class ConvBlock(nn.Module):
    """Residual stack of LayerNorm -> depthwise-separable conv -> ReLU -> dropout (QANet/VSLNet)."""

    def __init__(self, d: int, n_layers: int = 4, kernel_size: int = 7, dropout: float = 0.1):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(n_layers))
        self.convs = nn.ModuleList(DepthwiseSeparableConv(d, kernel_size) for _ in range(n_layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        keep = mask.unsqueeze(-1).to(x.dtype)
        for norm, conv in zip(self.norms, self.convs):
            # in place on fresh outputs whose backward does not read them (LayerNorm, the pointwise
            # linear): the same maths as masked_fill_padding and F.relu, fewer passes over memory
            h = norm(x).mul_(keep)
            x = add_residual(x, self.dropout(F.relu(conv(h), inplace=True)))
        return x * keep


def matmul_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, dropout: float = 0.0) -> Tensor:
    """Scaled dot-product attention as two batched matmuls around a masked softmax, (B, H, L, e) with
    `mask` (B, L) over the keys: the maths of F.scaled_dot_product_attention, in ops that Inductor can
    fuse instead of a flash kernel whose tiles are mostly padding at head size 16 and L = 64."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    probs = masked_softmax(scores, mask[:, None, None, :])
    return F.dropout(probs, dropout) @ v if dropout else probs @ v


class SelfAttentionBlock(nn.Module):
    """Pre-norm multi-head self-attention + feed-forward, with key padding masked out.

    `matmul_attention = True` (per instance) computes the attention with `matmul_attention` instead of
    F.scaled_dot_product_attention; `emtm bench`'s `attn=matmul` variant sets it on a copy of a model."""

    matmul_attention = False

    def __init__(self, d: int, n_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(d, d))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = add_residual(x, self.dropout(self.self_attention(self.norm1(x), mask)))
        x = add_residual(x, self.dropout(self.ffn(self.norm2(x))))
        return zero_padding_(x, mask)

    def self_attention(self, h: Tensor, mask: Tensor) -> Tensor:
        """nn.MultiheadAttention's maths with its own weights, run by F.scaled_dot_product_attention:
        the same result, about 2x faster on CPU than its masked-softmax path (benchmarks/bench.py)."""
        attn = self.attn
        batch, length, d = h.shape
        qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, attn.num_heads, d // attn.num_heads).permute(2, 0, 3, 1, 4)
        dropout = attn.dropout if self.training else 0.0
        if self.matmul_attention:
            out = matmul_attention(q, k, v, mask, dropout)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], dropout_p=dropout)
        return attn.out_proj(out.transpose(1, 2).reshape(batch, length, d))


class FeatureEncoder(nn.Module):
    """Positions -> conv block -> self-attention: SeqPAN's feature encoder."""

    def __init__(
        self,
        d: int,
        max_len: int,
        n_heads: int = 8,
        dropout: float = 0.1,
        n_conv: int = 4,
        positions: str = "absolute",
    ):
        super().__init__()
        self.pos = PositionalEmbedding(d, max_len, positions)
        self.conv = ConvBlock(d, n_conv, 7, dropout)
        self.attn = SelfAttentionBlock(d, n_heads, dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.conv(zero_padding_(self.pos(x, mask), mask), mask)
        return self.attn(x, mask)


class CharCNN(nn.Module):
    """Character embeddings -> convolutions of widths 1..4 -> max over the characters of each word."""

    def __init__(self, n_chars: int, char_dim: int = 50, channels: tuple[int, ...] = (10, 20, 30, 40)):
        super().__init__()
        self.embed = nn.Embedding(n_chars, char_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(char_dim, c, k) for k, c in enumerate(channels, start=1))
        self.out_dim = sum(channels)
        # each output channel's window width (a plain tuple: models are built on the meta device)
        self.widths = tuple(k for k, c in enumerate(channels, start=1) for _ in range(c))

    def forward(self, char_ids: Tensor) -> Tensor:  # (B, N, C) -> (B, N, out_dim)
        b, n, c = char_ids.shape
        ids = char_ids.reshape(b * n, c)
        x = self.embed(ids)  # (BN, C, char_dim)
        # a window counts if it starts on a real character; words with no characters (padding) keep all
        starts = ids > 0
        starts = starts | ~starts.any(-1, keepdim=True)
        if torch.compiler.is_compiling():
            pooled = self.pooled_windows(x, starts)
        else:
            pooled = self.pooled_convs(x, starts)
        return pooled.reshape(b, n, self.out_dim)

    def pooled_convs(self, x: Tensor, starts: Tensor) -> Tensor:
        """(BN, C, char_dim) embeddings, (BN, C) window starts -> (BN, out_dim): one Conv1d per width."""
        x = x.transpose(1, 2)
        pooled = []
        for conv in self.convs:
            h = F.relu(conv(x))  # (BN, c_k, C-k+1)
            pooled.append(h.masked_fill(~starts[:, None, : h.shape[-1]], 0.0).amax(-1))
        return torch.cat(pooled, -1)

    def pooled_windows(self, x: Tensor, starts: Tensor) -> Tensor:
        """`pooled_convs` as one matmul over the unfolded windows of the widest kernel, used under
        torch.compile: each narrower kernel's weights are zero-padded to that width, and windows that
        run past the last character position are masked per channel. On an H200 the compiled student
        spent 15% of its time in cuDNN's layout transforms around the four convolutions
        (benchmarks/gpu_profile.py); this is one matmul and one fused pooling kernel instead."""
        widest = self.convs[-1].kernel_size[0]
        length = x.shape[1]
        windows = F.pad(x, (0, 0, 0, widest - 1)).unfold(1, widest, 1).flatten(2)  # (BN, C, char_dim * K)
        weight = torch.cat([F.pad(conv.weight, (0, widest - conv.kernel_size[0])) for conv in self.convs])
        bias = torch.cat([conv.bias for conv in self.convs])
        h = F.relu(F.linear(windows, weight.flatten(1), bias))  # (BN, C, out_dim)
        widths = torch.tensor(self.widths, device=x.device)
        fits = torch.arange(length, device=x.device)[:, None] <= length - widths  # (C, out_dim)
        return h.masked_fill(~(starts[:, :, None] & fits), 0.0).amax(1)


class WordEmbedding(nn.Module):
    """Frozen word vectors for the vocabulary, a learned UNK row (id 1), and PAD (id 0) at zero."""

    def __init__(self, vectors: Tensor):
        super().__init__()
        self.register_buffer("vectors", vectors.float().clone())
        self.unk = nn.Parameter(torch.zeros(vectors.shape[1]))
        nn.init.normal_(self.unk, std=0.1)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def forward(self, word_ids: Tensor) -> Tensor:
        x = F.embedding(word_ids, self.vectors)
        return torch.where((word_ids == 1).unsqueeze(-1), self.unk.to(x.dtype), x)


class ContextQueryAttention(nn.Module):
    """Trilinear context-query attention (BiDAF/QANet/VSLNet): [c; c2q; c*c2q; c*q2c] -> d."""

    def __init__(self, d: int, dropout: float = 0.1):
        super().__init__()
        self.w_c = nn.Linear(d, 1, bias=False)
        self.w_q = nn.Linear(d, 1, bias=False)
        self.w_cq = nn.Parameter(torch.empty(d).uniform_(-(d**-0.5), d**-0.5))
        self.out = nn.Linear(4 * d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, context: Tensor, query: Tensor, c_mask: Tensor, q_mask: Tensor) -> Tensor:
        c, q = self.dropout(context), self.dropout(query)
        score = self.w_c(c) + self.w_q(q).transpose(1, 2) + (c * self.w_cq) @ q.transpose(1, 2)  # (B, Lc, Lq)
        c2q_attn = masked_softmax(score, q_mask.unsqueeze(1), dim=2)
        q2c_attn = masked_softmax(score, c_mask.unsqueeze(2), dim=1)
        c2q = c2q_attn @ query
        q2c = (c2q_attn @ q2c_attn.transpose(1, 2)) @ context
        fused = self.out(torch.cat([context, c2q, context * c2q, context * q2c], -1))
        return zero_padding_(fused, c_mask)


class WeightedPool(nn.Module):
    """Attention pooling of a sequence into one vector with a learned scoring vector."""

    def __init__(self, d: int):
        super().__init__()
        self.score = nn.Linear(d, 1, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        weights = masked_softmax(self.score(x).squeeze(-1), mask)
        return (weights.unsqueeze(-1) * x).sum(1)


def fusion_features(video: Tensor, query: Tensor) -> Tensor:
    """[v, q, v*q, v-q] of (B, L, d) clips and a (B, d) pooled query tiled over them -> (B, L, 4d)."""
    q = query.unsqueeze(1).expand_as(video)
    return torch.cat([video, q, video * q, video - q], -1)


class PooledFusion(nn.Module):
    """The pooled query fused into every clip, [v, q, v*q, v-q] -> Linear -> ReLU: the fusion of the
    recurrent bar (`bigru`), where every clip carries the sentence into every later layer."""

    def __init__(self, d: int, dropout: float = 0.1):
        super().__init__()
        self.pool = WeightedPool(d)
        self.out = nn.Sequential(nn.Linear(4 * d, d), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, video: Tensor, query: Tensor, v_mask: Tensor, q_mask: Tensor) -> Tensor:
        return zero_padding_(self.out(fusion_features(video, self.pool(query, q_mask))), v_mask)


class QueryConcat(nn.Module):
    """Pool the query, tile it over time, concatenate to the video and project to d (SeqPAN cq_concat)."""

    def __init__(self, d: int):
        super().__init__()
        self.pool = WeightedPool(d)
        self.out = nn.Linear(2 * d, d)

    def forward(self, video: Tensor, query: Tensor, v_mask: Tensor, q_mask: Tensor) -> Tensor:
        pooled = self.pool(query, q_mask).unsqueeze(1).expand_as(video)
        return zero_padding_(self.out(torch.cat([video, pooled], -1)), v_mask)


class SequenceMatching(nn.Module):
    """Per-clip 4-class tagging (outside / begin / inside / end) with label embeddings added back."""

    def __init__(self, d: int, n_classes: int = 4):
        super().__init__()
        self.classifier = nn.Linear(d, n_classes)
        self.label_embeddings = nn.Parameter(torch.empty(n_classes, d))
        nn.init.orthogonal_(self.label_embeddings)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.classifier(x)
        soft_labels = torch.softmax(logits, -1) @ self.label_embeddings
        return zero_padding_(x + soft_labels, mask), logits


class ConditionedPredictor(nn.Module):
    """SeqPAN's predictor: start features = Enc(x), end features = Enc(start features); shared weights."""

    def __init__(
        self, d: int, max_len: int, n_heads: int = 8, dropout: float = 0.1, positions: str = "absolute"
    ):
        super().__init__()
        self.encoder = FeatureEncoder(d, max_len, n_heads, dropout, positions=positions)
        self.start_norm = nn.LayerNorm(d)
        self.end_norm = nn.LayerNorm(d)
        self.start_head = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, 1))
        self.end_head = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, 1))

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        start_feats = self.encoder(x, mask)
        end_feats = self.encoder(start_feats, mask)
        start_logits = self.start_head(torch.cat([self.start_norm(start_feats), x], -1)).squeeze(-1)
        end_logits = self.end_head(torch.cat([self.end_norm(end_feats), x], -1)).squeeze(-1)
        return start_logits, end_logits
