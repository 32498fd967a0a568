"""Model adapters: one module per model family, loaded by the stages that use them."""
