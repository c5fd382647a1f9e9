"""Noise schedule and samplers (small pure functions over an ``eps_fn(x, t)``)."""
