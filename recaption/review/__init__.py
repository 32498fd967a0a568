"""Human in the loop: audit sampling (and the review page, Label Studio round trip, rounds)."""
