"""Train a character-level GPT on tiny-shakespeare (arrives with the training issue)."""

raise SystemExit("train_char.py: the training loop is not written yet (see the training issue)")
