"""What a researcher runs, and the glue between agent and world: the batched rollout loop,
validated configs, evaluation, RL training on RLlib, MLflow tracking, reports, the CLI."""
