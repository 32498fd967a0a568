"""Training the alt-text re-aligning captioner: config, data, loop."""
