"""Batch column names, in one place (RLlib's `core/columns.py` habit).

A training batch has one row per packed episode (policies/packer.py), padded to the longest
row: token columns are (B, L), block chains (B, K, K), per-episode scalars (B,).
"""

# token columns (B, L)
INPUT_IDS = "input_ids"
POSITION_IDS = "position_ids"
BLOCK_IDS = "block_ids"
LOSS_MASK = "loss_mask"
LOGIT_INDEX = "logit_index"
SAMPLE_LOGP = "sample_logp"  # the sampler's log-probs (behaviour policy, its numerics)
TURN_IDS = "turn_ids"
EPISODE_IDS = "episode_ids"  # rows of a packed group (packer.pack_group): each loss token's episode, -1 elsewhere
TOKEN_REWARDS = "token_rewards"  # each turn's reward on its last generated token
ADVANTAGES = "advantages"  # GRPO: set by the driver; PPO: computed by the learner (GAE)

# (B, K, K)
CHAINS = "chains"

# per episode (B,)
EPISODE_RETURNS = "episode_returns"
GROUP_IDS = "group_ids"
NUM_TOKENS = "num_tokens"  # real (unpadded) length of the row

# computed inside the learner before the first gradient step (never shipped)
OLD_LOGP = "old_logp"
REF_LOGP = "ref_logp"
OLD_VALUES = "old_values"
RETURNS = "returns"

TOKEN_COLUMNS = (INPUT_IDS, POSITION_IDS, BLOCK_IDS, LOSS_MASK, LOGIT_INDEX, SAMPLE_LOGP, TURN_IDS, TOKEN_REWARDS, ADVANTAGES)
