"""The backends that play the agents of `deliberation_env`, and what they share.

- `agents.simulated`: `SimulatedBackend`, the default, a calibrated statistical model;
  its parameters in `agents.profiles`, fitted from recorded runs by `agents.fit`
  (`agents.fit_refine` for the REFINE rates) on records from `agents.records`.
- `agents.hf`: `HFBackend`, a local Hugging Face model (`agents.hf_generation`: seeded,
  batched generation and log-prob confidence).
- `agents.openai_compat`: `OpenAIBackend`, any OpenAI-compatible server
  (`agents.openai_transport`: HTTP, retries, load balancing; `agents.openai_replies`:
  replies into solutions).
- Shared by the text backends: `agents.prompts`, `agents.parsing`, `agents.text_backend`,
  and the response cache `agents.cache`.
"""
