"""Text tools that stages share: the alt-text cleaning rules, CLIP token counting and fitting."""
