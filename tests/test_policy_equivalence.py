"""`MetaPolicy` against its previous implementation (``nn.MultiheadAttention`` over the
encoded peer slots), kept here privately: on the same weights the logits and values agree
to 1e-5, and seeded construction draws the same weights as before."""

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
        nn.init.orthogonal_(self.head[-1].weight, gain=0.01)
        nn.init.zeros_(self.head[-1].bias)
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
        logits = parts[0] if len(parts) == 1 else torch.stack(parts, dim=-2)
        return logits.masked_fill(mask < 0.5, -1e9)

    def value(self, obs, state=None):
        out = []
        for idx, t, f in self._feats(obs):
            if self.config.critic_state_size:
                glob = state[..., None, :].expand(*obs.shape[:-2], obs.shape[-2], state.shape[-1])
                glob = glob if idx == slice(None) else glob[..., idx, :]
                f = torch.cat([glob, f], dim=-1)
            out.append(t.value(f)[..., 0])
        return out[0] if len(out) == 1 else torch.stack(out, dim=-1)


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
