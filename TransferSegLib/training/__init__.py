"""From a base model to a fine-tuned one: networks, transfer strategies, losses, sampling, the training loop."""
