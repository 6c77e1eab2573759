"""`MetaPolicy` against its previous implementation (``nn.MultiheadAttention`` over the
encoded peer slots), kept here privately: on the same weights the logits and values agree
to 1e-5, and seeded construction draws the same weights as before. Also the attention
against the folded formulation before it, and `algorithms.common.DistinctRows` (the network
run once per distinct row) against the plain forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from algorithms.policy import MetaPolicy, PolicyConfig, use_generator
from deliberation_env.observation import ObservationLayout


class _OldTrunk(nn.Module):
    """The trunk as it was: encode every peer slot, then ``nn.MultiheadAttention``."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        layout = ObservationLayout(cfg.max_peers)
        self.own_size = layout.summary.stop
        self.peers = layout.peers
        self.max_peers = cfg.max_peers
        self.peer_size = (layout.peers.stop - layout.peers.start) // cfg.max_peers
        h = cfg.hidden
        self.own = nn.Sequential(nn.Linear(self.own_size, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh())
        self.peer = nn.Sequential(nn.Linear(self.peer_size, h), nn.Tanh(), nn.Linear(h, h))
        self.null = nn.Parameter(torch.zeros(1, 1, h))
        self.attn = nn.MultiheadAttention(h, cfg.heads, batch_first=True)
        self.head = nn.Sequential(nn.Linear(2 * h, h), nn.Tanh(), nn.Linear(h, 3))
        logits = self.head[-1]
        assert isinstance(logits, nn.Linear)
        nn.init.orthogonal_(logits.weight, gain=0.01)
        nn.init.zeros_(logits.bias)
        self.value = None
        if cfg.value_head:
            inp = cfg.critic_state_size + 2 * h
            self.value = nn.Sequential(nn.Linear(inp, h), nn.Tanh(), nn.Linear(h, 1))

    def features(self, obs, emb):
        q = self.own(obs[:, : self.own_size])
        if emb is not None:
            q = q + emb
        peers = obs[:, self.peers].reshape(-1, self.max_peers, self.peer_size)
        kv = torch.cat([self.null.expand(len(obs), 1, -1), self.peer(peers)], dim=1)
        pad = torch.cat([peers.new_zeros(len(obs), 1), peers[..., 0]], dim=1) < 0.5
        attended, _ = self.attn(q[:, None, :], kv, kv, key_padding_mask=pad, need_weights=False)
        return torch.cat([q, attended[:, 0]], dim=-1)


class _OldPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.config = cfg
        n = 1 if cfg.share_parameters else cfg.num_agents
        self.trunks = nn.ModuleList(_OldTrunk(cfg) for _ in range(n))
        self.agent_embedding = (
            nn.Embedding(cfg.num_agents, cfg.hidden) if cfg.share_parameters else None
        )

    def _feats(self, obs):
        lead, (N, D) = obs.shape[:-2], obs.shape[-2:]
        flat = obs.reshape(-1, N, D)
        if self.agent_embedding is not None:
            emb = (
                self.agent_embedding.weight[:N]
                .expand(len(flat), N, -1)
                .reshape(-1, self.config.hidden)
            )
            f = self.trunks[0].features(flat.reshape(-1, D), emb).reshape(*lead, N, -1)
            return [(slice(None), self.trunks[0], f)]
        return [
            (i, t, t.features(flat[:, i], None).reshape(*lead, -1))
            for i, t in enumerate(self.trunks[:N])
        ]

    def forward(self, obs, mask):
        parts = [t.head(f) for _, t, f in self._feats(obs)]
        # One network per agent stacks along the agent axis even for one agent (the old
        # code returned [..., 3] there, and the mask then broadcast it: a shape bug).
        shared = self.agent_embedding is not None
        logits = parts[0] if shared else torch.stack(parts, dim=-2)
        return logits.masked_fill(mask < 0.5, -1e9)

    def value(self, obs, state=None):
        out = []
        for idx, t, f in self._feats(obs):
            if self.config.critic_state_size:
                glob = state[..., None, :].expand(*obs.shape[:-2], obs.shape[-2], state.shape[-1])
                glob = glob if idx == slice(None) else glob[..., idx, :]
                f = torch.cat([glob, f], dim=-1)
            out.append(t.value(f)[..., 0])
        return out[0] if self.agent_embedding is not None else torch.stack(out, dim=-1)


def _batch(cfg: PolicyConfig, n: int, rows: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    layout = ObservationLayout(cfg.max_peers)
    obs = torch.rand(rows, n, layout.peers.stop, generator=g) * 2 - 1
    peer = layout.peers.stop - layout.peers.start
    per = peer // cfg.max_peers
    # Presence flags: the first n - 1 slots are filled, plus random holes and full rows.
    present = (torch.arange(cfg.max_peers) < n - 1).float().expand(rows, n, -1).clone()
    present[: rows // 4] = (torch.rand(rows // 4, n, cfg.max_peers, generator=g) < 0.5).float()
    for j in range(cfg.max_peers):
        obs[..., layout.peers.start + j * per] = present[..., j]
    mask = (torch.rand(rows, n, 3, generator=g) < 0.8).to(torch.int8)
    mask[..., 0] = 1
    state = torch.randn(rows, layout.state_size, generator=g)
    return obs, mask, state


CONFIGS = [
    dict(num_agents=3),
    dict(num_agents=3, share_parameters=False),
    dict(num_agents=5, max_peers=4, hidden=32, heads=2, value_head=True),
    dict(num_agents=3, value_head=True, critic_state_size=ObservationLayout(4).state_size),
    dict(num_agents=1),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs", CONFIGS)
def test_outputs_match_previous_implementation(kwargs, dtype):
    """Within 1e-5 in float32; in float64 within 1e-10 (the same maths, reordered)."""
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    cfg = PolicyConfig(**kwargs)
    with use_generator(torch.Generator().manual_seed(1)):
        old = _OldPolicy(cfg)
    new = MetaPolicy(cfg)
    new.load_state_dict(old.state_dict())  # the same parameter names and shapes
    with torch.no_grad():  # trained-looking weights: the null key and biases matter too
        for p_old, p_new in zip(old.parameters(), new.parameters()):
            p_old.add_(0.1 * torch.randn_like(p_old))
            p_new.copy_(p_old)
    old, new = old.to(dtype), new.to(dtype)
    for n in sorted({1, min(2, cfg.num_agents), cfg.num_agents}):
        obs, mask, state = (x.to(dtype) if x.is_floating_point() else x for x in _batch(cfg, n))
        with torch.no_grad():
            assert torch.allclose(new(obs, mask), old(obs, mask), atol=tol, rtol=tol)
            if cfg.value_head:
                s = state if cfg.critic_state_size else None
                assert torch.allclose(new.value(obs, s), old.value(obs, s), atol=tol, rtol=tol)


@pytest.mark.parametrize("kwargs", CONFIGS[:3])
def test_seeded_weights_match_previous_implementation(kwargs):
    cfg = PolicyConfig(**kwargs)
    with use_generator(torch.Generator().manual_seed(7)):
        old = _OldPolicy(cfg)
    with use_generator(torch.Generator().manual_seed(7)):
        new = MetaPolicy(cfg)
    old_sd, new_sd = old.state_dict(), new.state_dict()
    assert list(old_sd) == list(new_sd)
    for k in old_sd:
        assert torch.equal(old_sd[k], new_sd[k]), k


def test_gradients_match_previous_implementation():
    cfg = PolicyConfig(num_agents=3, value_head=True)
    old = _OldPolicy(cfg)
    new = MetaPolicy(cfg)
    new.load_state_dict(old.state_dict())
    obs, mask, _ = _batch(cfg, 3)
    for net in (old, new):
        (net(obs, mask).log_softmax(-1)[..., 0].sum() + net.value(obs).sum()).backward()
    for (name, p_old), p_new in zip(old.named_parameters(), new.parameters()):
        if name.endswith(".null"):  # always masked out before: a zero gradient, now none
            assert p_new.grad is None and not p_old.grad.any()
            continue
        assert torch.allclose(p_old.grad, p_new.grad, atol=1e-5, rtol=1e-4), name


def test_sample_actions_match_categorical():
    """The rollout's sampler draws the numbers ``Categorical.sample`` drew before, with
    the same log-probabilities, bit for bit (the trajectories of a seed are unchanged)."""
    from algorithms.policy import sample
    from algorithms.rollout import sample_actions

    cfg = PolicyConfig()
    policy = MetaPolicy(cfg)
    obs, mask, _ = _batch(cfg, 3, rows=256)
    with torch.no_grad():
        logits = policy(obs, mask)
    dist = torch.distributions.Categorical(logits=logits)
    expected = sample(dist, torch.Generator().manual_seed(3))
    actions, logp = sample_actions(logits, torch.Generator().manual_seed(3))
    assert torch.equal(torch.as_tensor(actions), expected)
    assert torch.equal(torch.as_tensor(logp), dist.log_prob(expected))


def test_peer_attention_matches_batched_formulation():
    """`_PeerAttention` (keys and values in one product, elementwise scores) gives the
    outputs of the folded formulation it replaced (batched products per row), within
    float32 rounding, including rows with no peer (``out_proj.bias``)."""
    from torch.nn import functional as F

    from algorithms.policy import _PeerAttention

    torch.manual_seed(0)
    h, heads = 64, 4
    attn, last = _PeerAttention(h, heads), nn.Linear(h, h)
    with torch.no_grad():
        attn.in_proj_bias.normal_()
        attn.out_proj.bias.normal_()
    q, hp = torch.randn(50, h), torch.randn(50, 3, h)
    pad = torch.rand(50, 3) < 0.3
    pad[:5] = True  # rows with no peer at all

    def batched(q, hp, pad):
        M, d = len(q), h // heads
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        b_q, _, b_v = attn.in_proj_bias.chunk(3)
        query = F.linear(q, w_q, b_q).view(M, heads, d) * d**-0.5
        qk = torch.einsum("mhd,hde->mhe", query, w_k.view(heads, d, h) @ last.weight)
        scores = torch.einsum("mhe,mpe->mhp", qk, hp)
        att = scores.masked_fill(pad[:, None, :], -1e30).softmax(-1) * (~pad)[:, None, :]
        mixed = torch.einsum("mhp,mpe->mhe", att, hp)
        out = torch.einsum("mhe,hde->mhd", mixed, w_v.view(heads, d, h) @ last.weight)
        out = out + att.sum(-1, keepdim=True) * (w_v @ last.bias + b_v).view(heads, d)
        return attn.out_proj(out.reshape(M, h))

    with torch.no_grad():
        got, expected = attn(q, hp, last, pad), batched(q, hp, pad)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(got[:5], attn.out_proj.bias.expand(5, -1))


def test_distinct_rows_give_every_rows_logits_and_gradients():
    """`DistinctRows` runs the network once per distinct row: the logits of any subset of
    rows are those of the plain forward, and the gradients of a loss on them agree."""
    from algorithms.common import DistinctRows

    cfg = PolicyConfig()
    policy = MetaPolicy(cfg)
    obs, mask, _ = _batch(cfg, 3, rows=40)
    # Repeats, as the G rollouts of a group start alike: rows 40.. copy rows 0..19 twice.
    obs = torch.cat([obs, obs[:20], obs[:20]])
    mask = torch.cat([mask, mask[:20], mask[:20]])
    distinct = DistinctRows.of(obs, mask)
    assert len(distinct.obs) == 40
    assert torch.equal(distinct.obs[distinct.index], obs)
    assert torch.equal(distinct.masks[distinct.index], mask)
    rows = torch.tensor([75, 3, 41, 41, 0, 12, 63])
    weights = torch.randn(len(rows), 3, 3)
    grads = []
    for logits in (lambda: policy(obs[rows], mask[rows]), lambda: distinct.logits(policy, rows)):
        policy.zero_grad()
        out = logits()
        (out.log_softmax(-1) * weights).sum().backward()
        grads.append([None if p.grad is None else p.grad.clone() for p in policy.parameters()])
        with torch.no_grad():
            assert torch.allclose(out, policy(obs[rows], mask[rows]), atol=1e-6, rtol=1e-5)
    for g_plain, g_distinct in zip(*grads):
        assert (g_plain is None) == (g_distinct is None)
        if g_plain is not None:
            assert torch.allclose(g_plain, g_distinct, atol=1e-6, rtol=1e-4)
    with torch.no_grad():
        assert torch.allclose(distinct.reference_logits(policy), policy(obs, mask), atol=1e-6)


def test_rollout_logits_run_once_per_distinct_row():
    """The rollout's forward (`algorithms.rollout.policy_logits`, the network run once per
    distinct (obs, mask) row: a group's rollouts share their first round) gives the plain
    forward's logits."""
    from algorithms.rollout import policy_logits

    cfg = PolicyConfig()
    policy = MetaPolicy(cfg)
    obs, mask, _ = _batch(cfg, 3, rows=24)
    obs, mask = obs.repeat_interleave(4, 0), mask.repeat_interleave(4, 0)  # groups of 4
    with torch.no_grad():
        expected = policy(obs, mask)
        got = policy_logits(policy, obs.numpy(), mask.numpy())
        unique = policy_logits(policy, obs[::4].numpy(), mask[::4].numpy())  # no repeats
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)
    assert torch.allclose(unique, expected[::4], atol=1e-6, rtol=1e-5)
