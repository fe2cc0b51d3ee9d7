"""Training with Lightning (the only layer that imports it): `audiollm fit` recipes and their modules."""
