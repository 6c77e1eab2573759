"""Meta-policies: the `Policy` protocol every method implements, and `MetaPolicy`, the
learned network (per-agent encoder, cross-attention over peers, three masked logits);
`sample` and `use_generator` let trainers draw actions and initial weights from a
``torch.Generator`` of their own.

The network follows MPDF (arXiv 2509.03817): the agent's own state is the attention
query and its peers' states are keys and values. Parameters are shared across agents
with an agent-index embedding by default, or one network per agent. The attention is
written out (`_PeerAttention`): the peer encoder's last layer folded into the key and
value projections (one matrix product for both), the per-head scores and mixes over the few
peer slots as elementwise products, and peer slots empty in every row skipped; the query
projection shares one matrix product with the heads' own-state halves, and ``out_proj`` is
folded into the heads (`_Trunk.outputs`). The same outputs as the previous
``nn.MultiheadAttention`` forward on the same weights, within float rounding
(tests/test_policy_equivalence.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from deliberation_env.observation import ObservationLayout


@runtime_checkable
class Policy(Protocol):
    """Anything that picks meta-actions for a batch of deliberations.

    ``act(obs [B, N, D] float32, action_mask [B, N, 3] int8) -> actions [B, N] int``.
    Optional hooks read by the evaluation harness: ``env_overrides`` (a mapping of
    `EnvConfig` fields the protocol needs, e.g. ``{"num_agents": 1}``) and
    ``bind(env)``, called with the `VectorDeliberationEnv` after each reset (only the
    oracle uses it: it reads the hidden state).
    """

    def act(
        self, obs: np.ndarray, action_mask: np.ndarray, deterministic: bool = False
    ) -> np.ndarray: ...


@dataclass
class PolicyConfig:
    """Architecture of `MetaPolicy`."""

    max_peers: int = 4
    """Peer slots of the observation layout (the env's ``max_peers``)."""
    num_agents: int = 3
    """Agents the index embedding (or the per-agent networks) cover."""
    hidden: int = 64
    """Width of the encoders and the head."""
    heads: int = 4
    """Attention heads of the cross-attention over peers."""
    share_parameters: bool = True
    """One network for all agents with an agent-index embedding (MPDF's default)."""
    value_head: bool = False
    """Add a value head (PPO)."""
    critic_state_size: int = 0
    """If > 0, the value head also reads the global state (MAPPO's centralised critic)."""
    groups: tuple[str, ...] = ()
    """Optional observation groups of the env (``env.layout.groups``, e.g. ``("verifier",)``);
    empty for an env without them (`deliberation_env.observation.GROUPS`)."""

    def __post_init__(self) -> None:
        self.groups = tuple(sorted(self.groups))  # a checkpoint stores a plain list

    @property
    def layout(self) -> ObservationLayout:
        """The observation layout the network reads."""
        return ObservationLayout(self.max_peers, frozenset(self.groups))


class _PeerAttention(nn.Module):
    """Multi-head attention of one query over a few peer slots, written out by hand.

    Holds the parameters of ``nn.MultiheadAttention(hidden, heads)`` under the same names
    and with the same initialisation (so checkpoints and seeded weights carry over), but
    `forward` folds the key and value projections into the query side: with at most
    `max_peers` slots, projecting one query per head costs less than projecting every
    slot. Same maths as the general module, in a cheaper order.
    """

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden={hidden} must be divisible by heads={heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * hidden, hidden))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * hidden))
        self.out_proj = nn.Linear(hidden, hidden)
        # nn.MultiheadAttention._reset_parameters, in its order (the draws of a seed).
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, q: torch.Tensor, hidden_peers: torch.Tensor, peer_out: nn.Linear, pad: torch.Tensor
    ) -> torch.Tensor:
        """Attend from `q` ``[M, H]`` over the peer slots whose keys and values are
        ``peer_out(hidden_peers)`` (`hidden_peers` ``[M, P, H]``: the peer encoder before
        its last linear layer); `pad` ``[M, P]`` marks empty slots. A row with no peer
        attends to nothing and gets ``out_proj.bias``, as ``nn.MultiheadAttention`` gives
        a fully padded row."""
        w_q, _, _ = self.in_proj_weight.chunk(3)
        b_q, _, _ = self.in_proj_bias.chunk(3)
        query = F.linear(q, w_q, b_q) * (q.shape[-1] // self.heads) ** -0.5
        mixed = self.mix(query, hidden_peers, peer_out, pad)
        return F.linear(mixed, self.out_proj.weight, self.out_proj.bias)

    def mix(
        self,
        query: torch.Tensor,
        hidden_peers: torch.Tensor,
        peer_out: nn.Linear,
        pad: torch.Tensor,
    ) -> torch.Tensor:
        """The heads' outputs ``[M, H]`` before ``out_proj``, given the scaled query
        ``(W_q q + b_q) / sqrt(d)`` (`forward`; `_Trunk` computes it in one matrix
        product with the head's own-state half)."""
        M, P, h = hidden_peers.shape
        H, d = self.heads, h // self.heads
        w_v, b_v = self.in_proj_weight[2 * h :], self.in_proj_bias[2 * h :]
        w2, b2 = peer_out.weight, peer_out.bias  # the key bias shifts every score alike
        # Keys and values of every slot in one matrix product with the peer encoder's last
        # layer folded in: W_k W2 t_j (its b2 term is the same for every slot, so it
        # cancels in the softmax) and W_v W2 t_j (+ W_v b2 + b_v below). Per head, the
        # scores and the mix over the few slots are elementwise products and sums: cheaper
        # than batched matrix products of a handful of rows each.
        kv = F.linear(hidden_peers, self.in_proj_weight[h:] @ w2)  # [M, P, 2h]
        keys, values = kv.view(M, P, 2, H, d).unbind(2)
        scores = (query.view(M, 1, H, d) * keys).sum(-1)  # [M, P, H]
        keep = (~pad)[:, :, None].to(scores.dtype)
        # -1e30, not -inf: a row with no peer then gets weights 0 rather than NaN.
        att = scores.masked_fill(pad[:, :, None], -1e30).softmax(1) * keep
        out = (att[..., None] * values).sum(1)  # [M, H, d]
        out = out + att.sum(1)[..., None] * torch.addmv(b_v, w_v, b2).view(H, d)
        return out.reshape(M, h)


class _Trunk(nn.Module):
    """Own-state encoder, cross-attention over peers, logits and optional value head."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        layout = cfg.layout
        self.own_size = layout.summary.stop  # own block + peer summary
        self.peer_size = layout.peer_size
        self.peers = layout.peers
        self.max_peers = cfg.max_peers
        h = cfg.hidden
        self.own = nn.Sequential(nn.Linear(self.own_size, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh())
        self.peer = nn.Sequential(nn.Linear(self.peer_size, h), nn.Tanh(), nn.Linear(h, h))
        # Meant as a learned "no peer" key, but the attention has always masked it out (so
        # it gets no gradient); kept so that checkpoints and seeded weights carry over.
        self.null = nn.Parameter(torch.zeros(1, 1, h))
        self.attn = _PeerAttention(h, cfg.heads)
        self.head = nn.Sequential(nn.Linear(2 * h, h), nn.Tanh(), nn.Linear(h, 3))
        logits = self.head[-1]
        assert isinstance(logits, nn.Linear)
        nn.init.orthogonal_(logits.weight, gain=0.01)
        nn.init.zeros_(logits.bias)
        self.value: nn.Module | None = None
        if cfg.value_head:
            # MAPPO's agent-specific global state (Yu et al. 2022): the global state plus
            # this agent's own features, so agents of one env get their own values.
            inp = cfg.critic_state_size + 2 * h
            self.value = nn.Sequential(nn.Linear(inp, h), nn.Tanh(), nn.Linear(h, 1))

    def _encode(
        self, obs: torch.Tensor, agent_embedding: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[M, D] ->`` (own encoding q ``[M, H]``, the peer slots' hidden states
        ``[M, P, H]`` before the peer encoder's last layer, their padding ``[M, P]``)."""
        q = self.own(obs[:, : self.own_size])
        if agent_embedding is not None:
            q = q + agent_embedding
        start, size = self.peers.start, self.peer_size
        pad = obs[:, start : self.peers.stop : size] < 0.5  # each slot's "present" flag
        # Slots empty in every row get attention weight exactly 0: leave them out (with N
        # agents the env fills the first N - 1 of the `max_peers` slots).
        used = (~pad).any(0).tolist()
        slots = max((j + 1 for j, u in enumerate(used) if u), default=1)
        # One contiguous row per slot: a 2-D matrix product (on a strided 3-D view torch
        # runs a batched product with the weight copied per row).
        peers = obs[:, start : start + slots * size].reshape(-1, size)
        first = _linear(self.peer, 0)
        hidden_peers = torch.tanh(first(peers)).view(-1, slots, first.out_features)
        return q, hidden_peers, pad[:, :slots]

    def features(self, obs: torch.Tensor, agent_embedding: torch.Tensor | None) -> torch.Tensor:
        """``[M, D] -> [M, 2H]``: own encoding and attended peer summary (the head's and
        the value head's input; `outputs` computes both without building it)."""
        q, hidden_peers, pad = self._encode(obs, agent_embedding)
        return torch.cat([q, self.attn(q, hidden_peers, _linear(self.peer, 2), pad)], dim=-1)

    def outputs(
        self,
        obs: torch.Tensor,
        agent_embedding: torch.Tensor | None,
        logits: bool = True,
        value: bool = False,
        state_term: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``[M, D] ->`` (logits ``[M, 3]`` or None, values ``[M]`` or None): ``head`` and
        ``value`` on `features`, in fewer matrix products. Between the own encoding q and
        the heads' hidden layers everything is linear but the attention weights, so the
        query projection and the heads' q halves are one product on q, and ``out_proj`` is
        folded into the heads' attended halves (one product on the heads' mixed values).
        `state_term` ``[M, H]`` is the value head's global-state half (MAPPO)."""
        q, hidden_peers, pad = self._encode(obs, agent_embedding)
        attn, h = self.attn, q.shape[-1]
        scale = (h // attn.heads) ** -0.5
        w_o, b_o = attn.out_proj.weight, attn.out_proj.bias
        on_q, b_q, on_mixed = [attn.in_proj_weight[:h] * scale], [attn.in_proj_bias[:h] * scale], []
        # Each head's first layer reads [extra, q, attended]: extra is the global state
        # (value head of a centralised critic; `state_term`), else empty.
        firsts = ([_linear(self.head, 0)] if logits else []) + (
            [_linear(self.value, 0)] if value else []
        )
        for layer in firsts:
            c = layer.in_features - 2 * h
            w_att = layer.weight[:, c + h :]
            on_q.append(layer.weight[:, c : c + h])
            b_q.append(torch.addmv(layer.bias, w_att, b_o))
            on_mixed.append(w_att @ w_o)
        z = F.linear(q, torch.cat(on_q), torch.cat(b_q))  # [M, (1 + heads) H]
        mixed = attn.mix(z[:, :h], hidden_peers, _linear(self.peer, 2), pad)
        pre = torch.addmm(z[:, h:], mixed, torch.cat(on_mixed).T)
        if state_term is not None:
            pre = torch.cat([pre[:, :-h], pre[:, -h:] + state_term], dim=1)
        hidden = pre.tanh_()
        out_logits = _linear(self.head, 2)(hidden[:, :h]) if logits else None
        out_value = _linear(self.value, 2)(hidden[:, -h:])[:, 0] if value else None
        return out_logits, out_value


def _linear(seq: nn.Module | None, i: int) -> nn.Linear:
    """Layer `i` of the `nn.Sequential` `seq` (a typed accessor)."""
    assert isinstance(seq, nn.Sequential)
    layer = seq[i]
    assert isinstance(layer, nn.Linear)
    return layer


class MetaPolicy(nn.Module):
    """The learned meta-policy. Implements `Policy`.

    ``forward(obs [..., N, D], mask [..., N, 3]) -> logits [..., N, 3]`` (masked entries
    at -1e9); ``value(obs, state=None) -> [..., N]`` when built with a value head.
    """

    def __init__(self, config: PolicyConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.config = config or PolicyConfig(**kwargs)
        cfg = self.config
        n_nets = 1 if cfg.share_parameters else cfg.num_agents
        self.trunks = nn.ModuleList(_Trunk(cfg) for _ in range(n_nets))
        self.agent_embedding = (
            nn.Embedding(cfg.num_agents, cfg.hidden) if cfg.share_parameters else None
        )
        self.env_overrides: Mapping[str, Any] = {}

    def _trunk(self, i: int) -> _Trunk:
        trunk = self.trunks[i]
        assert isinstance(trunk, _Trunk)
        return trunk

    def _per_agent(
        self, obs: torch.Tensor
    ) -> Iterator[tuple[int | slice, _Trunk, torch.Tensor, torch.Tensor | None]]:
        """Yield (agent slice, trunk, its rows ``[M, D]``, agent embedding ``[M, H]`` or
        None) over the agent axis (-2)."""
        N, D = obs.shape[-2:]
        if N > self.config.num_agents:
            raise ValueError(
                f"observations have {N} agents but the policy was built for "
                f"num_agents={self.config.num_agents}"
            )
        flat = obs.reshape(-1, N, D)
        if self.agent_embedding is not None:  # shared parameters
            emb = (
                self.agent_embedding.weight[:N]
                .expand(flat.shape[0], N, -1)
                .reshape(-1, self.config.hidden)
            )
            yield slice(None), self._trunk(0), flat.reshape(-1, D), emb
        else:
            for i in range(N):
                yield i, self._trunk(i), flat[:, i], None

    def forward(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits_and_value(obs, mask, value=False)[0]

    def value(self, obs: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """State values ``[..., N]`` (per-agent features, or the global state for MAPPO)."""
        return self.logits_and_value(obs, None, state, logits=False)[1]

    def logits_and_value(
        self,
        obs: torch.Tensor,
        mask: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        logits: bool = True,
        value: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(self(obs, mask), self.value(obs, state))`` with the trunk run once (PPO's
        minibatch step needs both); with ``logits=False`` (``value=False``) the first
        (second) is left empty."""
        if value and not self.config.value_head:
            raise RuntimeError("this policy has no value head: build it with value_head=True")
        lead, N = obs.shape[:-2], obs.shape[-2]
        heads, values = [], []
        for idx, trunk, rows, emb in self._per_agent(obs):
            state_term = None
            if value and self.config.critic_state_size:
                if state is None:
                    raise ValueError("this critic is centralised: pass the global state")
                first = _linear(trunk.value, 0)
                # The global state's half of the value head's first layer, once per state
                # row (the N agents of an env share it).
                term = F.linear(state, first.weight[:, : self.config.critic_state_size])
                term = term.reshape(-1, 1, term.shape[-1])
                if idx == slice(None):
                    term = term.expand(-1, N, -1)
                state_term = term.reshape(rows.shape[0], -1)
            out, v = trunk.outputs(rows, emb, logits, value, state_term)
            heads.append(out)
            values.append(v)
        shared = self.agent_embedding is not None
        if value:
            vals = [v for v in values if v is not None]
            out_value = (
                vals[0].reshape(*lead, N)
                if shared
                else torch.stack([v.reshape(lead) for v in vals], dim=-1)
            )
        else:
            out_value = obs.new_empty(0)
        if not logits:
            return obs.new_empty(0), out_value
        parts = [p for p in heads if p is not None]
        out = (
            parts[0].reshape(*lead, N, 3)
            if shared
            else torch.stack([p.reshape(*lead, 3) for p in parts], dim=-2)
        )
        if mask is not None:
            out = out.masked_fill(mask < 0.5, -1e9)
        return out, out_value

    def distribution(
        self, obs: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self(obs, mask))

    @torch.no_grad()
    def act(
        self,
        obs: np.ndarray,
        action_mask: np.ndarray,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """Actions ``[B, N]``: the most likely ones, or samples drawn from `generator`
        (None: torch's global generator)."""
        logits = self(
            torch.as_tensor(np.asarray(obs), dtype=torch.float32), torch.as_tensor(action_mask)
        )
        if deterministic:
            return logits.argmax(-1).numpy()
        return sample(torch.distributions.Categorical(logits=logits), generator).numpy()

    def save(self, path: str | Path, **extra: Any) -> None:
        """Write the config and weights (and any `extra` metadata) to `path`."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": asdict(self.config), "state_dict": self.state_dict(), **extra}, path)

    @classmethod
    def load(cls, path: str | Path) -> MetaPolicy:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except FileNotFoundError:
            raise
        except Exception as err:  # torch reports a damaged file without naming it
            raise ValueError(
                f"{path} cannot be read as a MetaPolicy file ({type(err).__name__}: {err}); "
                "it is damaged or not a policy saved by MetaPolicy.save"
            ) from err
        if not isinstance(payload, dict) or "config" not in payload:
            raise ValueError(f"{path} is not a MetaPolicy checkpoint (no 'config' entry)")
        try:
            policy = cls(PolicyConfig(**payload["config"]))
            policy.load_state_dict(payload["state_dict"])
        except (KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"{path} holds a policy this version cannot load: {err}") from err
        return policy


def sample(
    dist: torch.distributions.Categorical, generator: torch.Generator | None
) -> torch.Tensor:
    """One draw of `dist` from `generator` (None: torch's global generator): the same
    numbers as ``dist.sample()``, which calls ``torch.multinomial`` in this way."""
    probs = dist.probs.reshape(-1, dist.probs.shape[-1])
    return torch.multinomial(probs, 1, True, generator=generator).T.reshape(dist.batch_shape)


@contextmanager
def use_generator(generator: torch.Generator) -> Iterator[None]:
    """Inside the block torch's global generator plays `generator`: its state is copied
    in, and copied back out at the end (so `generator` advances by what the block drew);
    the global generator is restored afterwards. For code that takes no generator
    argument, such as module constructors drawing initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(generator.get_state())
        yield
        generator.set_state(torch.get_rng_state())


def with_value_head(
    policy: MetaPolicy, critic_state_size: int = 0, generator: torch.Generator | None = None
) -> MetaPolicy:
    """`policy` itself if it has the value head PPO needs, else a copy with a fresh one
    whose weights come from `generator` (None: torch's global generator); an SFT policy
    keeps its actor weights."""
    c = policy.config
    if c.value_head and c.critic_state_size == critic_state_size:
        return policy
    config = replace(c, value_head=True, critic_state_size=critic_state_size)
    if generator is None:
        out = MetaPolicy(config)
    else:
        with use_generator(generator):
            out = MetaPolicy(config)
    actor = {k: v for k, v in policy.state_dict().items() if ".value." not in k}
    missing, unexpected = out.load_state_dict(actor, strict=False)
    if unexpected or any(".value." not in k for k in missing):
        raise ValueError(f"cannot add a value head to {policy!r}: mismatched weights")
    return out
