"""The OpenAI-compatible `/v1` endpoints: a team's fine-tuned and base models served by the `infer` workers."""
